"""Preparing shards (the format is shards.py's): `prepare_shards` and `open_or_prepare`, what `torchlingo prepare`
and `prepared_data: auto` run.

`prepare_shards` cuts the corpus into parts of whole lines by byte offset (one fast scan that also fingerprints it),
then reads it twice, part by part, in worker processes that each read their own parts: once to train the tokenizer
(word counts, or a bounded seeded sample for SentencePiece), once to encode it; the main process merges the parts'
results in order (the same bytes for any number of workers) and appends the ids to the `.bin` files. Every file goes
through files.py's atomic writes.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import multiprocessing
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import torch

from .. import distributed
from ..config import Config
from ..errors import DataError
from ..files import atomic_write, write_json
from ..rundir import tokenizer_files
from .dataset import _first, _LineChecker, describe_source, iter_pairs, resolve_data_path
from .shards import (
    FORMAT_VERSION,
    MANIFEST,
    SIDES,
    ShardedDataset,
    corpus_paths,
    file_stat,
    shard_dir,
    shard_settings,
    stale_reason,
    trusted_mtime,
)
from .textfile import scan_all
from .vocab import SentencePieceVocab, Vocab, vocab_from_state, vocab_hash, word_tokenize

if TYPE_CHECKING:
    pass

log = logging.getLogger("torchlingo")
CHUNK_PAIRS = 20_000  # lines of a part of the corpus at most (a worker reads, checks and encodes one at a time)


# -- writing -------------------------------------------------------------------------------------------------
# The corpus is cut into parts of whole lines by byte offset (textfile.scan): each worker reads, checks and encodes
# its own parts and sends back numpy arrays; the main process only merges them in order, so the shards are the same
# bytes whatever the number of workers.
class _Corpus:
    """The training files, their fingerprints, and their parts: per part, one (start, stop, lines before) span per
    file. A file must be a regular file (read in parts) that does not change while it is prepared."""

    def __init__(self, resolved: Path | tuple[Path, Path], config: Config, workers: int):
        self.resolved, self.policy, self.workers = resolved, config.bad_lines, workers
        self.paths = paths = corpus_paths(resolved)
        for path in paths:
            if path.exists() and not path.is_file() and not path.is_dir():
                raise DataError(
                    f"{path}: not a regular file (a pipe?); prepare reads the corpus in parts: copy it to a file"
                )
        self.stats = [file_stat(p) for p in paths]
        grid = max(1, min(1000, CHUNK_PAIRS))
        scans = scan_all([(p, grid) for p in paths])
        self.fingerprints = [fingerprint for fingerprint, _ in scans]
        lines = [f["lines"] for f in self.fingerprints]
        if len(lines) == 2 and lines[0] != lines[1]:
            raise DataError(
                f"{paths[0]} has {lines[0]} lines but {paths[1]} has {lines[1]}; "
                "parallel files must have one sentence a line, aligned"
            )
        self.lines = lines[0]
        step = max(1, min(CHUNK_PAIRS // grid, math.ceil(self.lines / (4 * workers * grid))))  # grid lines a part
        cuts = [offsets for _, offsets in scans]
        self.parts = [
            tuple((o[i], o[min(i + step, len(o) - 1)], i * grid) for o in cuts)
            for i in range(0, len(cuts[0]) - 1, step)
        ]

    def run(self, job: str, args: Iterable[object] | None = None, states: tuple = ()) -> Iterator:
        """`job` over every part, in order (`args`: one per part, or None), here or in the worker processes; the
        parts' bad-line checks are merged into a new `self.checker`, and each file's share of undecodable lines
        checked at the end."""
        self.checker = _LineChecker(self.policy)
        args = itertools.repeat(None) if args is None else args
        tasks = ((self.resolved, spans, self.policy, job, arg) for spans, arg in zip(self.parts, args))
        return self._merged(_map(_do_part, tasks, self.workers, states))

    def _merged(self, results: Iterator) -> Iterator:
        for checker, result in results:
            self.checker.merge(checker)
            yield result
        for path in self.paths:
            self.checker.check_encoding(path, self.lines)

    def check_unchanged(self) -> None:
        for path, stat in zip(self.paths, self.stats):
            if file_stat(path) != stat:
                raise DataError(f"{path}: changed while it was being prepared; prepare it again")


def _map(function: Callable[[tuple], object], tasks: Iterable[tuple], workers: int, states: tuple) -> Iterator:
    """`function` over `tasks`, results in order: here, or in `workers` processes of one thread each."""
    if workers <= 1:
        _set_vocabs(states)
        yield from map(function, tasks)
        return
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with multiprocessing.get_context(method).Pool(workers, _init_worker, (states,)) as pool:
        yield from pool.imap(function, tasks)


_VOCABS: tuple = ()  # a worker's vocabularies (when it encodes)


def _set_vocabs(states: tuple) -> None:
    global _VOCABS
    _VOCABS = tuple(vocab_from_state(s) for s in states)


def _init_worker(states: tuple) -> None:
    """A worker process: one thread (the processes are the parallelism), and the vocabularies to encode with."""
    torch.set_num_threads(1)
    _set_vocabs(states)


def _do_part(task: tuple) -> tuple[_LineChecker, object]:
    """One part of the corpus: its good pairs, checked as NMTDataset checks them, then what `job` makes of them."""
    resolved, spans, policy, job, arg = task
    checker = _LineChecker(policy)
    pairs = iter_pairs(resolved, checker, [], spans)
    return checker, _JOBS[job](pairs, arg)


def _count_words(pairs: Iterable[tuple[int, str, str]], _: object) -> tuple[collections.Counter, collections.Counter]:
    counts: tuple[collections.Counter, collections.Counter] = collections.Counter(), collections.Counter()
    for _, s, t in pairs:
        counts[0].update(word_tokenize(s))
        counts[1].update(word_tokenize(t))
    return counts


def _count_pairs(pairs: Iterable[tuple[int, str, str]], _: object) -> int:
    return sum(1 for _ in pairs)


def _pick(pairs: Iterable[tuple[int, str, str]], wanted: np.ndarray | None) -> list[tuple[str, str]]:
    """The pairs numbered `wanted` (sorted, within the part; None: all)."""
    if wanted is None:
        return [(s, t) for _, s, t in pairs]
    want = set(wanted.tolist())
    return [(s, t) for i, (_, s, t) in enumerate(pairs) if i in want]


def _encode(
    pairs: Iterable[tuple[int, str, str]], dtype: str
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The part's line numbers and, per side, (flat ids as `dtype`, lengths)."""
    lines, src, tgt = [], [], []
    for n, s, t in pairs:
        lines.append(n)
        src.append(s)
        tgt.append(t)
    out = []
    for vocab, texts in zip(_VOCABS, (src, tgt)):
        ids = vocab.encode_many(texts, num_threads=1)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
        out.append((flat.astype(dtype), lengths))
    return np.array(lines, dtype=np.int64), out


_JOBS: dict[str, Callable] = {"words": _count_words, "size": _count_pairs, "pick": _pick, "encode": _encode}


def train_tokenizers(config: Config, corpus: _Corpus) -> tuple:
    """Pass 1: the vocabularies from the corpus, read in parts: word counts, or SentencePiece trained on at most
    `sp_sample_size` sentences (all of them, in order, when the corpus has no more: then the model is the one
    NMTDataset trains). Returns (src_vocab, tgt_vocab, whether a sample was drawn)."""
    source = describe_source(corpus.resolved)[0]
    if config.tokenizer == "word":
        counts: tuple[collections.Counter, collections.Counter] = collections.Counter(), collections.Counter()
        for src, tgt in corpus.run("words"):
            counts[0].update(src)
            counts[1].update(tgt)
        if not counts[0]:
            raise DataError(f"{source}: no sentence pairs found")
        return (*(Vocab.from_counts(c, config.min_freq, config.max_vocab_size) for c in counts), False)
    k = max(1, config.sp_sample_size // 2) if config.joint_vocab else config.sp_sample_size
    sample, seen = _sample(corpus, k, config.seed)
    if not sample:
        raise DataError(f"{source}: no sentence pairs found")
    src, tgt = [s for s, _ in sample], [t for _, t in sample]
    del sample
    size = {"input_sentence_size": config.sp_sample_size}
    if config.joint_vocab:
        sp = SentencePieceVocab.train(src + tgt, config.vocab_size, config.sp_model_type, **size)
        return sp, sp, seen > k
    train = SentencePieceVocab.train
    return (
        train(src, config.vocab_size, config.sp_model_type, **size),
        train(tgt, config.vocab_size, config.sp_model_type, **size),
        seen > k,
    )


def _sample(corpus: _Corpus, k: int, seed: int) -> tuple[list[tuple[str, str]], int]:
    """The pairs reservoir sampling (Algorithm R, seeded) keeps of the corpus, in its slot order, and how many pairs
    there are. The kept pairs depend only on their count: the parts are counted, the draws made here, and the parts
    send back the pairs drawn (a corpus of at most `k` lines is sent back whole, in one pass)."""
    if corpus.lines <= k:
        whole: list[tuple[str, str]] = [pair for part in corpus.run("pick") for pair in part]
        return whole, len(whole)
    sizes = np.array(list(corpus.run("size")), dtype=np.int64)
    slots = _reservoir(int(sizes.sum()), k, seed)
    order = np.argsort(slots, kind="stable")
    starts = np.concatenate(([0], np.cumsum(sizes)))
    cuts = np.searchsorted(slots[order], starts)
    wanted = [slots[order[a:b]] - start for a, b, start in zip(cuts[:-1], cuts[1:], starts[:-1])]
    picked = [pair for part in corpus.run("pick", wanted) for pair in part]
    sample: list = [None] * len(slots)
    for rank, slot in enumerate(order.tolist()):
        sample[slot] = picked[rank]
    return sample, int(sizes.sum())


def _reservoir(n: int, k: int, seed: int) -> np.ndarray:
    """Slot -> pair number of what Algorithm R keeps of `n` pairs (random.Random(seed): the draws of the streamed
    sampling this replaces, so the sample is the same)."""
    rng, slots = random.Random(seed), list(range(min(n, k)))
    for seen in range(k + 1, n + 1):
        if (j := rng.randrange(seen)) < k:
            slots[j] = seen - 1
    return np.array(slots, dtype=np.int64)


class _Writer:
    """Appends the kept pairs of each encoded chunk to the `.bin` files; keeps the lengths for the index."""

    def __init__(
        self,
        files: tuple[IO[bytes], IO[bytes]],
        dtype: np.dtype,
        config: Config,
        checker: _LineChecker,
        sides: tuple[Path, Path],
    ):
        self.files, self.dtype, self.config, self.checker, self.sides = files, dtype, config, checker, sides
        self.lengths: tuple[list, list] = ([], [])
        self.total = self.too_long = 0

    def add(self, lines: np.ndarray, encoded: list[tuple[np.ndarray, np.ndarray]]) -> None:
        (src, src_len), (tgt, tgt_len) = encoded
        max_len, limit = self.config.train_max_len, self.config.max_positions - 2
        too_long = (src_len > max_len) | (tgt_len > max_len)
        over = ~too_long & ((src_len > limit) | (tgt_len > limit))
        for i in np.flatnonzero(over):  # what NMTDataset calls a bad line (only when max_len > what the model takes)
            side = 0 if src_len[i] > limit else 1
            n = (src_len, tgt_len)[side][i]
            self.checker.bad(
                f"{self.sides[side]}:{lines[i]}",
                "longer than the model takes",
                f"{('source', 'target')[side]} of {n} tokens, more than the model's max_positions="
                f"{self.config.max_positions} allows ({limit} plus <s> and </s>)",
            )
        keep = ~(too_long | over)
        self.total += len(lines)
        self.too_long += int(too_long.sum())
        for f, ids, lengths, out in zip(self.files, (src, tgt), (src_len, tgt_len), self.lengths):
            f.write(ids[np.repeat(keep, lengths)].astype(self.dtype).tobytes())
            out.append(lengths[keep].astype(np.int32))


def prepare_shards(
    config: Config,
    directory: str | Path | None = None,
    workers: int | None = None,
    vocabs: Sequence[Vocab | SentencePieceVocab] | None = None,
) -> dict:
    """Tokenize `config.train_file` into shards in `directory` (default `shard_dir(config)`) with `workers`
    processes (default `config.prepare_workers`); the tokenizers are trained here unless `vocabs` gives them.
    Keeps and skips the same pairs as NMTDataset(train_file, max_len=config.train_max_len). Returns the manifest."""
    directory = Path(directory) if directory is not None else shard_dir(config)
    resolved = resolve_data_path(config.train_file, config.src_lang, config.tgt_lang)
    source, sides = describe_source(resolved)
    clock = [time.perf_counter()]  # the phases' times go to the manifest and the log
    corpus = _Corpus(resolved, config, workers or config.prepare_workers)
    clock.append(time.perf_counter())
    sampled = False
    if vocabs is None:
        log.info("%s: training the %s tokenizer", source, config.tokenizer)
        *vocabs, sampled = train_tokenizers(config, corpus)
    clock.append(time.perf_counter())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)  # the shards are incomplete until the new manifest is written
    names = tokenizer_files(config)
    for vocab, name in zip(vocabs, names):
        vocab.save(directory / name)
    dtype = np.dtype(np.uint16 if max(len(v) for v in vocabs) <= 1 << 16 else np.int32)
    writer = _encode_all(config, directory, corpus, vocabs, dtype, sides)
    clock.append(time.perf_counter())
    checker = corpus.checker
    lengths = [np.concatenate(out) if out else np.zeros(0, np.int32) for out in writer.lengths]
    _check_kept(source, writer, len(lengths[0]), config)
    if writer.too_long:
        checker.skipped[f"longer than max_len={config.train_max_len} tokens"] += writer.too_long
    _save_index(directory, lengths)
    manifest = {
        "format": FORMAT_VERSION,
        "source": source,
        "corpus": [{**f, "mtime_ns": trusted_mtime(stat)} for f, stat in zip(corpus.fingerprints, corpus.stats)],
        "settings": shard_settings(config),
        "sample_seed": config.seed if sampled else None,
        "tokenizers": {"src": vocab_hash(vocabs[0]), "tgt": vocab_hash(vocabs[1])},
        "tokenizer_files": list(names),
        "dtype": dtype.name,
        "pairs": len(lengths[0]),
        "read_pairs": writer.total,
        "tokens": {side: int(n.sum()) for side, n in zip(SIDES, lengths)},
        "skipped": dict(checker.skipped),
    }
    clock.append(time.perf_counter())
    manifest["seconds"] = {
        k: round(b - a, 2) for k, a, b in zip(("scan", "tokenizer", "encode", "index"), clock, clock[1:])
    }
    corpus.check_unchanged()
    write_json(directory / MANIFEST, manifest)
    _report(source, manifest, checker)
    return manifest


def _save_index(directory: Path, lengths: list[np.ndarray]) -> None:
    """Per side, the lengths and the offsets (one more: where each sentence starts, then the end) as .npy files."""
    for side, n in zip(SIDES, lengths):
        _save_npy(directory / f"{side}.len.npy", n)
        offsets = np.zeros(len(n) + 1, dtype=np.int64)
        np.cumsum(n, out=offsets[1:])
        _save_npy(directory / f"{side}.off.npy", offsets)


def _encode_all(
    config: Config,
    directory: Path,
    corpus: _Corpus,
    vocabs: Sequence[Vocab | SentencePieceVocab],
    dtype: np.dtype,
    sides: tuple[Path, Path],
) -> _Writer:
    """Pass 2: encode the corpus part by part (in the worker processes when more than one) into the .bin files."""
    states = tuple(v.to_state() for v in vocabs)
    with atomic_write(directory / "src.bin") as src_file, atomic_write(directory / "tgt.bin") as tgt_file:
        parts = corpus.run("encode", itertools.repeat(dtype.name), states)
        writer = _Writer((src_file, tgt_file), dtype, config, corpus.checker, sides)
        for lines, encoded in parts:
            writer.add(lines, encoded)
    return writer


def _check_kept(source: str, writer: _Writer, kept: int, config: Config) -> None:
    if writer.total == 0:
        raise DataError(f"{source}: no sentence pairs found")
    if writer.too_long == writer.total:
        raise DataError(
            f"{source}: every pair has a side longer than max_len={config.train_max_len} tokens; raise max_len"
        )
    if kept == 0:
        raise DataError(f"{source}: no sentence pairs left; all were skipped as too long for the model")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=False)


def _report(source: str, manifest: dict, checker: _LineChecker) -> None:
    skipped = manifest["skipped"]
    if skipped:
        reasons = ", ".join(f"{n} {why}{_first(checker, why)}" for why, n in skipped.items())
        log.warning("%s: kept %d pairs, skipped %d (%s)", source, manifest["pairs"], sum(skipped.values()), reasons)
    log.info(
        "%s: %d pairs prepared (%s) in %.1f s (%s)",
        source,
        manifest["pairs"],
        ", ".join(f"{n} {s} tokens" for s, n in manifest["tokens"].items()),
        sum(manifest["seconds"].values()),
        ", ".join(f"{phase} {t:.1f} s" for phase, t in manifest["seconds"].items()),
    )


@contextlib.contextmanager
def prepare_lock(directory: Path) -> Iterator[None]:
    """Held while shards are checked and prepared: a second process preparing the same (shared) directory waits for
    the first, then finds its shards fresh."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".prepare.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def open_or_prepare(
    config: Config, vocabs: Sequence[Vocab | SentencePieceVocab] | None = None, directory: str | Path | None = None
) -> ShardedDataset:
    """The training data as shards: reused when they fit the corpus and config, else prepared (again). Under
    torchrun only rank 0 prepares; the other ranks come after it and find the shards fresh."""
    directory = Path(directory) if directory is not None else shard_dir(config)
    with prepare_lock(directory):
        why = stale_reason(directory, config, vocabs=vocabs)
        if why is not None and not distributed.is_writer():
            raise DataError(
                f"{directory}: the prepared shards do not fit this run ({why}) on rank {distributed.rank()}"
            )
        if why is not None:
            log.info("preparing shards in %s (%s)", directory, why)
            prepare_shards(config, directory, vocabs=vocabs)
        else:
            log.info("reusing the prepared shards in %s", directory)
    return ShardedDataset(directory, config)
