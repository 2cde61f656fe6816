"""metrics.json records what the run ran on (and training says so when it starts)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import torch
from cli_helpers import REPO, write_config, write_corpus

import torchlingo
from torchlingo.cli import main
from torchlingo.environment import git_commit


def test_metrics_json_records_the_environment(tmp_path, torchlingo_logs):
    root = write_corpus(tmp_path)
    saved, sys.stdout = sys.stdout, io.StringIO()
    try:
        assert main(["train", str(write_config(root, num_epochs=1, num_threads=1))]) == 0
    finally:
        sys.stdout = saved
    env = json.loads((root / "runs" / "tiny" / "metrics.json").read_text())["environment"]
    # the tiny config: amp none on cpu, one thread
    assert env["precision"] == "fp32" and env["amp"] == "none" and env["threads"] == 1
    assert env["device"].startswith("cpu") and env["world_size"] == 1
    assert env["torch_version"] == torch.__version__ and env["torchlingo_version"] == torchlingo.__version__
    commit, dirty = git_commit()
    assert env["git_commit"] == commit and env["git_dirty"] == dirty
    if (REPO / ".git").exists():  # run from a checkout: the commit it is at
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert head.returncode != 0 or env["git_commit"] == head.stdout.strip()
    lines = [r.getMessage() for r in torchlingo_logs.records if r.getMessage().startswith("environment: ")]
    assert len(lines) == 1 and f"torch {torch.__version__}" in lines[0] and "precision fp32 (amp: none)" in lines[0]
