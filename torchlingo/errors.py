"""Errors a user can fix: each carries one line naming the file, line or key, and what to do."""


class TorchlingoError(Exception):
    """A user-facing error: one line naming the file, line or key, and what to do."""


class ConfigError(TorchlingoError, ValueError):
    """A config key is unknown, mistyped or out of range."""


class DataError(TorchlingoError, ValueError):
    """A corpus file is missing or malformed."""


class CheckpointError(TorchlingoError):
    """A checkpoint is missing, truncated, corrupt or unsafe."""


class TrainingError(TorchlingoError):
    """Training cannot go on (e.g. the loss stayed NaN or infinite); the last good checkpoint is kept."""


class TrainingInterrupted(TorchlingoError):
    """SIGINT or SIGTERM stopped training after saving last.pt; `exit_code` is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's text, cut to `limit` characters: what a one-line message quotes of a library's
    multi-paragraph exception (PyYAML, torch, miniz). The exception's type name when it has no text."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else "unknown problem"
    return lines[0][:limit]
