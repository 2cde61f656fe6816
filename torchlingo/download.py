"""Fetch the public Multi30k raw text files (task 1) into a local folder.

Files are served gzip-compressed as ``{split}.{lang}.gz`` under a base address;
each is decompressed to ``dest/{split}.{lang}`` (UTF-8, one sentence per line).
The base address can be overridden (argument or ``TORCHLINGO_MULTI30K_URL``) so
that a mirror, a ``file://`` folder or a loopback server can stand in for GitHub.
"""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable
from pathlib import Path

from torchlingo.errors import TorchlingoError
from torchlingo.files import write_bytes

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
ENV_URL = "TORCHLINGO_MULTI30K_URL"
TIMEOUT_S = 60.0

# What the upstream repository holds, used only to make error messages helpful.
KNOWN_FILES: dict[str, tuple[str, ...]] = {
    "train": ("cs", "de", "en", "fr"),
    "val": ("cs", "de", "en", "fr"),
    "test_2016_flickr": ("cs", "de", "en", "fr"),
    "test_2017_flickr": ("de", "en", "fr"),
    "test_2017_mscoco": ("de", "en", "fr"),
    "test_2018_flickr": ("cs", "de", "en", "fr"),
}


def resolve_base_url(base_url: str | None = None) -> str:
    """Pick the base address: the argument if it differs from the default, else the
    environment override, else the default; always ending with ``/``."""
    if base_url is None or base_url == DEFAULT_BASE_URL:
        base_url = os.environ.get(ENV_URL) or DEFAULT_BASE_URL
    return base_url if base_url.endswith("/") else base_url + "/"


def _known_hint(split: str, lang: str) -> str:
    """A short hint on which upstream files exist when (split, lang) is not one of them."""
    if split not in KNOWN_FILES:
        return f" Known splits: {', '.join(KNOWN_FILES)}."
    if lang not in KNOWN_FILES[split]:
        return f" Upstream '{split}' exists only for: {', '.join(KNOWN_FILES[split])}."
    return ""


def _fetch(url: str, split: str, lang: str, timeout: float) -> bytes:
    """Read the whole resource at ``url``; any failure becomes a TorchlingoError naming it."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        reason = str(exc.reason)
    except (OSError, ValueError) as exc:  # timeouts, bad URLs, connection resets
        reason = str(exc) or type(exc).__name__
    raise TorchlingoError(
        f"could not download {url}: {reason}.{_known_hint(split, lang)} "
        f"Check the split/language names, your network, or set {ENV_URL} to a mirror."
    )


def _decompress(data: bytes, url: str) -> bytes:
    """Gunzip ``data`` and check it is UTF-8 text, so nothing corrupt reaches disk."""
    try:
        text = gzip.decompress(data)
        text.decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise TorchlingoError(
            f"{url} is not gzip-compressed UTF-8 text ({exc}); delete any partial "
            "download and retry, or check the mirror."
        ) from None
    return text


def _count_lines(path: Path) -> int:
    """Number of lines in a text file (a final line without newline counts too)."""
    with path.open("rb") as handle:
        data = handle.read()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def check_parallel(paths: Iterable[Path]) -> None:
    """Raise if the given files (one split, several languages) differ in line count."""
    counts = {path: _count_lines(path) for path in paths}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{p.name}={n}" for p, n in counts.items())
        raise TorchlingoError(
            f"parallel files have different line counts ({listing}); re-download them with overwrite=True."
        )


def download_multi30k(
    dest: str | os.PathLike,
    langs: Iterable[str] = ("de", "en"),
    splits: Iterable[str] = ("train", "val", "test_2016_flickr"),
    base_url: str = DEFAULT_BASE_URL,
    overwrite: bool = False,
    timeout: float = TIMEOUT_S,
) -> list[Path]:
    """Download and decompress ``{split}.{lang}.gz`` for every split and language.

    Existing files are kept unless ``overwrite``. Returns the paths of all requested
    files, in split-major order. Raises TorchlingoError on any failed download or if
    the files of one split do not have the same number of lines.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = resolve_base_url(base_url)
    langs, splits = tuple(langs), tuple(splits)
    if not langs or not splits:
        raise TorchlingoError("download_multi30k needs at least one language and one split.")
    paths: list[Path] = []
    for split in splits:
        split_paths = []
        for lang in langs:
            target = dest / f"{split}.{lang}"
            if overwrite or not target.exists():
                url = urllib.parse.urljoin(base, f"{split}.{lang}.gz")
                write_bytes(target, _decompress(_fetch(url, split, lang, timeout), url))
            split_paths.append(target)
        check_parallel(split_paths)
        paths.extend(split_paths)
    return paths
