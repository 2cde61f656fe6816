"""Atomic file writes: every file torchlingo writes goes to a temporary file beside it, is flushed and fsynced, then
renamed over the target, so a crash or a full disk leaves the old file or the new one, never a half-written one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(
    path: str | Path, mode: str = "wb", before_replace: Callable[[], None] | None = None
) -> Iterator[IO[Any]]:
    """Yield a temporary file beside `path` (opened with `mode`); when the block ends without an error it is flushed,
    fsynced and renamed over `path`. On an error the temporary file is removed and `path` is left as it was.
    `before_replace` runs just before the rename (checkpoints keep their previous version with it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes the file private (0600); a plain open() would not
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permissions `path` gets: those of the file it replaces, else what open() would give (0666 less umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (Linux); elsewhere the one seen at import."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


_UMASK_AT_IMPORT = os.umask(0o022)
os.umask(_UMASK_AT_IMPORT)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_lines(path: str | Path, lines: list[str]) -> Path:
    """One line each, atomically."""
    return write_text(path, "".join(line + "\n" for line in lines))


def write_json(path: str | Path, data: dict) -> Path:
    """Indented UTF-8 JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside `directory` durable (POSIX); a no-op where directories cannot be opened."""
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
