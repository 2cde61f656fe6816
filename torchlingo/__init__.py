"""torchlingo: readable, fast sequence-to-sequence translation on PyTorch.

The package logs progress on the "torchlingo" logger and installs no handler of its own (a NullHandler): the
`torchlingo` command prints the lines to stderr; a script can call `torchlingo.logs.log_to_stderr()` (or configure
logging as it likes) for the same.
"""

import logging as _logging
import typing as _typing

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it (dynamic = ["version"])

from .config import Config  # noqa: E402
from .errors import TorchlingoError  # noqa: E402

if _typing.TYPE_CHECKING:
    from .translator import Translator

__all__ = ["Config", "TorchlingoError", "Translator", "__version__"]

_logging.getLogger("torchlingo").addHandler(_logging.NullHandler())


def __getattr__(name: str) -> "type[Translator]":
    """`torchlingo.Translator`, imported when first asked for (it brings in torch; the CLI's --help does not)."""
    if name == "Translator":
        from .translator import Translator

        return Translator
    raise AttributeError(f"module 'torchlingo' has no attribute {name!r}")
