"""NMTDataset: a parallel corpus read once, tokenized once, and kept as two flat integer arrays."""

from __future__ import annotations

import array
import collections
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..config import Config
from ..errors import DataError
from .textfile import LineReader
from .vocab import SentencePieceVocab, Vocab

log = logging.getLogger("torchlingo")

HEADERS = {("src", "tgt"), ("source", "target")}
PathLike = str | Path
DataPath = PathLike | list[PathLike] | tuple[PathLike, ...]  # a TSV file or a prefix, or the (source, target) pair


def resolve_data_path(
    spec: DataPath | None, src_lang: str | None = None, tgt_lang: str | None = None
) -> Path | tuple[Path, Path]:
    """A TSV path, or the parallel pair: `(a, b)` as given, or `spec.src_lang` / `spec.tgt_lang` for a prefix.
    None (a data setting left unset) is a DataError."""
    if spec is None:
        raise DataError("no data path given (train_file, val_file or test_file is not set)")
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise DataError(f"parallel data needs two files (source, target), got {len(spec)}")
        return Path(spec[0]), Path(spec[1])
    path = Path(spec)
    if src_lang and tgt_lang and not (path.is_file() or path.is_fifo()):
        return Path(f"{path}.{src_lang}"), Path(f"{path}.{tgt_lang}")
    return path


class _LineChecker:
    """Applies the `bad_lines` policy: raise on the first bad line, or count the skipped ones by reason."""

    # A file where more lines than this share (and at least MIN_INVALID lines) are not UTF-8 is in another encoding
    # (Latin-1, ...): a file-level error, not a pile of skipped lines.
    INVALID_SHARE, MIN_INVALID = 0.1, 10

    def __init__(self, policy: str):
        if policy not in ("error", "skip"):
            raise DataError(f"bad_lines: {policy!r} is not one of error, skip")
        self.policy = policy
        self.skipped: collections.Counter[str] = collections.Counter()
        self.first: dict[str, str] = {}  # reason -> where it first happened, for the report
        self.invalid: collections.Counter[Path] = collections.Counter()  # lines not UTF-8, per file

    def bad(self, where: str, reason: str, message: str | None = None) -> None:
        """`reason` is what the report counts ("invalid UTF-8"); `message`, if given, what the error says instead."""
        if self.policy == "error":
            raise DataError(f"{where}: {message or reason} (fix the line, or set bad_lines: skip to drop such lines)")
        self.skipped[reason] += 1
        self.first.setdefault(reason, where)

    def decode(self, raw: bytes, path: Path, n: int) -> str | None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.invalid[path] += 1
            self.bad(f"{path}:{n}", "invalid UTF-8", f"invalid UTF-8 at byte {e.start + 1}")
            return None

    def merge(self, other: _LineChecker) -> None:
        """Add what `other` (a worker's checker, for a later part of the corpus) counted."""
        self.skipped.update(other.skipped)
        self.invalid.update(other.invalid)
        for reason, where in other.first.items():
            self.first.setdefault(reason, where)

    def check_encoding(self, path: Path, lines: int) -> None:
        """After a file was read under `skip`: refuse it when a large share of its lines were not UTF-8."""
        bad = self.invalid[path]
        if bad >= self.MIN_INVALID and bad > self.INVALID_SHARE * lines:
            raise DataError(
                f"{path}: {bad} of {lines} lines are not valid UTF-8: the file is in another encoding "
                "(Latin-1? Windows-1252?); convert it to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8); bad_lines: skip "
                "only drops the odd broken line"
            )


class _Pairs:
    """Sentence pairs as read, with the line number each came from (for errors about a pair found later)."""

    def __init__(self) -> None:
        self.src: list[str] = []
        self.tgt: list[str] = []
        self.lines = array.array("q")

    def add(self, n: int, s: str, t: str) -> None:
        self.src.append(s)
        self.tgt.append(t)
        self.lines.append(n)


def iter_tsv(
    path: Path, checker: _LineChecker, fingerprints: list[dict], span: tuple | None = None
) -> Iterator[tuple[int, str, str]]:
    """(line number, source, target) of each good pair of a two-column TSV, streamed; no quote processing ("NA" and
    a leading `"` are ordinary text); header optional. At the end the file's fingerprint is appended to
    `fingerprints`; with a `span` (see LineReader) only that part is read, and the caller checks the whole file."""
    reader = LineReader(path, span)
    for n, raw in enumerate(reader, start=reader.lines + 1):
        where = f"{path}:{n}"
        line = checker.decode(raw, path, n)
        if line is None:
            continue
        cols = line.split("\t")
        if n == 1 and tuple(c.strip().lower() for c in cols) in HEADERS:
            continue
        if not line.strip():
            checker.bad(where, "empty line")
            continue
        if len(cols) != 2:
            checker.bad(where, "wrong number of columns", f"expected 2 tab-separated columns, found {len(cols)}")
            continue
        s, t = cols[0].strip(), cols[1].strip()
        if not s or not t:
            checker.bad(where, f"empty {'source' if not s else 'target'}")
            continue
        yield n, s, t
    if span is None:
        checker.check_encoding(reader.path, reader.lines)
        fingerprints.append(reader.fingerprint())


def iter_parallel(
    src_path: Path, tgt_path: Path, checker: _LineChecker, fingerprints: list[dict], spans: tuple | None = None
) -> Iterator[tuple[int, str, str]]:
    """Two files with one sentence a line; line i of one translates line i of the other. Both are streamed. With
    `spans` (one per file, see LineReader) only those parts are read, and the caller checks the whole files."""
    readers = (LineReader(src_path, spans and spans[0]), LineReader(tgt_path, spans and spans[1]))
    src_lines, tgt_lines = iter(readers[0]), iter(readers[1])
    for n, (rs, rt) in enumerate(zip(src_lines, tgt_lines), start=readers[0].lines + 1):
        s = checker.decode(rs, src_path, n)
        t = checker.decode(rt, tgt_path, n) if s is not None else None
        if s is None or t is None:
            continue
        s, t = s.strip(), t.strip()
        if not s or not t:
            checker.bad(f"{src_path if not s else tgt_path}:{n}", f"empty {'source' if not s else 'target'}")
            continue
        yield n, s, t
    if spans is not None:
        return
    for rest in (src_lines, tgt_lines):  # count the lines of the longer file
        for _ in rest:
            pass
    if readers[0].lines != readers[1].lines:
        raise DataError(
            f"{src_path} has {readers[0].lines} lines but {tgt_path} has {readers[1].lines}; "
            "parallel files must have one sentence a line, aligned"
        )
    for reader in readers:
        checker.check_encoding(reader.path, reader.lines)
    fingerprints.extend(r.fingerprint() for r in readers)


def iter_pairs(
    resolved: Path | tuple[Path, Path], checker: _LineChecker, fingerprints: list[dict], spans: tuple | None = None
) -> Iterator[tuple[int, str, str]]:
    """The good pairs of a resolved data path (see `resolve_data_path`), streamed; `spans`: only a part of it (one
    span per file, see LineReader)."""
    if isinstance(resolved, tuple):
        return iter_parallel(*resolved, checker, fingerprints, spans)
    return iter_tsv(resolved, checker, fingerprints, spans and spans[0])


def describe_source(resolved: Path | tuple[Path, Path]) -> tuple[str, tuple[Path, Path]]:
    """How errors name the data, and the file each side's line numbers refer to."""
    if isinstance(resolved, tuple):
        return f"{resolved[0]} + {resolved[1]}", resolved
    return str(resolved), (resolved, resolved)


def read_tsv(path: Path, checker: _LineChecker) -> tuple[_Pairs, list[dict]]:
    """All good pairs of a TSV file in memory, and the file's fingerprint."""
    pairs = _Pairs()
    fingerprints: list[dict] = []
    for n, s, t in iter_tsv(path, checker, fingerprints):
        pairs.add(n, s, t)
    return pairs, fingerprints


def read_parallel(src_path: Path, tgt_path: Path, checker: _LineChecker) -> tuple[_Pairs, list[dict]]:
    """All good pairs of two parallel files in memory, and both files' fingerprints."""
    pairs = _Pairs()
    fingerprints: list[dict] = []
    for n, s, t in iter_parallel(src_path, tgt_path, checker, fingerprints):
        pairs.add(n, s, t)
    return pairs, fingerprints


def build_vocabs(
    src_texts: list[str], tgt_texts: list[str], config: Config
) -> tuple[Vocab, Vocab] | tuple[SentencePieceVocab, SentencePieceVocab]:
    """Source and target vocabularies from training text, as `config.tokenizer` says."""
    if config.tokenizer == "word":
        return (
            Vocab.build(src_texts, config.min_freq, config.max_vocab_size),
            Vocab.build(tgt_texts, config.min_freq, config.max_vocab_size),
        )
    sample = {"input_sentence_size": config.sp_sample_size}
    if config.joint_vocab:
        sp = SentencePieceVocab.train(src_texts + tgt_texts, config.vocab_size, config.sp_model_type, **sample)
        return sp, sp
    return (
        SentencePieceVocab.train(src_texts, config.vocab_size, config.sp_model_type, **sample),
        SentencePieceVocab.train(tgt_texts, config.vocab_size, config.sp_model_type, **sample),
    )


class _Packed:
    """Many id sequences in one int32 tensor plus offsets: a few bytes per token instead of a Python list each."""

    def __init__(self, seqs: list[list[int]]):
        self.lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        self.offsets = torch.zeros(len(seqs) + 1, dtype=torch.int64)
        torch.cumsum(self.lengths, 0, out=self.offsets[1:])
        self.ids = torch.tensor([i for s in seqs for i in s], dtype=torch.int32)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ids[self.offsets[i] : self.offsets[i + 1]].long()


class NMTDataset(Dataset):
    """Sentence pairs from a TSV file or two parallel files, as (src_ids, tgt_ids) LongTensors without BOS/EOS.

    Vocabularies are built from this data when none are given (pass the training set's to val/test sets).
    `max_len` leaves out pairs with a side longer than that many tokens, and says how many. A pair with a side the
    model cannot take (more than `config.max_positions` - 2 tokens, the 2 for <s> and </s>) is a bad line: an error
    naming file and line under `bad_lines: error`, left out and counted under `skip`. `fingerprint` describes the
    files read (name, bytes, lines, SHA-256), for a resume to compare.
    """

    src_vocab: Vocab | SentencePieceVocab
    tgt_vocab: Vocab | SentencePieceVocab

    def __init__(
        self,
        path: DataPath | None,
        src_vocab: Vocab | SentencePieceVocab | None = None,
        tgt_vocab: Vocab | SentencePieceVocab | None = None,
        config: Config | None = None,
        *,
        max_len: int | None = None,
        bad_lines: str | None = None,
    ):
        self.config = config = config or Config()
        resolved = resolve_data_path(path, config.src_lang, config.tgt_lang)
        checker = _LineChecker(bad_lines or config.bad_lines)
        pairs = _Pairs()
        self.fingerprint: list[dict] = []
        for n, s, t in iter_pairs(resolved, checker, self.fingerprint):
            pairs.add(n, s, t)
        self.source, files = describe_source(resolved)
        if not pairs.src:
            dropped = f"; all {sum(checker.skipped.values())} lines were skipped as bad" if checker.skipped else ""
            raise DataError(f"{self.source}: no sentence pairs found{dropped}")
        if (src_vocab is None) != (tgt_vocab is None):
            raise DataError("pass both src_vocab and tgt_vocab, or neither to build them from this data")
        if src_vocab is None:
            src_vocab, tgt_vocab = build_vocabs(pairs.src, pairs.tgt, config)
        # tgt_vocab is None only with src_vocab (checked above), and then built with it: never None from here on
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab  # type: ignore[assignment]
        src_ids, tgt_ids = (
            src_vocab.encode_many(pairs.src),
            tgt_vocab.encode_many(pairs.tgt),  # type: ignore[union-attr]
        )
        keep = self._fitting(src_ids, tgt_ids, pairs, files, checker, max_len)
        if len(keep) < len(src_ids):
            src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
            pairs.src, pairs.tgt = [pairs.src[i] for i in keep], [pairs.tgt[i] for i in keep]
        self.src_texts, self.tgt_texts = pairs.src, pairs.tgt
        self._src, self._tgt = _Packed(src_ids), _Packed(tgt_ids)
        self.skipped = dict(checker.skipped)
        if self.skipped:
            reasons = ", ".join(f"{n} {why}{_first(checker, why)}" for why, n in self.skipped.items())
            log.warning(
                "%s: kept %d pairs, skipped %d (%s)", self.source, len(self), sum(self.skipped.values()), reasons
            )

    def _fitting(
        self,
        src_ids: list[list[int]],
        tgt_ids: list[list[int]],
        pairs: _Pairs,
        files: tuple[Path, Path],
        checker: _LineChecker,
        max_len: int | None,
    ) -> list[int]:
        """Indices of the pairs to keep: within `max_len` (the rest counted), and within what the model takes
        (the rest bad lines)."""
        limit = self.config.max_positions - 2
        keep, too_long = [], 0
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
            if max_len is not None and (len(s) > max_len or len(t) > max_len):
                too_long += 1
                continue
            side = 0 if len(s) > limit else 1 if len(t) > limit else None
            if side is not None:
                n = (s, t)[side]
                checker.bad(
                    f"{files[side]}:{pairs.lines[i]}",
                    "longer than the model takes",
                    f"{('source', 'target')[side]} of {len(n)} tokens, more than the model's "
                    f"max_positions={self.config.max_positions} allows ({limit} plus <s> and </s>)",
                )
                continue
            keep.append(i)
        if max_len is not None and too_long == len(src_ids):
            raise DataError(f"{self.source}: every pair has a side longer than max_len={max_len} tokens; raise max_len")
        if too_long:
            checker.skipped[f"longer than max_len={max_len} tokens"] += too_long
        if not keep:
            raise DataError(f"{self.source}: no sentence pairs left; all were skipped as too long for the model")
        return keep

    def __len__(self) -> int:
        return len(self._src.lengths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._src[i], self._tgt[i]

    @property
    def src_lengths(self) -> torch.Tensor:
        """Token counts of the source sentences (without BOS/EOS)."""
        return self._src.lengths

    @property
    def tgt_lengths(self) -> torch.Tensor:
        return self._tgt.lengths


def _first(checker: _LineChecker, why: str) -> str:
    return f" (first at {checker.first[why]})" if why in checker.first else ""
