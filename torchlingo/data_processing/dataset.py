"""NMTDataset: a parallel corpus read once, tokenized once, and kept as two flat integer arrays."""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..config import Config
from ..errors import DataError
from .vocab import SentencePieceVocab, Vocab

log = logging.getLogger("torchlingo")

HEADERS = {("src", "tgt"), ("source", "target")}
PathLike = str | Path


def resolve_data_path(
    spec: PathLike | Sequence[PathLike], src_lang: str | None = None, tgt_lang: str | None = None
) -> Path | tuple[Path, Path]:
    """A TSV path, or the parallel pair: `(a, b)` as given, or `spec.src_lang` / `spec.tgt_lang` for a prefix."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise DataError(f"parallel data needs two files (source, target), got {len(spec)}")
        return Path(spec[0]), Path(spec[1])
    path = Path(spec)
    if src_lang and tgt_lang and not path.is_file():
        return Path(f"{path}.{src_lang}"), Path(f"{path}.{tgt_lang}")
    return path


def _read_lines(path: Path) -> list[bytes]:
    """Raw lines without line ends (LF or CRLF) and without a UTF-8 byte-order mark; a final newline is optional."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


class _LineChecker:
    """Applies the `bad_lines` policy: raise on the first bad line, or count the skipped ones by reason."""

    def __init__(self, policy: str):
        if policy not in ("error", "skip"):
            raise DataError(f"bad_lines: {policy!r} is not one of error, skip")
        self.policy = policy
        self.skipped: collections.Counter[str] = collections.Counter()
        self.first: dict[str, str] = {}  # reason -> where it first happened, for the report

    def bad(self, where: str, reason: str, message: str | None = None) -> None:
        """`reason` is what the report counts ("invalid UTF-8"); `message`, if given, what the error says instead."""
        if self.policy == "error":
            raise DataError(f"{where}: {message or reason} (fix the line, or set bad_lines: skip to drop such lines)")
        self.skipped[reason] += 1
        self.first.setdefault(reason, where)

    def decode(self, raw: bytes, where: str) -> str | None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.bad(where, "invalid UTF-8", f"invalid UTF-8 at byte {e.start + 1}")
            return None


def read_tsv(path: Path, checker: _LineChecker) -> tuple[list[str], list[str]]:
    """Two tab-separated columns, no quote processing ("NA" and a leading `"` are ordinary text); header optional."""
    src, tgt = [], []
    for n, raw in enumerate(_read_lines(path), start=1):
        where = f"{path}:{n}"
        line = checker.decode(raw, where)
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
        src.append(s)
        tgt.append(t)
    return src, tgt


def read_parallel(src_path: Path, tgt_path: Path, checker: _LineChecker) -> tuple[list[str], list[str]]:
    """Two files with one sentence a line; line i of one translates line i of the other."""
    src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
            "parallel files must have one sentence a line, aligned"
        )
    src, tgt = [], []
    for n, (rs, rt) in enumerate(zip(src_lines, tgt_lines), start=1):
        s = checker.decode(rs, f"{src_path}:{n}")
        t = checker.decode(rt, f"{tgt_path}:{n}") if s is not None else None
        if s is None or t is None:
            continue
        s, t = s.strip(), t.strip()
        if not s or not t:
            checker.bad(f"{src_path if not s else tgt_path}:{n}", f"empty {'source' if not s else 'target'}")
            continue
        src.append(s)
        tgt.append(t)
    return src, tgt


def build_vocabs(src_texts: list[str], tgt_texts: list[str], config: Config):
    """Source and target vocabularies from training text, as `config.tokenizer` says."""
    if config.tokenizer == "word":
        return (
            Vocab.build(src_texts, config.min_freq, config.max_vocab_size),
            Vocab.build(tgt_texts, config.min_freq, config.max_vocab_size),
        )
    if config.joint_vocab:
        sp = SentencePieceVocab.train(src_texts + tgt_texts, config.vocab_size, config.sp_model_type)
        return sp, sp
    return (
        SentencePieceVocab.train(src_texts, config.vocab_size, config.sp_model_type),
        SentencePieceVocab.train(tgt_texts, config.vocab_size, config.sp_model_type),
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
    `max_len` leaves out pairs with a side longer than that many tokens, and says how many.
    """

    def __init__(
        self,
        path: PathLike | Sequence[PathLike],
        src_vocab=None,
        tgt_vocab=None,
        config: Config | None = None,
        *,
        max_len: int | None = None,
        bad_lines: str | None = None,
    ):
        self.config = config = config or Config()
        resolved = resolve_data_path(path, config.src_lang, config.tgt_lang)
        checker = _LineChecker(bad_lines or config.bad_lines)
        if isinstance(resolved, tuple):
            self.src_texts, self.tgt_texts = read_parallel(*resolved, checker)
            self.source = f"{resolved[0]} + {resolved[1]}"
        else:
            self.src_texts, self.tgt_texts = read_tsv(resolved, checker)
            self.source = str(resolved)
        self.skipped = dict(checker.skipped)
        where = {why: f" (first at {at})" for why, at in checker.first.items()}
        if not self.src_texts:
            dropped = f"; all {sum(self.skipped.values())} lines were skipped as bad" if self.skipped else ""
            raise DataError(f"{self.source}: no sentence pairs found{dropped}")
        if (src_vocab is None) != (tgt_vocab is None):
            raise DataError("pass both src_vocab and tgt_vocab, or neither to build them from this data")
        if src_vocab is None:
            src_vocab, tgt_vocab = build_vocabs(self.src_texts, self.tgt_texts, config)
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        src_ids, tgt_ids = src_vocab.encode_many(self.src_texts), tgt_vocab.encode_many(self.tgt_texts)
        if max_len is not None:
            keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if len(s) <= max_len and len(t) <= max_len]
            if not keep:
                raise DataError(
                    f"{self.source}: every pair has a side longer than max_len={max_len} tokens; raise max_len"
                )
            if len(keep) < len(src_ids):
                self.skipped[f"longer than max_len={max_len} tokens"] = len(src_ids) - len(keep)
                src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
                self.src_texts, self.tgt_texts = [self.src_texts[i] for i in keep], [self.tgt_texts[i] for i in keep]
        self._src, self._tgt = _Packed(src_ids), _Packed(tgt_ids)
        if self.skipped:
            reasons = ", ".join(f"{n} {why}{where.get(why, '')}" for why, n in self.skipped.items())
            log.warning(
                "%s: kept %d pairs, skipped %d (%s)", self.source, len(self), sum(self.skipped.values()), reasons
            )

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
