"""Tiny configs and a runner for the CLI tests: a model of a few thousand weights trained for a few steps, and a
Ctrl-C in the middle of it; and the benchmark scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from conftest import write_toy_tsv
from tiny import TINY_DIMS

from torchlingo.tracking import RunLogger

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"tokenizer": "word", "max_tokens": 96},
    "model": {**TINY_DIMS, "dropout": 0.0},
    "training": {"learning_rate": 0.01, "warmup_steps": 2, "num_epochs": 2, "seed": 3, "device": "cpu", "amp": "none"},
    "decoding": {"beam_size": 2, "max_len_b": 5, "decode_max_tokens": 200},
    "logging": {"log_interval": 1, "progress_bar": False},
}
# What a finished `torchlingo train` with a test set leaves in its run directory (besides the TensorBoard events).
RUN_FILES = (
    "config.yaml",
    "src_vocab.txt",
    "tgt_vocab.txt",
    "checkpoints/best.pt",
    "checkpoints/last.pt",
    "test.hyp",
    "metrics.json",
)


def write_corpus(root: Path) -> Path:
    """root/data/{train,val,test}.tsv of the toy corpus; returns root."""
    write_toy_tsv(root / "data" / "train.tsv", 64, seed=0)
    write_toy_tsv(root / "data" / "val.tsv", 12, seed=1)
    write_toy_tsv(root / "data" / "test.tsv", 10, seed=2)
    return root


def write_config(root: Path, name: str = "tiny", **changes) -> Path:
    """A tiny config in root/NAME.yaml with absolute data paths and run directory root/runs/NAME."""
    config = {group: dict(values) for group, values in TINY.items()}
    config["data"].update(
        train_file=str(root / "data" / "train.tsv"),
        val_file=str(root / "data" / "val.tsv"),
        test_file=str(root / "data" / "test.tsv"),
    )
    config["logging"].update(experiment_name=name, tensorboard_dir=str(root / "runs"))
    for key, value in changes.items():
        group = next((g for g, vals in config.items() if key in vals), "training")
        config[group][key] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextmanager
def ctrl_c_at_step(step: int) -> Iterator[None]:
    """Inside the block a run gets Ctrl-C (a KeyboardInterrupt) during its optimizer step STEP: RunLogger.advance,
    called once a step, raises it at its STEP-th call."""
    advance, calls = RunLogger.advance, [0]

    def interrupted(self):
        calls[0] += 1
        if calls[0] == step:
            raise KeyboardInterrupt
        advance(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunLogger, "advance", interrupted)
        yield


def run_module(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m torchlingo ARGS` in a fresh interpreter (one thread), as a user would run it."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "torchlingo", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env,
        timeout=300,
    )


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/NAME.py as a new module (not put in sys.modules), to call its functions in this process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error_line(stderr: str) -> str:
    """A failed command ends its stderr with one `torchlingo: error:` line (progress lines may come before it),
    and prints no traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in lines if ln.startswith("torchlingo: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    return errors[0]
