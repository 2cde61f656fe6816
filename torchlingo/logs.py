"""Where torchlingo's progress lines go. The library only logs, on the "torchlingo" logger, and installs no handler
(a NullHandler: an application decides); the command line, or a script that wants the same output, calls
`log_to_stderr()`. `torchlingo train` also keeps the lines in the run directory's `train.log` (`log_to_file`).

    import torchlingo.logs
    torchlingo.logs.log_to_stderr()     # or logging.basicConfig(level=logging.INFO)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOGGER = "torchlingo"
TRAIN_LOG = "train.log"  # in the run directory
FILE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# A record logged with extra={ON_CONSOLE: True} is already on the console in another form (the loss in the progress
# bar, the error line the CLI prints): the stderr handler leaves it out, a file keeps it.
ON_CONSOLE = "torchlingo_on_console"


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever sys.stderr is at the time of each line (tests and notebooks swap it).
    While a tqdm progress bar is shown a line goes through `tqdm.write`, which prints it above the bar."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(lambda record: not getattr(record, ON_CONSOLE, False))

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:  # StreamHandler.__init__ sets it; the stream is looked up at each line
        pass

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # no bar can be shown before tqdm is imported
        if tqdm is None or not getattr(tqdm, "_instances", None):
            super().emit(record)
            return
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def log_to_stderr(level: int = logging.INFO) -> logging.Logger:
    """Print torchlingo's log lines (the message alone) to stderr from `level` up, once however often it is called;
    they no longer propagate to the root logger, so they are not printed twice."""
    log = logging.getLogger(LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.setLevel(level)
    log.propagate = False
    return log


class LineFileHandler(logging.Handler):
    """Appends each record to a file as whole lines: one `os.write` of the formatted record and its newline on a
    descriptor opened with O_APPEND, nothing buffered, so a crash loses at most the line being written."""

    def __init__(self, path: str | Path, append: bool = True):
        super().__init__()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self.path = Path(path)
        self.fd: int | None = os.open(self.path, flags, 0o666)  # 0666 less the umask, as open() would give

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            while data and self.fd is not None:
                data = data[os.write(self.fd, data) :]
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        super().close()


@contextlib.contextmanager
def log_to_file(path: str | Path, append: bool = True) -> Iterator[LineFileHandler]:
    """Also write torchlingo's log lines, with a timestamp and level, to `path` while the block runs (a new file
    unless `append`); the handler is removed and closed at the end, so a second run in the same process does not
    write its lines twice. Which lines: the logger's level decides (`log_to_stderr` sets INFO). An exception that
    ends the block is noted in the file (`stopped: ...`), so the log says how the run ended."""
    handler = LineFileHandler(path, append)
    handler.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    log = logging.getLogger(LOGGER)
    log.addHandler(handler)
    try:
        yield handler
    except BaseException as e:
        from .errors import TorchlingoError, first_line

        text = first_line(e, limit=1000) if isinstance(e, TorchlingoError) else f"{type(e).__name__}: {e}"
        log.error("stopped: %s", text.rstrip(": "), extra={ON_CONSOLE: True})  # the console has the CLI's line
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
