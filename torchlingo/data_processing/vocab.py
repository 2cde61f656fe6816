"""Vocabularies: text <-> ids. Word level (for teaching) and SentencePiece (the default), with the same special ids.

Both kinds share one interface: `encode(text) -> list[int]`, `decode(ids) -> str`, `len()`, `save(path)`,
`to_state()` (plain data a weights-only checkpoint can hold) and `vocab_from_state(state)` to get it back.
"""

from __future__ import annotations

import collections
import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ConfigError, DataError, first_line
from ..files import write_bytes, write_text

PAD_IDX, UNK_IDX, BOS_IDX, EOS_IDX = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")

_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}»”])")
_NO_SPACE_AFTER = re.compile(r"([(\[{«“¿¡]) ")


def word_tokenize(text: str) -> list[str]:
    """Split into words and single punctuation marks: "Hola, mundo." -> ["Hola", ",", "mundo", "."]."""
    return _WORD.findall(text)


def word_detokenize(tokens: Sequence[str]) -> str:
    """Join words with spaces, then remove the spaces that punctuation does not take."""
    text = " ".join(tokens)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


class _Specials:
    pad_idx, unk_idx, bos_idx, eos_idx = PAD_IDX, UNK_IDX, BOS_IDX, EOS_IDX

    def decode(self, ids: Iterable[int]) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def strip_specials(ids: Iterable[int]) -> list[int]:
        """Ids up to the first EOS, without BOS/PAD."""
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_IDX:
                break
            if i not in (PAD_IDX, BOS_IDX):
                out.append(i)
        return out


class Vocab(_Specials):
    """Word-level vocabulary: the most frequent words of the training data, specials at ids 0-3."""

    kind = "word"

    def __init__(self, tokens: Sequence[str]):
        if tuple(tokens[:4]) != SPECIALS:
            raise DataError(f"word vocabulary must start with the specials {SPECIALS}")
        self.itos = list(tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Count words; keep those seen `min_freq` times, most frequent first (ties alphabetical), up to `max_size`."""
        return cls.from_counts(
            collections.Counter(t for text in texts for t in word_tokenize(text)), min_freq, max_size
        )

    @classmethod
    def from_counts(cls, counts: collections.Counter, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """`build` from word counts already made (a corpus counted as it streams by)."""
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(t, UNK_IDX) for t in word_tokenize(text)]

    def encode_many(self, texts: list[str], num_threads: int = -1) -> list[list[int]]:
        """Encode each text (in this thread: `num_threads` is SentencePieceVocab's)."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        return word_detokenize([self.itos[i] for i in self.strip_specials(ids)])

    def to_state(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.itos)}

    def save(self, path: str | Path) -> None:
        """One token a line, in id order."""
        write_text(path, "\n".join(self.itos) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except OSError as e:
            raise DataError(f"{path}: cannot read vocabulary ({e.strerror})") from None
        return cls([t for t in lines if t != ""] if lines[-1] == "" else lines)


class SentencePieceVocab(_Specials):
    """A SentencePiece model (unigram or BPE) whose pad/unk/bos/eos ids are 0/1/2/3."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.model_proto)
        except Exception:
            raise DataError("not a SentencePiece model (the file or checkpoint entry is corrupt)") from None
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (
            PAD_IDX,
            UNK_IDX,
            BOS_IDX,
            EOS_IDX,
        ):
            raise DataError("SentencePiece model must use pad=0 unk=1 bos=2 eos=3; retrain it with torchlingo")

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
        input_sentence_size: int = 2_000_000,
    ) -> SentencePieceVocab:
        """Train on sentences in memory; on a small corpus the vocabulary may come out smaller than `vocab_size`.
        SentencePiece trains on a random `input_sentence_size` of them when given more."""
        import sentencepiece as spm

        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter([t for t in texts if t.strip()]),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                hard_vocab_limit=False,
                character_coverage=character_coverage,
                pad_id=PAD_IDX,
                unk_id=UNK_IDX,
                bos_id=BOS_IDX,
                eos_id=EOS_IDX,
                input_sentence_size=input_sentence_size,
                shuffle_input_sentence=True,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as e:  # sentencepiece's trainer reports every problem as a RuntimeError
            raise _training_error(e, vocab_size) from None
        return cls(model.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> SentencePieceVocab:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise DataError(f"{path}: cannot read SentencePiece model ({e.strerror})") from None
        try:
            return cls(data)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None

    def save(self, path: str | Path) -> None:
        write_bytes(path, self.model_proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_many(self, texts: list[str], num_threads: int = -1) -> list[list[int]]:
        """Encode each text, in `num_threads` threads (-1: one per core)."""
        return self.sp.encode(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode(self.strip_specials(ids))

    def to_state(self) -> dict:
        return {"kind": self.kind, "model": self.model_proto}


_TOO_FEW = re.compile(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)")


def _training_error(e: RuntimeError, vocab_size: int) -> Exception:
    """A one-line error for SentencePiece's failure; a too small vocab_size says the minimum that trainer printed."""
    needed = _TOO_FEW.search(str(e))
    if needed:
        return ConfigError(
            f"vocab_size: {vocab_size} is too small for the training text: SentencePiece needs at least "
            f"{needed.group(1)} (a piece for each of its characters, plus the special pieces); "
            f"set vocab_size to {needed.group(1)} or more"
        )
    return DataError(f"cannot train the SentencePiece model ({first_line(e)})")


def vocab_hash(vocab: Vocab | SentencePieceVocab) -> str:
    """SHA-256 of what a vocabulary maps (the token list, or the SentencePiece model): equal hashes, equal ids."""
    state = vocab.to_state()
    data = state["model"] if state["kind"] == "sentencepiece" else "\n".join(state["tokens"]).encode("utf-8")
    return hashlib.sha256(state["kind"].encode() + b"\0" + bytes(data)).hexdigest()


def vocab_from_state(state: dict) -> Vocab | SentencePieceVocab:
    """Rebuild a vocabulary stored with `to_state()` (e.g. inside a checkpoint)."""
    if state.get("kind") == "word":
        return Vocab(state["tokens"])
    if state.get("kind") == "sentencepiece":
        return SentencePieceVocab(state["model"])
    raise DataError(f"unknown vocabulary kind {state.get('kind')!r}")


def load_vocab(path: str | Path) -> Vocab | SentencePieceVocab:
    """Load `*.model` as SentencePiece, anything else as a word list."""
    return SentencePieceVocab.load(path) if str(path).endswith(".model") else Vocab.load(path)
