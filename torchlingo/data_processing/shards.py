"""Prepared shards: a training corpus tokenized once and kept on disk, memory-mapped, for corpora bigger than memory.

A shard directory holds, per side, `src.bin` / `tgt.bin` (every sentence's token ids one after another, uint16
when the vocabulary fits in 16 bits, else int32), `src.off.npy` (int64 offsets of each sentence, one more than
there are sentences, memory-mapped too) and `src.len.npy` (int32 token counts, the one array per side that is read
into memory, for the batch sampler); the tokenizer files; and `manifest.json`, written last: the corpus fingerprint
(as textfile.py makes it), the settings that decide the ids (tokenizer, max_len, ...), the tokenizer hashes, and
the counts of kept and skipped pairs by reason.

This module owns the format: where shards live, their manifest, whether they still fit a corpus and config
(`stale_reason`), and `ShardedDataset`, which reads them with the interface of NMTDataset that training uses.
prepare.py writes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import Config
from ..errors import DataError, first_line
from .dataset import resolve_data_path
from .textfile import scan_all
from .vocab import SentencePieceVocab, Vocab, load_vocab, vocab_hash

if TYPE_CHECKING:
    import numpy.typing as npt

log = logging.getLogger("torchlingo")

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIDES = ("src", "tgt")
# Config keys that decide the token ids of a corpus (with the corpus itself): a change makes the shards stale.
TOKENIZER_KEYS = ("tokenizer", "sp_model_type", "vocab_size", "joint_vocab", "min_freq", "max_vocab_size")
ENCODING_KEYS = ("bad_lines", "max_positions")


def shard_dir(config: Config) -> Path:
    """Where the training data's shards live: `data_dir`, or the run directory's data/."""
    return Path(config.data_dir) if config.data_dir else config.run_dir / "data"


def corpus_fingerprint(config: Config, known: Sequence[dict] = ()) -> list[dict]:
    """The training files' fingerprints (name, bytes, lines, SHA-256), read through once without decoding.

    `known`: the fingerprints a manifest recorded. A file whose name, size and modification time (in ns) are the
    ones recorded is not read again (as git and make trust a file's stat): at 40x Multi30k that is 156 MB hashed
    (0.27 s from the page cache, more from disk) at every start. `torchlingo prepare --force` reads everything again."""
    paths = corpus_paths(resolve_data_path(config.train_file, config.src_lang, config.tgt_lang))
    known = list(known) if len(known) == len(paths) else [{}] * len(paths)
    recorded = [_recorded(p, k) for p, k in zip(paths, known)]
    fresh = iter(scan_all([(p, 0) for p, r in zip(paths, recorded) if not r]))
    return [dict(k) if r else next(fresh)[0] for k, r in zip(known, recorded)]


def file_stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None if it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def trusted_mtime(stat: tuple[int, int] | None) -> int | None:
    """The mtime_ns to record for a file read now (the stat taken before reading it; check_unchanged held it), or
    None if it is too recent to trust: a write within the filesystem's timestamp tick of our read could leave the
    mtime unchanged ("racy git"), so a file modified in the last 2 seconds is always read again."""
    return stat[1] if stat is not None and time.time_ns() - stat[1] > 2 * 10**9 else None


def _recorded(path: Path, known: dict) -> bool:
    """`known` is this file's fingerprint as of now: same name, size and modification time."""
    return known.get("file") == path.name and (known.get("bytes"), known.get("mtime_ns")) == file_stat(path)


def corpus_paths(resolved: Path | tuple[Path, Path]) -> tuple[Path, ...]:
    return resolved if isinstance(resolved, tuple) else (resolved,)


def _content(entry: dict) -> tuple:
    return entry.get("bytes"), entry.get("lines"), entry.get("sha256")


def shard_settings(config: Config) -> dict:
    """What decides the ids besides the corpus (the tokenizer's training only matters when it is trained here)."""
    settings = {key: getattr(config, key) for key in TOKENIZER_KEYS + ENCODING_KEYS}
    settings["max_len"] = config.train_max_len
    settings["sp_sample_size"] = config.sp_sample_size if config.tokenizer == "sentencepiece" else None
    return settings


# -- reading -------------------------------------------------------------------------------------------------
def read_manifest(directory: Path) -> dict:
    """The manifest of a shard directory; a missing, unreadable or malformed one is a one-line DataError."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no prepared shards here; run torchlingo prepare CONFIG") from None
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path}: not a readable shard manifest ({first_line(e)}); delete {directory} and prepare it again"
        ) from None
    needed = ("format", "pairs", "dtype", "corpus", "settings", "tokenizers", "tokens")
    if not isinstance(manifest, dict) or any(k not in manifest for k in needed):
        raise DataError(f"{path}: not a shard manifest (missing keys); delete {directory} and prepare it again")
    if manifest["format"] != FORMAT_VERSION:
        raise DataError(
            f"{path}: shard format {manifest['format']!r}, this torchlingo reads {FORMAT_VERSION}; prepare it again"
        )
    if manifest["dtype"] not in ("uint16", "int32"):
        raise DataError(f"{path}: unknown dtype {manifest['dtype']!r}; delete {directory} and prepare it again")
    return manifest


def stale_reason(
    directory: Path,
    config: Config,
    fingerprints: list[dict] | None = None,
    vocabs: Sequence[Vocab | SentencePieceVocab] | None = None,
) -> str | None:
    """Why the shards in `directory` do not fit this corpus and config (None: they do). `vocabs` (a resume's
    tokenizers) must be the ones the shards were encoded with. `fingerprints`: the corpus's, by default
    `corpus_fingerprint` trusting the manifest's stats (without shards the corpus is not read here at all: prepare
    reads it anyway)."""
    if not (directory / MANIFEST).is_file():
        return "no shards yet"
    manifest = read_manifest(directory)
    if fingerprints is None:
        fingerprints = corpus_fingerprint(config, manifest["corpus"])
    if [_content(f) for f in manifest["corpus"]] != [_content(f) for f in fingerprints]:
        return "the corpus changed"
    settings = shard_settings(config)
    if vocabs is not None:  # the tokenizer is given: only the settings that decide which pairs are kept count
        settings = {k: v for k, v in settings.items() if k in ENCODING_KEYS + ("max_len",)}
        if manifest["tokenizers"] != {"src": vocab_hash(vocabs[0]), "tgt": vocab_hash(vocabs[1])}:
            return "other tokenizers"
    elif manifest.get("sample_seed") not in (None, config.seed):
        return f"the tokenizer sample was drawn with seed {manifest['sample_seed']}"
    changed = [k for k, v in settings.items() if manifest["settings"].get(k) != v]
    return f"changed settings: {', '.join(changed)}" if changed else None


class _Side:
    """One side's ids: the `.bin` memory-mapped (opened on first use, again in each DataLoader worker), the
    offsets memory-mapped, the lengths in memory."""

    def __init__(self, directory: Path, side: str, manifest: dict):
        self.bin, self.dtype = directory / f"{side}.bin", np.dtype(manifest["dtype"])
        n, tokens = int(manifest["pairs"]), int(manifest["tokens"][side])
        self.lengths = _load_index(directory / f"{side}.len.npy", n, np.int32, mmap=False)
        self.offsets = _load_index(directory / f"{side}.off.npy", n + 1, np.int64, mmap=True)
        size = _size(self.bin)
        if size != tokens * self.dtype.itemsize or int(self.offsets[-1]) != tokens or int(self.offsets[0]) != 0:
            raise DataError(
                f"{self.bin}: {size} bytes, but the index says {int(self.offsets[-1])} and the manifest {tokens} "
                f"{self.dtype} ids ({tokens * self.dtype.itemsize} bytes): truncated or corrupt; delete "
                f"{directory} and prepare it again"
            )
        for start in range(0, n, 1 << 20):  # offsets and lengths must agree (in chunks: bounded memory)
            stop = min(n, start + (1 << 20))
            if not np.array_equal(np.diff(self.offsets[start : stop + 1]), self.lengths[start:stop]):
                raise DataError(
                    f"{directory / (side + '.off.npy')}: offsets do not match {side}.len.npy; delete {directory} "
                    "and prepare it again"
                )
        self.ids: np.ndarray | None = None

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.ids is None:
            self.ids = np.memmap(self.bin, dtype=self.dtype, mode="r") if _size(self.bin) else np.zeros(0, self.dtype)
        return torch.from_numpy(self.ids[int(self.offsets[i]) : int(self.offsets[i + 1])].astype(np.int64))

    def __getstate__(self) -> dict:  # a DataLoader worker maps the file itself rather than being sent its bytes
        return {**self.__dict__, "ids": None}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise DataError(f"{path}: cannot read shard ({e.strerror}); prepare it again") from None


def _load_index(path: Path, n: int, dtype: npt.DTypeLike, mmap: bool) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable shard index ({first_line(e)}); prepare it again") from None
    if array.shape != (n,) or array.dtype != dtype:
        raise DataError(
            f"{path}: holds {array.shape} {array.dtype}, expected ({n},) {np.dtype(dtype)}: truncated or corrupt; "
            "prepare it again"
        )
    return array


class ShardedDataset(Dataset):
    """Prepared shards as (src_ids, tgt_ids) LongTensors without BOS/EOS, like NMTDataset, read from memory-mapped
    files: only `src_lengths` and `tgt_lengths` (numpy arrays) are in memory. `fingerprint`, `skipped` and the
    vocabularies are the manifest's and the directory's."""

    def __init__(self, directory: str | Path, config: Config | None = None):
        self.directory = directory = Path(directory)
        self.config = config or Config()
        self.manifest = manifest = read_manifest(directory)
        # As NMTDataset's (what checkpoints record): the manifest's mtime_ns only serves corpus_fingerprint.
        self.fingerprint = [{k: v for k, v in f.items() if k != "mtime_ns"} for f in manifest["corpus"]]
        self.skipped = manifest.get("skipped", {})
        self.source = manifest.get("source", str(directory))
        self.src_vocab, self.tgt_vocab = (
            _load_tokenizer(directory / name, manifest["tokenizers"][side])
            for side, name in zip(SIDES, manifest["tokenizer_files"])
        )
        self._src, self._tgt = (_Side(directory, side, manifest) for side in SIDES)

    def __len__(self) -> int:
        return len(self._src.lengths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._src[i], self._tgt[i]

    @property
    def src_lengths(self) -> np.ndarray:
        return self._src.lengths

    @property
    def tgt_lengths(self) -> np.ndarray:
        return self._tgt.lengths


def _load_tokenizer(path: Path, expected: str) -> Vocab | SentencePieceVocab:
    vocab = load_vocab(path)
    if vocab_hash(vocab) != expected:
        raise DataError(f"{path}: not the tokenizer these shards were encoded with; prepare them again")
    return vocab
