class TorchlingoError(Exception):
    """A user-facing error: one line naming the file, line or key, and what to do."""
