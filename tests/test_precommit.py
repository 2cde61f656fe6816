"""The contributors' pre-commit hooks stay in step with the project: the ruff they run is the ruff the dev extra
pins (so a commit hook and CI never format differently), and the verbatim examples are left alone."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement  # pytest's own dependency
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def hooks() -> dict[str, dict]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    return {repo["repo"]: repo for repo in config["repos"]} | {"exclude": config.get("exclude", "")}


def dev_requirement(name: str) -> Requirement:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (req,) = [Requirement(r) for r in project["optional-dependencies"]["dev"] if Requirement(r).name == name]
    return req


def test_the_ruff_hook_runs_the_ruff_the_dev_extra_pins():
    ruff = hooks()["https://github.com/astral-sh/ruff-pre-commit"]
    version = Version(re.fullmatch(r"v(\d+\.\d+\.\d+)", ruff["rev"]).group(1))
    spec = dev_requirement("ruff").specifier
    assert spec.contains(version), f"ruff-pre-commit rev {ruff['rev']} is outside the dev extra's ruff{spec}"
    assert [h["id"] for h in ruff["hooks"]] == ["ruff-check", "ruff-format"]
    assert ruff["hooks"][0]["args"] == ["--fix"]
    installed = shutil.which("ruff")
    if installed:  # the environment's ruff (pip install -e ".[dev]") is the hook's version too
        out = subprocess.run([installed, "--version"], capture_output=True, text=True, check=True).stdout
        assert out.split()[1] == str(version), out


def test_the_other_hooks():
    config = hooks()
    basic = config["https://github.com/pre-commit/pre-commit-hooks"]
    ids = [h["id"] for h in basic["hooks"]]
    assert ids == ["trailing-whitespace", "end-of-file-fixer", "check-yaml", "check-added-large-files"]
    limit_kb = int(basic["hooks"][3]["args"][0].removeprefix("--maxkb="))
    assert (REPO / "data" / "train.tsv").stat().st_size <= limit_kb * 1024  # the shipped corpus may be committed
    (mypy,) = config["local"]["hooks"]
    assert mypy["entry"] == "mypy torchlingo" and mypy["language"] == "system" and mypy["pass_filenames"] is False
    # tests/seed_examples are the contract's examples verbatim, trailing spaces included: no fixer may touch them
    assert re.search(config["exclude"], "tests/seed_examples/minimal_example.py")
    assert not re.search(config["exclude"], "tests/test_precommit.py")
    assert dev_requirement("pre-commit").specifier.contains("4.0")
