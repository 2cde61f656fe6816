"""Checkpoints: one format for resuming, translating and averaging; written atomically, loaded weights-only.

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so `torch.load(weights_only=True)`
reads it and a file crafted to run code is refused instead of executed.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, first_line
from .files import atomic_write

FORMAT_VERSION = 1
log = logging.getLogger("torchlingo")


def previous_path(path: str | Path) -> Path:
    """Where `save_checkpoint(..., keep_previous=True)` keeps the file it replaced: last.pt -> last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = False) -> Path:
    """Write `state` atomically (`files.atomic_write`): a crash at any moment leaves either the previous file or the
    new one, never a half-written `path`.

    `keep_previous` first hard-links the current `path` to `previous_path(path)` (one more readable file for
    `find_resumable` should `path` ever be damaged); `path` itself exists at every moment.
    """
    path = Path(path)
    keep = (lambda: _link_previous(path)) if keep_previous and path.is_file() else None
    try:
        with atomic_write(path, "wb", before_replace=keep) as f:
            writer = _Writer(f)
            try:
                torch.save({"format_version": FORMAT_VERSION, **state}, writer)
            except RuntimeError as e:  # torch turns a failed write (disk full) into an opaque RuntimeError
                raise writer.error or OSError(_reason(e)) from None
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({e.strerror or e}); the previous file is intact"
        ) from None
    return path


class _Writer:
    """The file torch.save writes to, remembering the OSError (ENOSPC, EFBIG, EIO) that torch would hide."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def _link_previous(path: Path) -> None:
    """previous_path(path) becomes the current `path` (a hard link, atomically renamed into place; a copy-free
    rename where links are unsupported, leaving a moment without `path` that `find_resumable` covers)."""
    prev = previous_path(path)
    link = prev.with_name(f".{prev.name}.link.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, prev)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, prev)


def check_writable(directory: str | Path) -> Path:
    """Create `directory` and prove a file can be written there, so a bad run directory fails at start-up."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise CheckpointError(
            f"{directory}: cannot write checkpoints there ({e.strerror or e}); "
            "set tensorboard_dir / experiment_name to a writable place"
        ) from None
    for stale in directory.glob(".*.tmp"):  # left by a run killed mid-write; never a checkpoint
        stale.unlink(missing_ok=True)
    return directory


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; any problem becomes a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    _check_crc(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(str(e))
        if any(word in reason for word in ("GLOBAL", "global", "class", "reduce", "BUILD")):
            raise CheckpointError(
                f"{path}: refused, the file holds pickled objects that could run code "
                f"(only tensors and plain values are loaded; {reason})"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint, or not a checkpoint ({reason})") from None
    except Exception as e:  # RuntimeError, EOFError, struct.error, ...: whatever a damaged file makes torch raise
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_reason(e)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a torchlingo checkpoint (no model weights)")
    return state


def find_resumable(ckpt_dir: str | Path) -> Path:
    """The checkpoint to resume from: `last.pt` when it loads; otherwise the readable checkpoint with the most
    steps (last.prev.pt, best.pt, ...), with a warning saying which file was damaged and which one is used."""
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.pt"
    problems = []
    try:
        load_checkpoint(last)
        return last
    except CheckpointError as e:
        problems.append(str(e))
    readable = []
    others = sorted(p for p in ckpt_dir.glob("*.pt") if p != last and not p.name.startswith("."))
    for path in others:
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        step = state.get("position", {}).get("step", -1) if isinstance(state.get("position"), dict) else -1
        readable.append((step, path.stat().st_mtime, path))
    if not readable:
        raise CheckpointError(f"{ckpt_dir}: no readable checkpoint to resume from ({'; '.join(problems) or 'empty'})")
    step, _, path = max(readable, key=lambda r: (r[0], r[1]))
    log.warning("%s; resuming from %s (step %d), the newest readable checkpoint", problems[0], path, step)
    return path


def _check_crc(path: Path) -> None:
    """torch.save stores a CRC-32 for every record but torch.load never checks them, so a flipped bit in the
    weights would load silently. Verify them (about 0.3 s per 200 MB, less than the load itself)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # not a zip archive, or truncated: torch.load says what is wrong below
    try:
        with archive:
            bad = archive.testzip()
    except Exception as e:  # a damaged record header; zipfile raises several types here
        raise CheckpointError(f"{path}: corrupt checkpoint ({_reason(e)})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch in record {bad})")


def _unpickler_reason(message: str) -> str:
    """The one informative line of torch's long weights-only error ("Unsupported operand 110", "... GLOBAL ...")."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    useful = [
        ln for ln in lines if ln.startswith(("Trying", "Unsupported", "Could not", "Unpickler")) or "GLOBAL" in ln
    ]
    return (useful or lines or ["unreadable pickle"])[0][:200]


def _reason(e: BaseException) -> str:
    return first_line(e).split(". ")[0]  # miniz adds paragraphs of advice after the first sentence


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):
    """(model in eval mode, src_vocab, tgt_vocab, state) from a checkpoint written by training."""
    from .data_processing.vocab import vocab_from_state
    from .models import SimpleTransformer

    state = load_checkpoint(path, map_location)
    try:
        model = SimpleTransformer.from_args(state["model_args"])
        model.load_state_dict(state["model"])
        src_vocab = vocab_from_state(state["src_vocab"]) if state.get("src_vocab") else None
        tgt_vocab = vocab_from_state(state["tgt_vocab"]) if state.get("tgt_vocab") else None
    except (KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint does not match this torchlingo version ({_reason(e)})") from None
    return model.to(map_location).eval(), src_vocab, tgt_vocab, state


def average_checkpoints(paths: list[str | Path]) -> dict[str, Any]:
    """The first checkpoint with its model weights replaced by the mean over all of them."""
    if not paths:
        raise CheckpointError("average_checkpoints: no checkpoints given")
    states = [load_checkpoint(p) for p in paths]
    avg = {}
    for key, value in states[0]["model"].items():
        if not value.is_floating_point():
            avg[key] = value
            continue
        try:
            avg[key] = sum(s["model"][key].double() for s in states).div(len(states)).to(value.dtype)
        except KeyError:
            raise CheckpointError(
                f"average_checkpoints: {key} missing from one of {', '.join(map(str, paths))}"
            ) from None
    return {**states[0], "model": avg}
