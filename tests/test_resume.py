"""Exact resume: a run SIGKILLed anywhere and resumed ends bitwise identical to the run that was never stopped.

Each run is a subprocess (tests/_train_driver.py, one CPU thread) training a tiny model for 24 optimizer steps:
12 batches an epoch, last.pt every 3 steps, validation every 4 with patience 3.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_toy_tsv

DRIVER = Path(__file__).with_name("_train_driver.py")
ROOT = DRIVER.parent.parent


def run_driver(parent: Path, data: Path, fault: str = "none", *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(DRIVER), str(parent), str(data), fault, *extra],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Data and the uninterrupted run."""
    root = tmp_path_factory.mktemp("resume")
    write_toy_tsv(root / "data" / "train.tsv", 96, seed=0)
    write_toy_tsv(root / "data" / "val.tsv", 24, seed=1)
    proc = run_driver(root / "reference", root / "data")
    assert proc.returncode == 0, proc.stderr
    return root, torch.load(root / "reference" / "run" / "final.pt"), root / "reference" / "run" / "checkpoints" / "last.pt"


def assert_same_run(final: dict, ref: dict) -> None:
    assert final["model"].keys() == ref["model"].keys()
    for key, value in ref["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key in ("train_losses", "val_losses", "history", "steps", "stopped_early"):
        assert final[key] == ref[key], key


# (fault, the step of the checkpoint the resume must start from)
KILLS = [
    ("batch:8", 6),   # mid-epoch 1: steps 1-7 ran, last.pt holds step 6
    ("save:3", 6),    # during the 3rd write of last.pt (step 9): temp file fsynced, not yet renamed
    ("val:5", 18),    # inside the validation at step 20, in epoch 2
]


@pytest.mark.parametrize("fault,resume_step", KILLS, ids=[k for k, _ in KILLS])
def test_sigkill_then_resume_is_bitwise_identical(reference, fault, resume_step):
    root, ref, ref_last = reference
    parent = root / fault.replace(":", "_")
    killed = run_driver(parent, root / "data", fault)
    assert killed.returncode == -9, killed.stderr  # really killed by SIGKILL
    ckpts = parent / "run" / "checkpoints"
    state = torch.load(ckpts / "last.pt", weights_only=True)
    assert state["position"]["step"] == resume_step
    if fault.startswith("save"):
        assert list(ckpts.glob(".last.pt.*.tmp")), "the kill should leave the unrenamed temporary file behind"

    resumed = run_driver(parent, root / "data", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"at step {resume_step} " in resumed.stderr
    assert not list(ckpts.glob(".*.tmp"))  # the stale temporary file was cleaned up at start-up
    assert_same_run(torch.load(parent / "run" / "final.pt"), ref)
    # Optimizer moments, schedule, early-stopping counter and RNG end identical too.
    last, ref_state = torch.load(ckpts / "last.pt", weights_only=True), torch.load(ref_last, weights_only=True)
    assert last["early_stopping"] == ref_state["early_stopping"]
    assert last["scheduler"] == ref_state["scheduler"]
    for a, b in zip(last["optimizer"]["state"].values(), ref_state["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(last["rng"]["torch"], ref_state["rng"]["torch"])


def test_sigterm_then_resume_is_bitwise_identical(reference):
    """SIGTERM inside step 5: the run saves last.pt at step 5 and exits 143; the resume matches the reference."""
    import signal

    root, ref, _ = reference
    parent = root / "sigterm"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(parent), str(root / "data"), "sleep:5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    resumed = run_driver(parent, root / "data", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 5 " in resumed.stderr
    assert_same_run(torch.load(parent / "run" / "final.pt"), ref)
