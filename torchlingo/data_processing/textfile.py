"""Reading a corpus file: streamed line by line (a FIFO or a file larger than memory works), checked for being UTF-8
text at all, and fingerprinted (size, line count, SHA-256) on the way, so a resume can tell whether it changed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError

UTF8_BOM = b"\xef\xbb\xbf"
# Byte-order marks of the encodings a UTF-8 reader would otherwise take for text (UTF-32 before UTF-16: longer).
OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def not_utf8(path: str | Path, line: int, encoding: str | None = None) -> DataError:
    """The file-level error for a file that is not UTF-8 text (whatever `bad_lines` says)."""
    what = f"{encoding} text" if encoding else "not UTF-8 text (UTF-16 or UTF-32 text, or a binary or damaged file)"
    found = "a byte-order mark" if encoding else f"a NUL byte at line {line}"
    return DataError(
        f"{path}: {what}: found {found}; convert it to UTF-8 (e.g. iconv -f {encoding or 'UTF-16'} -t UTF-8)"
    )


def check_text_start(path: str | Path, start: bytes) -> None:
    """Refuse UTF-16/UTF-32 by their byte-order mark."""
    for bom, encoding in OTHER_BOMS:
        if start.startswith(bom):
            raise not_utf8(path, 1, encoding)


class LineReader:
    """Iterate over the raw lines of a file, without line ends (LF or CRLF) and without a UTF-8 byte-order mark;
    a final newline is optional. After the iteration `fingerprint()` describes what was read.

    A NUL byte, or a UTF-16/UTF-32 byte-order mark, is a file-level DataError: such a file is not UTF-8 text, and
    reading it line by line would turn it into hundreds of wrong sentences (UTF-16 ASCII is valid UTF-8 with a NUL
    after every character)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.size = self.lines = 0
        self._hash = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            raise DataError(f"{self.path}: file not found") from None
        except IsADirectoryError:
            raise DataError(f"{self.path}: is a directory, expected a file") from None
        except OSError as e:
            raise DataError(f"{self.path}: cannot read ({e.strerror})") from None
        with f:
            try:
                yield from self._lines(f)
            except OSError as e:
                raise DataError(f"{self.path}:{self.lines}: cannot read ({e.strerror})") from None

    def _lines(self, f) -> Iterator[bytes]:
        for raw in f:
            self._hash.update(raw)
            self.size += len(raw)
            self.lines += 1
            if self.lines == 1:
                check_text_start(self.path, raw)
                raw = raw.removeprefix(UTF8_BOM)
            if b"\0" in raw:
                raise not_utf8(self.path, self.lines)
            raw = raw.removesuffix(b"\n")
            yield raw.removesuffix(b"\r")

    def fingerprint(self) -> dict:
        """{file, bytes, lines, sha256} of what was read (the name only: a moved corpus is the same corpus)."""
        return {"file": self.path.name, "bytes": self.size, "lines": self.lines, "sha256": self._hash.hexdigest()}
