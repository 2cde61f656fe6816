"""Where torchlingo's progress lines go. The library only logs, on the "torchlingo" logger, and installs no handler
(a NullHandler: an application decides); the command line, or a script that wants the same output, calls
`log_to_stderr()`.

    import torchlingo.logs
    torchlingo.logs.log_to_stderr()     # or logging.basicConfig(level=logging.INFO)
"""

from __future__ import annotations

import logging
import sys

LOGGER = "torchlingo"


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever sys.stderr is at the time of each line (tests and notebooks swap it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ sets it; the stream is looked up at each line
        pass


def log_to_stderr(level: int = logging.INFO) -> logging.Logger:
    """Print torchlingo's log lines (the message alone) to stderr from `level` up, once however often it is called;
    they no longer propagate to the root logger, so they are not printed twice."""
    log = logging.getLogger(LOGGER)
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())
    log.setLevel(level)
    log.propagate = False
    return log
