"""Checkpoints: one format for resuming, translating and averaging; written atomically, loaded weights-only.

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so `torch.load(weights_only=True)`
reads it and a file crafted to run code is refused instead of executed.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FORMAT_VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to a temporary file beside `path`, flush and fsync it, then rename it over `path`.

    A crash at any moment leaves either the previous file or the new one, never a half-written `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"{path}: cannot write checkpoint ({e.strerror or e}); the previous file is intact") from None
        raise
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; any problem becomes a one-line CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused, the file holds pickled objects that could run code "
                                  "(only tensors and plain values are loaded)") from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(e)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a torchlingo checkpoint (no model weights)")
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


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
        raise CheckpointError(f"{path}: checkpoint does not match this torchlingo version ({_first_line(e)})") from None
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
            raise CheckpointError(f"average_checkpoints: {key} missing from one of {', '.join(map(str, paths))}") from None
    return {**states[0], "model": avg}
