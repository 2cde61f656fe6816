"""Checkpoints: one format for resuming, translating and averaging; written atomically, loaded weights-only.

A checkpoint is a dict of tensors and plain Python values (no pickled objects), so `torch.load(weights_only=True)`
reads it and a file crafted to run code is refused instead of executed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import torch

from .errors import CheckpointError, TorchlingoError, first_line
from .files import atomic_write

if TYPE_CHECKING:
    from .data_processing.vocab import SentencePieceVocab, Vocab
    from .models import SimpleTransformer

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
                torch.save({"format_version": FORMAT_VERSION, **state}, cast(IO[bytes], writer))  # needs write, flush
            except RuntimeError as e:  # torch turns a failed write (disk full) into an opaque RuntimeError
                raise writer.error or OSError(_reason(e)) from None
    except OSError as e:
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({e.strerror or e}); the previous file is intact"
        ) from None
    return path


class _Writer:
    """The file torch.save writes to, remembering the OSError (ENOSPC, EFBIG, EIO) that torch would hide."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
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
    if path.is_dir():
        raise CheckpointError(
            f"{path}: is a directory, not a checkpoint file (a run's checkpoints are DIR/checkpoints/best.pt "
            "and last.pt)"
        )
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
    _check_format(path, state)
    _drop_unknown_keys(path, state)
    return state


def _check_format(path: Path, state: Any) -> None:
    """torchlingo's own checkpoints are dicts with `format_version` and `model`; a newer format is refused."""
    if not isinstance(state, dict) or "format_version" not in state or not isinstance(state.get("model"), dict):
        if isinstance(state, dict):
            keys = sorted(map(str, state))
            what = f"a dict with keys {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}" if keys else "empty"
        else:
            what = f"a {type(state).__name__}"
        raise CheckpointError(
            f"{path}: not a torchlingo checkpoint ({what}); torchlingo reads the checkpoints its training writes"
        )
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written in checkpoint format {version!r}, newer than this torchlingo reads "
            f"(format {FORMAT_VERSION}); upgrade torchlingo to load it"
        )


_warned_unknown: set[tuple[str, tuple[str, ...]]] = set()


def _drop_unknown_keys(path: Path, state: dict) -> None:
    """Config keys this torchlingo does not know (a later version's) are dropped from the stored config and model
    arguments, with one warning per file."""
    from .config import Config

    known = {f.name for f in dataclasses.fields(Config)}
    unknown: set[str] = set()
    for entry, extra in (("config", ()), ("model_args", ("src_vocab_size", "tgt_vocab_size"))):
        values = state.get(entry)
        if isinstance(values, dict):
            drop = [k for k in values if k not in known and k not in extra]
            unknown.update(map(str, drop))
            state[entry] = {k: v for k, v in values.items() if k not in drop}
    key = (str(path.resolve()), tuple(sorted(unknown)))
    if unknown and key not in _warned_unknown:
        _warned_unknown.add(key)
        log.warning("%s: ignoring settings this torchlingo does not know: %s", path, ", ".join(sorted(unknown)))


def find_resumable(ckpt_dir: str | Path) -> Path:
    """The checkpoint to resume from: `last.pt` when it loads; otherwise the readable checkpoint with the most
    steps (last.prev.pt, best.pt, ...), with a warning saying which file was damaged and which one is used."""
    return load_resumable(ckpt_dir)[0]


def load_resumable(ckpt_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """`find_resumable`'s choice and its state, loaded once (a resume reads its checkpoint's settings, vocabularies
    and data fingerprint before training starts; reading a large checkpoint twice costs seconds)."""
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.pt"
    problems = []
    try:
        return last, load_checkpoint(last)
    except CheckpointError as e:
        problems.append(str(e))
    best: tuple[int, float, Path, dict] | None = None
    others = sorted(p for p in ckpt_dir.glob("*.pt") if p != last and not p.name.startswith("."))
    for path in others:
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        step = state.get("position", {}).get("step", -1) if isinstance(state.get("position"), dict) else -1
        if best is None or (step, path.stat().st_mtime) > best[:2]:
            best = (step, path.stat().st_mtime, path, state)  # only the newest state stays in memory
        del state
    if best is None:
        raise CheckpointError(f"{ckpt_dir}: no readable checkpoint to resume from ({'; '.join(problems) or 'empty'})")
    step, _, path, state = best
    log.warning("%s; resuming from %s (step %d), the newest readable checkpoint", problems[0], path, step)
    return path, state


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


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[SimpleTransformer, Vocab | SentencePieceVocab | None, Vocab | SentencePieceVocab | None, dict[str, Any]]:
    """(model in eval mode, src_vocab, tgt_vocab, state) from a checkpoint written by training."""
    from .data_processing.vocab import vocab_from_state

    state = load_checkpoint(path, map_location)
    model = _build_model(path, state)
    _check_tensors(path, model.state_dict(), state["model"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: cannot load the model weights ({_reason(e)})") from None
    vocabs = []
    for side in ("src_vocab", "tgt_vocab"):
        try:
            vocabs.append(vocab_from_state(state[side]) if state.get(side) else None)
        except (TorchlingoError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: its {side} is damaged ({first_line(e)})") from None
    for vocab, arg in zip(vocabs, ("src_vocab_size", "tgt_vocab_size")):
        if vocab is not None and len(vocab) != model.args[arg]:
            raise CheckpointError(
                f"{path}: the vocabulary has {len(vocab)} entries but the model was built for "
                f"{arg}={model.args[arg]}; the checkpoint was altered"
            )
    return model.to(map_location).eval(), vocabs[0], vocabs[1], state


def _build_model(path: str | Path, state: dict) -> SimpleTransformer:
    from .models import SimpleTransformer

    args = state.get("model_args")
    if not isinstance(args, dict) or not args:
        raise CheckpointError(f"{path}: holds no model_args, so no model can be built from it")
    args = dict(args)
    try:
        return SimpleTransformer.from_args(args)
    except (TorchlingoError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its model_args do not describe a model ({first_line(e)})") from None


def _check_tensors(path: str | Path, expected: dict, stored: dict) -> None:
    """Name the first tensor that is missing, extra or of another shape than the model its model_args build."""
    missing = [k for k in expected if k not in stored]
    if missing:
        raise CheckpointError(f"{path}: tensor {missing[0]} of the model is missing from the checkpoint")
    extra = [k for k in stored if k not in expected]
    if extra:
        raise CheckpointError(f"{path}: holds tensor {extra[0]}, which the model its model_args describe lacks")
    for key, want in expected.items():
        got = stored[key]
        shape = list(got.shape) if isinstance(got, torch.Tensor) else None
        if shape != list(want.shape):
            raise CheckpointError(
                f"{path}: tensor {key} has shape {shape} in the checkpoint, but the model its model_args describe "
                f"needs {list(want.shape)}; the checkpoint was altered or does not belong to these model_args"
            )


STEP_PREFIX = "step_"


def step_checkpoint_name(step: int) -> str:
    """The name of the checkpoint kept for `step` (`keep_checkpoints`): step_000120.pt."""
    return f"{STEP_PREFIX}{step:06d}.pt"


def step_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The step checkpoints in `ckpt_dir` (step_NNNNNN.pt), oldest step first."""
    found = []
    for path in Path(ckpt_dir).glob(f"{STEP_PREFIX}*.pt"):
        digits = path.stem[len(STEP_PREFIX) :]
        if digits.isdigit():
            found.append((int(digits), path))
    return [path for _, path in sorted(found)]


def prune_step_checkpoints(ckpt_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest step checkpoints; returns the deleted paths."""
    old = step_checkpoints(ckpt_dir)[:-keep] if keep > 0 else step_checkpoints(ckpt_dir)
    for path in old:
        path.unlink(missing_ok=True)
    return old


def last_checkpoints(run_dir: str | Path, n: int) -> list[Path]:
    """The `n` newest step checkpoints of a run directory (or of its checkpoints/ folder), oldest first."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    if not ckpt_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a run directory (no checkpoints/ folder)")
    found = step_checkpoints(ckpt_dir)
    if len(found) < n:
        raise CheckpointError(
            f"{ckpt_dir}: holds {len(found)} step checkpoint(s), fewer than the {n} asked for; "
            "train with keep_checkpoints: N to keep them"
        )
    return found[-n:]


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The last checkpoint given, with its model weights replaced by the mean over all of them (in float64).

    The checkpoints must describe the same model (model_args, tensor names and shapes) and the same vocabularies;
    otherwise a one-line CheckpointError names the first that differs. The result translates like any checkpoint
    (its optimizer state is dropped: it is no point to resume from)."""
    if not paths:
        raise CheckpointError("average_checkpoints: no checkpoints given")
    states = [load_checkpoint(p) for p in paths]
    first, base = Path(paths[0]), states[0]
    for path, state in zip(paths[1:], states[1:]):
        _check_same_model(first, base, Path(path), state)
    sums: dict[str, torch.Tensor] = {}
    for state in states:
        for key, value in state["model"].items():
            if value.is_floating_point():
                sums[key] = sums[key] + value.double() if key in sums else value.double()
    model = {
        key: sums[key].div(len(states)).to(value.dtype) if value.is_floating_point() else value
        for key, value in states[-1]["model"].items()
    }
    kept = {k: v for k, v in states[-1].items() if k not in ("optimizer", "scheduler", "scaler", "ranks")}
    return {**kept, "model": model, "averaged_from": [str(p) for p in paths]}


def _check_same_model(first: Path, a: dict, path: Path, b: dict) -> None:
    """One line naming what differs between checkpoint `path` and `first`, if anything does."""
    if a.get("model_args") != b.get("model_args"):
        args_a, args_b = a.get("model_args") or {}, b.get("model_args") or {}
        key = next((k for k in sorted(set(args_a) | set(args_b)) if args_a.get(k) != args_b.get(k)), "model_args")
        raise CheckpointError(
            f"{path}: cannot average with {first}: model {key} is {args_b.get(key)!r} there but {args_a.get(key)!r} "
            "here; only checkpoints of one model can be averaged"
        )
    for side in ("src_vocab", "tgt_vocab"):
        if a.get(side) != b.get(side):
            raise CheckpointError(
                f"{path}: cannot average with {first}: its {side.replace('_', ' ')}ulary differs; "
                "only checkpoints of one run (one tokenizer) can be averaged"
            )
    ma, mb = a["model"], b["model"]
    for key in sorted(set(ma) | set(mb)):
        shape_a = list(ma[key].shape) if key in ma else None
        shape_b = list(mb[key].shape) if key in mb else None
        if shape_a != shape_b:
            raise CheckpointError(
                f"{path}: cannot average with {first}: tensor {key} has shape {shape_b} there but {shape_a} here"
            )
