"""`translate` / `evaluate --engine ctranslate2 --model DIR`: an exported folder decodes through the same CLI, with
the checkpoint's tokenizer and decoding settings (torchlingo.json), as torchlingo does (skipped without ctranslate2)."""

import json
import shutil
import sys

import pytest
from cli_helpers import one_error_line, write_config, write_corpus

from torchlingo.cli import _translator, build_parser, main

try:
    import ctranslate2
except ImportError:
    ctranslate2 = None
pytestmark = pytest.mark.skipif(ctranslate2 is None, reason="ctranslate2 is not installed (optional extra)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(root, checkpoint, export folder, source file) of a small model trained to translate the toy corpus."""
    root = write_corpus(tmp_path_factory.mktemp("ct2engine"))
    config = write_config(root, "ct2", num_epochs=40, d_model=32, d_ff=64, scheduler_type="none", warmup_steps=0)
    assert main(["train", str(config)]) == 0
    ckpt = root / "runs" / "ct2" / "checkpoints" / "best.pt"
    out = root / "ct2_model"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "ctranslate2", "--output", str(out)]) == 0
    lines = {name: (root / "data" / f"{name}.tsv").read_text().splitlines()[1:] for name in ("train", "test")}
    src = root / "sources.txt"  # train's 64 sources, an empty line (an empty translation), test's 10
    sources = [ln.split("\t")[0] for ln in lines["train"]] + [""] + [ln.split("\t")[0] for ln in lines["test"]]
    src.write_text("\n".join(sources) + "\n")
    return root, ckpt, out, src


def translate(tmp_path, name, *argv) -> list[str]:
    out = tmp_path / f"{name}.txt"
    assert main(["translate", *argv, "--output", str(out)]) == 0
    return out.read_text().splitlines()


def test_export_writes_torchlingo_json(exported):
    _, _, out, _ = exported
    meta = json.loads((out / "torchlingo.json").read_text())
    assert meta["format_version"] == 1 and meta["max_positions"] > 0
    assert meta["tokenizer"] == {"kind": "word", "source": "source_tokenizer.txt", "target": "target_tokenizer.txt"}
    assert meta["decoding"]["beam_size"] == 2 and meta["decoding"]["max_len_b"] == 5  # the run's config
    assert not list(out.glob(".*.tmp"))  # written atomically


def test_translate_with_ctranslate2_equals_torchlingo_greedy(exported, tmp_path, capsys):
    _, ckpt, out, src = exported
    ours = translate(tmp_path, "ours", "--checkpoint", str(ckpt), "--beam-size", "1", "--input", str(src), "--scores")
    ct2 = translate(tmp_path, "ct2", "--engine", "ctranslate2", "--model", str(out), "--beam-size", "1", "--input",
                    str(src), "--scores", "--max-tokens", "40", "--parallel-batches", "2")  # fmt: skip
    assert len(ct2) == len(ours) == 75 and ct2[64] == ours[64] == f"{0.0:.6f}\t"  # the empty line: empty
    texts = [(a.split("\t")[1], b.split("\t")[1]) for a, b in zip(ours, ct2)]
    same = sum(a == b for a, b in texts)
    assert same >= 0.99 * len(ours), (same, len(ours))
    assert len({a for a, _ in texts}) > len(texts) // 2  # the model translates: its outputs differ
    # --scores: torchlingo's score (log-probability over the GNMT penalty), to float precision where the hypothesis
    # ended with </s>. One cut at its length limit (looping ones) is rescored by score_batch, whose softmax also
    # spreads mass over <pad> and <s> (label smoothing gives them some): a little lower, never by much.
    sources = src.read_text().splitlines()
    limits = [int(1.5 * (len(s.split()) + 2) + 5) for s in sources]  # the test config's max_len_a / max_len_b
    cut = [len(a.split("\t")[1].split()) == n for a, n in zip(ours, limits)]
    diffs = [float(a.split("\t")[0]) - float(b.split("\t")[0]) for a, b in zip(ours, ct2)]
    assert max(abs(d) for d, c in zip(diffs, cut) if not c) < 1e-3, diffs
    assert all(0 <= d < 0.5 for d, c in zip(diffs, cut) if c) and sum(cut) < len(cut) // 2, (diffs, cut)
    assert float(ct2[0].split("\t")[0]) < 0
    # The export's own defaults (beam 2 from the run's config) and int8 weights decode too, a TSV input as well.
    tsv = exported[0] / "data" / "test.tsv"
    beam = translate(tmp_path, "beam", "--engine", "ctranslate2", "--model", str(out), "--input", str(tsv))
    int8 = translate(tmp_path, "int8", "--engine", "ctranslate2", "--model", str(out), "--input", str(tsv),
                     "--compute-type", "int8", "--beam-size", "1")  # fmt: skip
    assert len(beam) == len(int8) == len(tsv.read_text().splitlines()) - 1
    assert sum(a == b for a, (_, b) in zip(int8, texts[65:])) >= len(int8) // 2  # test.tsv: after the empty line


def test_n_best_with_ctranslate2(exported, tmp_path, capsys):
    _, _, out, src = exported
    argv = ["--engine", "ctranslate2", "--model", str(out), "--input", str(src), "--n-best", "3", "--beam-size", "4"]
    rows = [line.split("\t") for line in translate(tmp_path, "nbest", *argv)]
    by_index: dict[int, list] = {}
    for index, score, text in rows:
        by_index.setdefault(int(index), []).append((float(score), text))
    assert sorted(by_index) == list(range(75)) and by_index[64] == [(0.0, "")]  # the empty line: one empty one
    for index, nbest in by_index.items():
        if index != 64:
            assert len(nbest) == 3 and len({t for _, t in nbest}) == 3, nbest  # three different hypotheses
            assert [s for s, _ in nbest] == sorted((s for s, _ in nbest), reverse=True)  # best first, ours
    narrow = ["translate", *argv[:6], "--n-best", "3"]  # the export's beam_size is 2: too narrow for 3
    assert "--n-best 3: needs beam search with --beam-size 3 or more" in fails(capsys, narrow)


def test_evaluate_with_ctranslate2_scores_as_torchlingo(exported, tmp_path, capsys):
    root, ckpt, out, _ = exported
    tsv = str(root / "data" / "test.tsv")
    hyps = {engine: tmp_path / f"{engine}.txt" for engine in ("torchlingo", "ctranslate2")}
    model = {"torchlingo": ["--checkpoint", str(ckpt)], "ctranslate2": ["--model", str(out)]}
    scores = {}
    for engine, path in hyps.items():
        capsys.readouterr()
        argv = ["evaluate", "--engine", engine, *model[engine], "--src", tsv, "--beam-size", "1", "--json"]
        assert main([*argv, "--output", str(path)]) == 0
        scores[engine] = json.loads(capsys.readouterr().out)
    assert hyps["torchlingo"].read_text() == hyps["ctranslate2"].read_text()
    assert scores["ctranslate2"] == scores["torchlingo"]
    assert scores["ctranslate2"]["bleu"] > 0
    # --run RUN_DIR gives the test set; the model is --model's.
    run = str(root / "runs" / "ct2")
    assert main(["evaluate", "--run", run, "--engine", "ctranslate2", "--model", str(out), "--beam-size", "1"]) == 0
    assert f"BLEU = {scores['torchlingo']['bleu']:.2f}" in capsys.readouterr().out


def test_without_ctranslate2_the_engine_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 raises ImportError
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    message = fails(capsys, ["translate", "--engine", "ctranslate2", "--model", str(tmp_path), "--input", str(src)])
    assert "--engine ctranslate2 need it" in message and "pip install" in message


def fails(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--sampling", "topk"], "--sampling: not supported with --engine ctranslate2"),
        (["--prefix", "PREFIX"], "--prefix: not supported with --engine ctranslate2"),
        (["--quantize", "int8"], "--quantize: not supported with --engine ctranslate2"),
        (["--n-best", "3", "--beam-size", "2"], "--n-best 3: needs beam search with --beam-size 3 or more"),
        (["--amp", "bf16"], "--amp: not supported with --engine ctranslate2"),
        (["--device", "cuda"], "--device: not supported with --engine ctranslate2"),
        (["--top-k", "3"], "--top-k: only with --sampling"),
    ],
)
def test_flags_ctranslate2_cannot_honour_fail_in_one_line(tmp_path, capsys, extra, expected):
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    extra = [str(src) if x == "PREFIX" else x for x in extra]
    argv = ["translate", "--engine", "ctranslate2", "--model", str(tmp_path), "--input", str(src), *extra]
    assert expected in fails(capsys, argv)


def test_engine_and_model_errors_are_one_line(exported, tmp_path, capsys):
    _, ckpt, out, src = exported
    ct2 = ["translate", "--engine", "ctranslate2", "--input", str(src)]
    assert "--engine ctranslate2: give --model DIR" in fails(capsys, [*ct2, "--checkpoint", str(ckpt)])
    assert "--engine ctranslate2: give --model DIR" in fails(capsys, ["evaluate", "--engine", "ctranslate2"])
    message = fails(capsys, ["translate", "--model", str(out), "--input", str(src)])
    assert "--model: only with --engine ctranslate2" in message
    message = fails(capsys, ["translate", "--checkpoint", str(ckpt), "--compute-type", "int8", "--input", str(src)])
    assert "--compute-type: only with --engine ctranslate2" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = fails(capsys, [*ct2, "--model", str(empty)])
    assert str(empty) in message and "not a torchlingo CTranslate2 export (no model.bin)" in message
    bare = tmp_path / "bare"
    shutil.copytree(out, bare)
    (bare / "torchlingo.json").unlink()
    assert "(no torchlingo.json)" in fails(capsys, [*ct2, "--model", str(bare)])
    (bare / "torchlingo.json").write_text(json.dumps({"format_version": 99}))
    message = fails(capsys, [*ct2, "--model", str(bare)])
    assert "torchlingo.json: format version 99 is newer" in message
    with pytest.raises(SystemExit) as exit_info:  # an ensemble, or a checkpoint beside the model: argparse's error
        main([*ct2, "--model", str(out), "--checkpoint", str(ckpt)])
    assert exit_info.value.code == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_decoding_flags_override_the_exported_defaults(exported):
    _, _, out, _ = exported
    argv = ["translate", "--engine", "ctranslate2", "--model", str(out), "--beam-size", "3", "--length-penalty", "1.5"]
    settings = _translator(build_parser().parse_args(argv)).settings
    assert (settings.beam_size, settings.length_penalty, settings.max_len_b) == (3, 1.5, 5)  # max_len_b: the run's
