"""Prepared shards: the same pairs and ids as the in-memory NMTDataset, rebuilt when stale, a one-line error when
damaged, and training on them bitwise equal to training in memory (resume included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_module, write_config, write_corpus
from conftest import write_toy_tsv

from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset
from torchlingo.data_processing.prepare import open_or_prepare, prepare_shards
from torchlingo.data_processing.shards import (
    ShardedDataset,
    corpus_fingerprint,
    stale_reason,
)
from torchlingo.errors import DataError


def _corpus(tmp_path, parallel: bool):
    """A toy corpus with bad lines (an empty line, a wrong column count or an empty side) and some long pairs."""
    tsv = write_toy_tsv(tmp_path / "c" / "train.tsv", 300, seed=4)
    lines = tsv.read_text(encoding="utf-8").splitlines()
    lines[10], lines[20] = "", "only one column"
    lines.append("a very long source sentence with many many many words in it\tuna frase")
    if not parallel:
        tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(tsv), {}
    src = [line.split("\t")[0] for line in lines[1:]]
    tgt = [(line.split("\t") + [""])[1] for line in lines[1:]]
    (tmp_path / "c" / "train.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "c" / "train.es").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return str(tmp_path / "c" / "train"), {"src_lang": "en", "tgt_lang": "es"}


def _assert_same(ds: NMTDataset, sh: ShardedDataset) -> None:
    assert len(ds) == len(sh)
    assert np.array_equal(ds.src_lengths.numpy(), sh.src_lengths)
    assert np.array_equal(ds.tgt_lengths.numpy(), sh.tgt_lengths)
    for i in range(len(ds)):
        (a, b), (c, d) = ds[i], sh[i]
        assert c.dtype == d.dtype == torch.long
        assert torch.equal(a, c) and torch.equal(b, d), i
    assert ds.fingerprint == sh.fingerprint
    assert ds.skipped == sh.skipped


@pytest.mark.parametrize("tokenizer", ["word", "sentencepiece"])
@pytest.mark.parametrize("parallel", [False, True])
def test_round_trip_equals_in_memory_dataset(tmp_path, tokenizer, parallel):
    train, langs = _corpus(tmp_path, parallel)
    config = Config(train_file=train, tokenizer=tokenizer, vocab_size=60, max_len=7, bad_lines="skip", **langs)
    ds = NMTDataset(train, config=config, max_len=config.train_max_len)
    assert ds.skipped  # bad lines and long pairs were left out
    manifest = prepare_shards(config, tmp_path / "shards", workers=1)
    sh = ShardedDataset(tmp_path / "shards", config)
    _assert_same(ds, sh)
    assert manifest["dtype"] == "uint16" and manifest["pairs"] == len(ds)
    assert [v.to_state() for v in (sh.src_vocab, sh.tgt_vocab)] == [v.to_state() for v in (ds.src_vocab, ds.tgt_vocab)]


@pytest.mark.parametrize("tokenizer, parallel", [("sentencepiece", False), ("word", True)])
def test_workers_write_the_same_files(tmp_path, tokenizer, parallel):
    """The corpus is cut into parts (several here) read by the workers: 1 and 2 workers write the same bytes, bad
    lines and long pairs skipped included."""
    train, langs = _corpus(tmp_path, parallel)
    config = Config(train_file=train, tokenizer=tokenizer, vocab_size=60, max_len=7, bad_lines="skip", **langs)
    import torchlingo.data_processing.prepare as prepare

    old, prepare.CHUNK_PAIRS = prepare.CHUNK_PAIRS, 37  # several parts
    try:
        one = prepare_shards(config, tmp_path / "one", workers=1)
        prepare_shards(config, tmp_path / "two", workers=2)
    finally:
        prepare.CHUNK_PAIRS = old
    assert one["skipped"] == NMTDataset(train, config=config, max_len=7).skipped and len(one["skipped"]) >= 3
    names = ("src.bin", "tgt.bin", "src.off.npy", "tgt.len.npy") + tuple(one["tokenizer_files"])
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two")]
    one_worker, two_workers = ({k: v for k, v in m.items() if k != "seconds"} for m in manifests)  # times differ
    assert one_worker == two_workers


def test_sample_drawn_in_parts_is_the_streamed_reservoir(tmp_path):
    """The SentencePiece sample, drawn from counted parts, is the one Algorithm R draws from the streamed pairs."""
    import random

    import torchlingo.data_processing.prepare as prepare
    from torchlingo.data_processing.dataset import _LineChecker, iter_pairs

    train, _ = _corpus(tmp_path, False)
    config = Config(train_file=train, bad_lines="skip")
    k, rng, expected = 50, random.Random(7), []
    for seen, (_, s, t) in enumerate(iter_pairs(Path(train), _LineChecker("skip"), []), start=1):
        if len(expected) < k:
            expected.append((s, t))
        elif (j := rng.randrange(seen)) < k:
            expected[j] = (s, t)
        total = seen
    old, prepare.CHUNK_PAIRS = prepare.CHUNK_PAIRS, 37
    try:
        for workers in (1, 2):
            sample, seen = prepare._sample(prepare._Corpus(Path(train), config, workers), k, 7)
            assert sample == expected and seen == total == 299, workers
    finally:
        prepare.CHUNK_PAIRS = old


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_line_error_is_the_in_memory_one(tmp_path, workers):
    train, _ = _corpus(tmp_path, False)
    config = Config(train_file=train, tokenizer="word")
    with pytest.raises(DataError) as memory:
        NMTDataset(train, config=config)
    with pytest.raises(DataError) as prepared:
        prepare_shards(config, tmp_path / "shards", workers=workers)
    assert str(prepared.value) == str(memory.value) and ":11:" in str(memory.value)


def test_stale_shards_are_rebuilt(tmp_path, torchlingo_logs):
    train = write_toy_tsv(tmp_path / "train.tsv", 50, seed=0)
    config = Config(train_file=str(train), tokenizer="word", data_dir=str(tmp_path / "shards"))
    first = open_or_prepare(config)
    assert stale_reason(tmp_path / "shards", config, corpus_fingerprint(config)) is None
    mtime = (tmp_path / "shards" / "src.bin").stat().st_mtime_ns
    open_or_prepare(config)  # fresh: reused, not written again
    assert (tmp_path / "shards" / "src.bin").stat().st_mtime_ns == mtime
    assert "reusing" in torchlingo_logs.text

    write_toy_tsv(train, 70, seed=1)  # the corpus changed
    assert stale_reason(tmp_path / "shards", config, corpus_fingerprint(config)) == "the corpus changed"
    second = open_or_prepare(config)
    assert len(second) == 70 != len(first)
    _assert_same(NMTDataset(train, config=config, max_len=config.train_max_len), second)

    shorter = config.replace(max_len=4)  # the settings changed
    assert "max_len" in stale_reason(tmp_path / "shards", shorter, corpus_fingerprint(shorter))
    _assert_same(NMTDataset(train, config=shorter, max_len=4), open_or_prepare(shorter))

    other = open_or_prepare(shorter, vocabs=(second.src_vocab, second.src_vocab))  # other tokenizers
    assert other.tgt_vocab.to_state() == second.src_vocab.to_state()


def test_a_fresh_corpus_is_not_read_again_when_its_stat_is_unchanged(tmp_path, monkeypatch):
    """Start-up: a file whose name, size and mtime_ns the manifest recorded is trusted, as git trusts its index;
    any change of its stat (an edit, even of the same size; a touch) makes it be read and hashed again."""
    import os

    from torchlingo.data_processing import shards

    train = write_toy_tsv(tmp_path / "train.tsv", 50, seed=0)
    config = Config(train_file=str(train), tokenizer="word", data_dir=str(tmp_path / "shards"))
    open_or_prepare(config)  # the file was written just now: too recent to trust its mtime ("racy git")
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text())["corpus"][0]["mtime_ns"] is None
    hour_ago = train.stat().st_mtime_ns - 3600 * 10**9
    os.utime(train, ns=(hour_ago, hour_ago))
    prepare_shards(config, tmp_path / "shards")  # prepared again (as by prepare --force): now the mtime is recorded
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["corpus"][0]["mtime_ns"] == hour_ago
    read: list[str] = []
    real_scan_all = shards.scan_all
    monkeypatch.setattr(shards, "scan_all", lambda paths: read.extend(p.name for p, _ in paths) or real_scan_all(paths))
    assert open_or_prepare(config).fingerprint == NMTDataset(train, config=config).fingerprint
    assert read == []  # not read: the recorded fingerprint, without its mtime_ns, is the dataset's

    os.utime(train, ns=(train.stat().st_atime_ns, train.stat().st_mtime_ns + 10**9))  # touched, same bytes
    assert stale_reason(tmp_path / "shards", config, corpus_fingerprint(config, manifest["corpus"])) is None
    assert read == ["train.tsv"]  # read again, found equal: the shards still fit

    text = train.read_bytes()
    train.write_bytes(text.replace(b"a", b"b", 1) if b"a" in text else text[::-1])  # same size, other content
    assert train.stat().st_size == len(text)
    assert stale_reason(tmp_path / "shards", config, corpus_fingerprint(config, manifest["corpus"])) == (
        "the corpus changed"
    )


@pytest.mark.parametrize(
    "damage, name",
    [
        ("truncate", "src.bin"),
        ("truncate", "tgt.len.npy"),
        ("garbage", "manifest.json"),
        ("delete", "tgt.off.npy"),
        ("append", "tgt.bin"),
    ],
)
def test_damaged_shard_is_a_one_line_error_naming_the_file(tmp_path, damage, name):
    train = write_toy_tsv(tmp_path / "train.tsv", 40, seed=0)
    config = Config(train_file=str(train), tokenizer="word")
    prepare_shards(config, tmp_path / "shards")
    path = tmp_path / "shards" / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 5])
    elif damage == "garbage":
        path.write_text("{not json", encoding="utf-8")
    elif damage == "append":
        path.write_bytes(data + b"\0\0")
    else:
        path.unlink()
    with pytest.raises(DataError) as e:
        ShardedDataset(tmp_path / "shards", config)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_manifest_records_what_decides_the_ids(tmp_path, torchlingo_logs):
    train = write_toy_tsv(tmp_path / "train.tsv", 40, seed=0)
    config = Config(train_file=str(train), tokenizer="word", max_len=5, bad_lines="skip")
    prepare_shards(config, tmp_path / "shards")
    phases = json.loads((tmp_path / "shards" / "manifest.json").read_text())["seconds"]
    assert list(phases) == ["scan", "tokenizer", "encode", "index"] and all(t >= 0 for t in phases.values())
    assert (
        "pairs prepared (" in torchlingo_logs.text
        and f"(scan {phases['scan']:.1f} s, tokenizer" in torchlingo_logs.text
    )
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == 1 and manifest["corpus"][0]["lines"] == 41
    assert manifest["settings"]["max_len"] == 5 and manifest["settings"]["tokenizer"] == "word"
    assert manifest["pairs"] + sum(manifest["skipped"].values()) == manifest["read_pairs"] == 40


def _final_weights(run_dir):
    from torchlingo.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def test_training_on_shards_equals_in_memory_and_resumes_exactly(tmp_path):
    """Same seed, one thread, amp none: the run on shards ends bitwise equal to the in-memory run; a run on shards
    stopped after 5 steps and resumed ends equal too."""
    write_corpus(tmp_path)
    common = {"scheduler_type": "none", "use_tensorboard": False}
    memory = write_config(tmp_path, "memory", **common)
    shards = write_config(tmp_path, "shards", prepared_data="auto", **common)
    resumed = write_config(tmp_path, "resumed", prepared_data="auto", **common)
    for config in (memory, shards):
        assert run_module("train", str(config)).returncode == 0
    prepare = run_module("prepare", str(resumed), "--workers", "2")
    assert prepare.returncode == 0 and "pairs" in prepare.stdout, prepare.stderr
    assert run_module("train", str(resumed), "--set", "max_steps=5").returncode == 0
    done = run_module("train", str(resumed), "--resume")
    assert done.returncode == 0, done.stderr
    assert "reusing the prepared shards" in done.stderr
    ref = _final_weights(tmp_path / "runs" / "memory")
    assert (tmp_path / "runs" / "shards" / "data" / "manifest.json").is_file()
    for name in ("shards", "resumed"):
        got = _final_weights(tmp_path / "runs" / name)
        assert got["position"] == ref["position"], name
        for key, value in ref["model"].items():
            assert torch.equal(got["model"][key], value), (name, key)
        assert got["run_info"]["corpus"] == ref["run_info"]["corpus"]


def test_sentencepiece_trains_on_a_bounded_seeded_sample(tmp_path):
    """More pairs than sp_sample_size: the tokenizer is trained on a seeded sample (the same one for the same seed),
    the manifest records the seed, and another seed makes the shards stale."""
    train = write_toy_tsv(tmp_path / "train.tsv", 700, seed=0)
    config = Config(train_file=str(train), vocab_size=40, sp_sample_size=1000, seed=1)  # joint: 500 pairs
    a = prepare_shards(config, tmp_path / "a")
    b = prepare_shards(config, tmp_path / "b")
    assert a["sample_seed"] == 1 and a["tokenizers"] == b["tokenizers"] and a["pairs"] == 700
    assert (tmp_path / "a" / "src.bin").read_bytes() == (tmp_path / "b" / "src.bin").read_bytes()
    assert "seed" in stale_reason(tmp_path / "a", config.replace(seed=2), corpus_fingerprint(config))


def test_prepare_command_reports_up_to_date(tmp_path):
    write_corpus(tmp_path)
    config = write_config(tmp_path, "p", data_dir=str(tmp_path / "shared"))
    first = run_module("prepare", str(config))
    assert first.returncode == 0 and "prepared (no shards yet)" in first.stdout, first.stderr
    again = run_module("prepare", str(config))
    assert again.returncode == 0 and "up to date" in again.stdout
    (tmp_path / "shared" / "src.bin").write_bytes(b"\0")
    broken = run_module("train", str(config), "--set", "prepared_data=auto")
    assert broken.returncode == 2 and str(tmp_path / "shared" / "src.bin") in broken.stderr
    assert len(broken.stderr.strip().splitlines()[-1:]) == 1


def test_scan_cuts_files_at_line_starts(tmp_path, monkeypatch):
    """scan's fingerprint is LineReader's, and the spans it cuts (blocks smaller than lines here) read the same
    lines, with or without a final newline or a byte-order mark."""
    import torchlingo.data_processing.textfile as textfile

    monkeypatch.setattr(textfile, "BLOCK", 5)
    for data in (b"", b"a\n", b"\xef\xbb\xbfab\n\ncd\r\nefg", b"x\n" * 9, b"one\ntwo\nthree\n\nfour"):
        path = tmp_path / "f.txt"
        path.write_bytes(data)
        for every in (1, 2, 3, 4):
            reader = textfile.LineReader(path)
            lines = list(reader)
            fingerprint, cuts = textfile.scan(path, every)
            assert fingerprint == reader.fingerprint()
            spans = [(a, b, i * every) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
            parts = [list(textfile.LineReader(path, span)) for span in spans]
            assert [line for part in parts for line in part] == lines and cuts[-1] == len(data)


def test_prepare_refuses_a_pipe(tmp_path):
    import os

    fifo = tmp_path / "train.tsv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        prepare_shards(Config(train_file=str(fifo), tokenizer="word"), tmp_path / "shards")
