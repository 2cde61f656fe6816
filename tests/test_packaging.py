"""Library manners: no log handler installed at import, one version, the license file, type information, and
`Translator` at the top of the package."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import torchlingo
from torchlingo.logs import log_to_stderr

REPO = Path(__file__).resolve().parents[1]


def test_import_installs_only_a_null_handler():
    """`import torchlingo` in a fresh interpreter leaves logging to the application."""
    code = (
        "import logging, torchlingo\n"
        "log = logging.getLogger('torchlingo')\n"
        "print([type(h).__name__ for h in log.handlers], log.level, log.propagate)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.split() == ["['NullHandler']", "0", "True"]


def test_log_to_stderr_prints_each_line_once(capsys):
    log = logging.getLogger("torchlingo")
    saved = log.level, log.propagate, list(log.handlers)
    try:
        log_to_stderr()
        log_to_stderr()  # idempotent: one handler
        log.info("hello %d", 1)
        assert capsys.readouterr().err == "hello 1\n"
    finally:
        log.handlers[:] = saved[2]
        log.setLevel(saved[0])
        log.propagate = saved[1]


def test_version_license_and_types():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "torchlingo.__version__"}
    assert project["project"]["license"] == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert "License :: OSI Approved :: MIT License" in project["project"]["classifiers"]
    assert (REPO / "torchlingo" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["torchlingo"]
    proc = subprocess.run(
        [sys.executable, "-m", "torchlingo", "--version"], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert proc.stdout.strip() == f"torchlingo {torchlingo.__version__}"


def test_translator_is_exported():
    from torchlingo.translator import Translator

    assert torchlingo.Translator is Translator and "Translator" in torchlingo.__all__
