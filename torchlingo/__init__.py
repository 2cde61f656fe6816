"""torchlingo: readable, fast sequence-to-sequence translation on PyTorch."""

__version__ = "0.1.0"

from .config import Config  # noqa: E402
from .errors import TorchlingoError  # noqa: E402

__all__ = ["Config", "TorchlingoError", "__version__"]

import logging as _logging  # noqa: E402

# Progress lines go to stderr unless the application configures logging itself.
_log = _logging.getLogger("torchlingo")
if not _log.handlers:
    _handler = _logging.StreamHandler()
    _handler.setFormatter(_logging.Formatter("%(message)s"))
    _log.addHandler(_handler)
    _log.setLevel(_logging.INFO)
    _log.propagate = False
