"""Errors a user can fix: each carries one line naming the file, line or key, and what to do."""


class TorchlingoError(Exception):
    """A user-facing error: one line naming the file, line or key, and what to do."""


class ConfigError(TorchlingoError, ValueError):
    """A config key is unknown, mistyped or out of range."""


class DataError(TorchlingoError, ValueError):
    """A corpus file is missing or malformed."""


class CheckpointError(TorchlingoError):
    """A checkpoint is missing, truncated, corrupt or unsafe."""
