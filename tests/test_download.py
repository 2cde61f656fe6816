"""Offline tests of the Multi30k downloader against a fake mirror (file:// and loopback HTTP)."""

import functools
import gzip
import http.server
import threading

import pytest

from torchlingo.download import DEFAULT_BASE_URL, ENV_URL, download_multi30k, resolve_base_url
from torchlingo.errors import TorchlingoError

FAKE = {
    "train.en": "A dog runs.\nTwo men play chess.\nA café in Zürich.\n",
    "train.de": "Ein Hund rennt.\nZwei Männer spielen Schach.\nEin Café in Zürich.\n",
    "val.en": "A cat sleeps.\n",
    "val.de": "Eine Katze schläft.\n",
}


@pytest.fixture
def mirror(tmp_path):
    """A folder holding gzipped fake Multi30k files."""
    root = tmp_path / "mirror"
    root.mkdir()
    for name, text in FAKE.items():
        (root / f"{name}.gz").write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    return root


@pytest.fixture
def http_mirror(mirror):
    """Serve the mirror over http://127.0.0.1 on an ephemeral port, in a thread."""
    handler = functools.partial(QuietHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that does not log every request to stderr."""

    def log_message(self, format, *args):
        pass


def test_file_url_download_decompresses(mirror, tmp_path):
    dest = tmp_path / "out"
    paths = download_multi30k(dest, splits=("train", "val"), base_url=mirror.as_uri())
    assert [p.name for p in paths] == ["train.de", "train.en", "val.de", "val.en"]
    for path in paths:
        assert path.read_text(encoding="utf-8") == FAKE[path.name]
    assert not list(dest.glob("*.tmp")), "temporary files must not be left behind"


def test_http_download(http_mirror, tmp_path):
    paths = download_multi30k(tmp_path / "out", langs=("en",), splits=("train",), base_url=http_mirror)
    assert paths == [tmp_path / "out" / "train.en"]
    assert paths[0].read_text(encoding="utf-8") == FAKE["train.en"]


def test_base_url_without_trailing_slash(mirror, tmp_path):
    paths = download_multi30k(tmp_path, langs=("de",), splits=("val",), base_url=mirror.as_uri().rstrip("/"))
    assert paths[0].read_text(encoding="utf-8") == FAKE["val.de"]


def test_environment_override(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_URL, mirror.as_uri())
    assert resolve_base_url() == mirror.as_uri() + "/"
    assert resolve_base_url("http://example.invalid/x") == "http://example.invalid/x/"
    paths = download_multi30k(tmp_path / "out", splits=("val",))
    assert paths[1].read_text(encoding="utf-8") == FAKE["val.en"]


def test_default_base_url(monkeypatch):
    monkeypatch.delenv(ENV_URL, raising=False)
    assert resolve_base_url() == DEFAULT_BASE_URL
    assert DEFAULT_BASE_URL.endswith("/multi30k/dataset/master/data/task1/raw/")


def test_existing_files_are_skipped_unless_overwrite(mirror, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "val.en").write_text("kept\n", encoding="utf-8")
    download_multi30k(dest, splits=("val",), base_url=mirror.as_uri())
    assert (dest / "val.en").read_text(encoding="utf-8") == "kept\n"
    assert (dest / "val.de").read_text(encoding="utf-8") == FAKE["val.de"]
    download_multi30k(dest, splits=("val",), base_url=mirror.as_uri(), overwrite=True)
    assert (dest / "val.en").read_text(encoding="utf-8") == FAKE["val.en"]


def test_missing_file_error_names_url(http_mirror, mirror, tmp_path):
    with pytest.raises(TorchlingoError) as info:
        download_multi30k(tmp_path, langs=("en", "cs"), splits=("test_2017_flickr",), base_url=http_mirror)
    message = str(info.value)
    assert f"{http_mirror}test_2017_flickr.en.gz" in message and "404" in message
    with pytest.raises(TorchlingoError, match=r"train\.cs\.gz"):
        download_multi30k(tmp_path, langs=("cs",), splits=("train",), base_url=mirror.as_uri())
    assert not (tmp_path / "train.cs").exists()


def test_upstream_hint_for_unknown_language(mirror, tmp_path):
    with pytest.raises(TorchlingoError, match="exists only for: de, en, fr"):
        download_multi30k(tmp_path, langs=("cs",), splits=("test_2017_mscoco",), base_url=mirror.as_uri())


def test_mismatched_line_counts(mirror, tmp_path):
    (mirror / "val.de.gz").write_bytes(gzip.compress(b"eins\nzwei\n"))
    with pytest.raises(TorchlingoError, match=r"val\.de=2, val\.en=1"):
        download_multi30k(tmp_path / "out", splits=("val",), base_url=mirror.as_uri())


def test_corrupt_gzip(mirror, tmp_path):
    (mirror / "val.en.gz").write_bytes(b"not gzip at all")
    with pytest.raises(TorchlingoError, match=r"val\.en\.gz is not gzip"):
        download_multi30k(tmp_path / "out", langs=("en",), splits=("val",), base_url=mirror.as_uri())
    assert not (tmp_path / "out" / "val.en").exists()
