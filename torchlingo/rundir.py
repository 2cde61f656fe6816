"""The run directory, tensorboard_dir/experiment_name: what may be one, who may write it, and what may be deleted.

- `check_run_name`: experiment_name is one plain directory name, so a run can neither leave tensorboard_dir
  (`../x`) nor be tensorboard_dir itself (`.`) and take the other runs with it on `--overwrite`.
- `RunLock`: one process at a time per run directory. An advisory `fcntl.flock` on `torchlingo.lock`, which also
  holds the owner's pid, host and start time for the error the next process prints. The kernel drops a flock when
  its process ends in any way (SIGKILL included), so a lock left by a dead run never blocks the next one.
- `prepare`: checks the directory fits the request (a new run, `--resume`, `--overwrite`) while holding the lock;
  `--overwrite` only ever deletes a directory that holds a torchlingo run (`is_run_dir`).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, TorchlingoError, first_line

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("torchlingo")

LOCK_NAME = "torchlingo.lock"  # the lock file; written first by every run, so it also marks the directory as a run
# What a run that got anywhere leaves behind; a new run refuses to write over these (a run that stopped before its
# first checkpoint left nothing worth keeping, and is started over).
RUN_MARKERS = ("checkpoints", "metrics.json")


def tokenizer_files(config: Config) -> tuple[str, str]:
    """File names of the source and target tokenizer in the run directory (the same file for a joint model)."""
    if config.tokenizer == "word":
        return "src_vocab.txt", "tgt_vocab.txt"
    if config.joint_vocab:
        return "spm.model", "spm.model"
    return "src_spm.model", "tgt_spm.model"


def check_run_name(name: str) -> None:
    """experiment_name must be one directory name inside tensorboard_dir: not `.`, `..`, a path, or empty."""
    separators = {s for s in ("/", "\\", os.sep, os.altsep) if s}
    if name in (".", "..") or any(s in name for s in separators) or "\0" in name or not name.strip():
        raise ConfigError(
            f"experiment_name: {name!r} is not a plain directory name; the run directory is "
            "tensorboard_dir/experiment_name, so the name may not be '.' or '..' or contain '/' or '\\' "
            "(set tensorboard_dir for the parent folder)"
        )


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a torchlingo run: its lock file, or (a run from before the lock file, or one that
    `train_model` wrote without the CLI) checkpoints/ next to config.yaml or TensorBoard events."""
    if (path / LOCK_NAME).is_file():
        return True
    return (path / "checkpoints").is_dir() and (
        (path / "config.yaml").is_file() or any(path.glob("events.out.tfevents.*"))
    )


class RunLock:
    """`with RunLock(run_dir):` holds the run directory for this process; a second process gets a one-line error
    naming the holder. Not re-entrant: a second lock on the same directory fails in the same process too."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.tried = False

    def acquire(self) -> RunLock:
        import fcntl

        self.tried = True
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise TorchlingoError(
                f"{self.run_dir}: cannot create the run directory's lock file ({e.strerror or e}); "
                "set tensorboard_dir / experiment_name to a writable place"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _describe_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise TorchlingoError(
                    f"{self.run_dir}: in use by another torchlingo process ({holder}); wait for it to end or stop "
                    "it, or choose another experiment_name (--set experiment_name=NAME)"
                ) from None
            log.warning("%s: cannot lock (%s); not protected against a second process", self.path, first_line(e))
            return self
        self.fd = fd
        self._write_holder(fd)
        return self

    def _write_holder(self, fd: int) -> None:
        # Rewritten in place, not atomically: a rename would swap the inode that the lock is held on.
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": sys.argv[:8]}
        data = (json.dumps(info) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as e:
            log.warning("%s: cannot record the lock holder (%s)", self.path, first_line(e))

    def release(self) -> None:
        """Drop the lock; the file stays (it marks the directory as a run and says who held it last)."""
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None
        self.tried = False

    def __enter__(self) -> RunLock:
        return self if self.tried else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown: it is still starting"


def prepare(config: Config, resume: bool, overwrite: bool = False) -> RunLock:
    """Lock the run directory and check it fits the request: a new run needs it free of an earlier run (or
    `overwrite`, which deletes that run), a resume needs a checkpoint. Returns the held lock (release it when done)."""
    run_dir = config.run_dir
    _check_location(config)
    if resume:
        _check_contents(run_dir, resume, overwrite)  # before the lock creates anything; checked again under it
    lock = RunLock(run_dir).acquire()
    try:
        _check_contents(run_dir, resume, overwrite)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_location(config: Config) -> None:
    """The run directory is a directory (or absent), does not contain tensorboard_dir (a symlink could make it), and
    holds nothing but a torchlingo run: its files are what `--overwrite` deletes."""
    run_dir, parent = config.run_dir, Path(config.tensorboard_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TorchlingoError(f"{run_dir}: exists and is not a directory; choose another experiment_name")
    if run_dir.exists() and parent.resolve().is_relative_to(run_dir.resolve()):
        raise TorchlingoError(
            f"{run_dir}: resolves to {run_dir.resolve()}, which contains tensorboard_dir itself; "
            "choose another experiment_name"
        )
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_dir(run_dir):
        raise TorchlingoError(
            f"{run_dir}: holds files that are not a torchlingo run (no {LOCK_NAME}, no config.yaml with "
            "checkpoints/); nothing was changed there; choose another experiment_name (--set experiment_name=NAME) "
            "or move those files away"
        )


def _check_contents(run_dir: Path, resume: bool, overwrite: bool) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not _has_checkpoints(run_dir):
            raise TorchlingoError(f"{last}: no checkpoint to resume from; start the run without --resume")
        return
    existing = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if "checkpoints" in existing and not _has_checkpoints(run_dir):
        existing.remove("checkpoints")  # created by the start-up write check of a run killed before its first save
    if existing and not overwrite:
        hint = "continue it with --resume, " if last.is_file() else ""
        raise TorchlingoError(
            f"{run_dir}: holds an earlier run ({', '.join(existing)}); {hint}choose another "
            "experiment_name (--set experiment_name=NAME), or pass --overwrite to delete it"
        )
    if existing:
        log.info("deleting the earlier run in %s (--overwrite)", run_dir)
        clear(run_dir)
    for stale in run_dir.glob("events.out.tfevents.*"):  # curves of an attempt that never saved a checkpoint
        stale.unlink()


def clear(run_dir: Path) -> None:
    """Delete everything of the run in `run_dir` except its lock file, which this process holds: deleting it would
    let another process lock a new file of the same name."""
    for child in run_dir.iterdir():
        if child.name == LOCK_NAME:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _has_checkpoints(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("*.pt"))
