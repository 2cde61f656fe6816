"""Reading a corpus file: streamed line by line (a FIFO or a file larger than memory works), checked for being UTF-8
text at all, and fingerprinted (size, line count, SHA-256) on the way, so a resume can tell whether it changed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

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
    after every character).

    `span` = (start, stop, lines before start) reads only the bytes [start, stop) of the file, which must begin at a
    line start, numbering its lines from there (a worker of `torchlingo prepare` reads its part of the corpus)."""

    def __init__(self, path: str | Path, span: tuple[int, int, int] | None = None):
        self.path = Path(path)
        self.size = self.lines = 0
        self._hash = hashlib.sha256()
        self.span = span
        if span is not None:
            self.lines = span[2]

    def __iter__(self) -> Iterator[bytes]:
        with reading(self.path):
            f = self.path.open("rb")
        with f:
            try:
                yield from self._lines(f)
            except OSError as e:
                raise DataError(f"{self.path}:{self.lines}: cannot read ({e.strerror})") from None

    def _lines(self, f: IO[bytes]) -> Iterator[bytes]:
        if self.span is not None:
            f.seek(self.span[0])
            f = io.BytesIO(f.read(self.span[1] - self.span[0]))
        for raw in f:
            if self.span is None:
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


BLOCK = 1 << 20  # bytes `scan` reads at a time


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Errors of opening or reading `path` as one-line DataErrors that name it."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def scan(path: str | Path, every: int = 0) -> tuple[dict, list[int]]:
    """A file's fingerprint (as `LineReader.fingerprint`, without splitting it into lines in Python: block by block,
    newlines counted in C, the hashing without the GIL) and, when `every` > 0, the byte offsets of lines 0, every,
    2 every, ... and of the end: where `torchlingo prepare` cuts the corpus into line-aligned parts for its workers."""
    path = Path(path)
    digest, size, newlines, last, offsets = hashlib.sha256(), 0, 0, b"", [0]
    with reading(path), path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
            if every:
                _cut_points(block, size, newlines, every, offsets)
            newlines += block.count(b"\n")
            size, last = size + len(block), block[-1:]
    lines = newlines + (1 if last not in (b"", b"\n") else 0)
    if every and offsets[-1] != size:
        offsets.append(size)
    return {"file": path.name, "bytes": size, "lines": lines, "sha256": digest.hexdigest()}, offsets


def _cut_points(block: bytes, base: int, newlines: int, every: int, offsets: list[int]) -> None:
    """Append the offsets of the line starts numbered a multiple of `every` that follow this block's newlines."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)  # the block's newlines; `newlines` before it
    first = -newlines % every or every  # 1-based index in the block of the first newline ending such a line
    offsets.extend((base + ends[first - 1 :: every] + 1).tolist())


def scan_all(paths: Sequence[tuple[str | Path, int]]) -> list[tuple[dict, list[int]]]:
    """`scan` of several files at once, one thread each (the hashing releases the GIL)."""
    results: list = [None] * len(paths)
    errors: list = []

    def one(i: int, path: str | Path, every: int) -> None:
        try:
            results[i] = scan(path, every)
        except DataError as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i, p, e)) for i, (p, e) in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
