"""The documentation site builds with `mkdocs build --strict` (material theme, API pages from the docstrings by
mkdocstrings): a broken link, a page missing from the nav or a docstring mkdocstrings cannot render fails it.
Offline: nothing is downloaded while building."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLIC = ("config", "data_processing", "models", "training", "translator", "search", "reference", "checkpoint")


def _missing() -> list[str]:
    """The docs tools (the `dev` and `docs` extras) that are not installed."""
    names = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
    return [name for name in names if importlib.util.find_spec(name) is None]


MISSING = _missing()


def test_every_public_module_has_an_api_page():
    for module in (*PUBLIC, "evaluation"):
        page = (REPO / "docs" / "api" / f"{module}.md").read_text()
        assert f"::: torchlingo.{module}\n" in page, module


def test_the_seed_tutorial_text_is_gone():
    """The docs are ours: the tutorial pages the project started from are not quoted in them."""
    text = "\n".join(p.read_text() for p in (REPO / "docs").rglob("*.md"))
    for phrase in ("This page explains how to train NMT models effectively", "```mermaid", "## Basic Training Loop"):
        assert phrase not in text


@pytest.mark.skipif(bool(MISSING), reason=f"mkdocs, mkdocs-material or mkdocstrings[python] not installed: {MISSING}")
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = tmp_path / "site"
    assert (site / "reliability" / "index.html").is_file() and (site / "distributed" / "index.html").is_file()
    train_model = (site / "api" / "training" / "index.html").read_text()
    assert re.search(r'id="torchlingo\.training\.train_model"', train_model)  # rendered from the docstrings
