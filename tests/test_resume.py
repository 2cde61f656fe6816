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
from tiny import tiny_config, toy_setup

DRIVER = Path(__file__).with_name("_train_driver.py")
ROOT = DRIVER.parent.parent


def run_driver(parent: Path, data: Path, fault: str = "none", *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(DRIVER), str(parent), str(data), fault, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Data and the uninterrupted run."""
    root = tmp_path_factory.mktemp("resume")
    write_toy_tsv(root / "data" / "train.tsv", 96, seed=0)
    write_toy_tsv(root / "data" / "val.tsv", 24, seed=1)
    proc = run_driver(root / "reference", root / "data")
    assert proc.returncode == 0, proc.stderr
    return (
        root,
        torch.load(root / "reference" / "run" / "final.pt"),
        root / "reference" / "run" / "checkpoints" / "last.pt",
    )


def assert_same_run(final: dict, ref: dict) -> None:
    assert final["model"].keys() == ref["model"].keys()
    for key, value in ref["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key in ("train_losses", "val_losses", "history", "steps", "stopped_early"):
        assert final[key] == ref[key], key


# (fault, the step of the checkpoint the resume must start from); the CLI test below covers mid-epoch and
# mid-write kills, this one the Python API (a kill mid-epoch, and one inside a validation).
KILLS = [
    ("batch:8", 6),  # mid-epoch 1: steps 1-7 ran, last.pt holds step 6
    ("val:5", 18),  # inside the validation at step 20, in epoch 2
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
    assert f"resumed from step {resume_step} (" in resumed.stderr
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
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(parent), str(root / "data"), "sleep:5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    resumed = run_driver(parent, root / "data", "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step 5 (" in resumed.stderr
    assert_same_run(torch.load(parent / "run" / "final.pt"), ref)


CLI_CONFIG = """\
data: {{train_file: {data}/train.tsv, val_file: {data}/val.tsv, tokenizer: word, batch_size: 8}}
model: {{d_model: 16, n_heads: 2, num_encoder_layers: 1, num_decoder_layers: 1, d_ff: 32}}
training: {{num_epochs: 2, learning_rate: 0.003, warmup_steps: 4, checkpoint_interval: 3, val_interval: 4,
            patience: 3, amp: none, seed: 7, num_threads: 1, device: cpu}}
logging: {{tensorboard_dir: {runs}, experiment_name: run, progress_bar: false}}
"""


def cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`python -m torchlingo ARGS`, or the same CLI under tests/_train_driver.py with a fault injected."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    prefix = [str(DRIVER), "cli", fault] if fault else ["-m", "torchlingo"]
    return subprocess.run([sys.executable, *prefix, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fault,resume_step", [("batch:8", 6), ("save:3", 6)])
def test_cli_sigkill_then_resume_is_bitwise_identical(reference, fault, resume_step):
    """`torchlingo train CONFIG` SIGKILLed mid-epoch or while writing last.pt (temp file fsynced, not renamed), then
    `torchlingo train CONFIG --resume`: last.pt ends identical to the uninterrupted CLI run's."""
    root = reference[0]
    configs = {}
    for name in ("cli_reference", f"cli_{fault.replace(':', '_')}"):
        configs[name] = root / f"{name}.yaml"
        configs[name].write_text(CLI_CONFIG.format(data=root / "data", runs=root / name))
    ref_last = root / "cli_reference" / "run" / "checkpoints" / "last.pt"
    if not ref_last.exists():
        done = cli("train", str(configs["cli_reference"]))
        assert done.returncode == 0, done.stderr
    name = f"cli_{fault.replace(':', '_')}"
    killed = cli("train", str(configs[name]), fault=fault)
    assert killed.returncode == -9, killed.stderr
    ckpts = root / name / "run" / "checkpoints"
    assert torch.load(ckpts / "last.pt", weights_only=True)["position"]["step"] == resume_step
    resumed = cli("train", str(configs[name]), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {resume_step} (" in resumed.stderr
    got, want = torch.load(ckpts / "last.pt", weights_only=True), torch.load(ref_last, weights_only=True)
    assert want["position"]["step"] == 24
    for key, value in want["model"].items():
        assert torch.equal(got["model"][key], value), key
    for key in ("train_losses", "val_losses", "history", "best_step"):
        assert got["result"][key] == want["result"][key], key
    assert got["early_stopping"] == want["early_stopping"]


def test_resume_from_best_pt_when_last_is_damaged(toy_data, monkeypatch):
    """best.pt is written at a resumable position too: with last.pt and last.prev.pt damaged, find_resumable falls
    back to best.pt (end of epoch 1) and the resumed run still ends bitwise identical to the uninterrupted one."""
    import torchlingo.training as T
    from torchlingo.checkpoint import find_resumable
    from torchlingo.errors import TrainingError

    torch.set_num_threads(1)

    def run(name, **kwargs):
        config = tiny_config(toy_data, experiment_name=name, max_bad_steps=1)
        model, train, val = toy_setup(toy_data / "data", config, seed=0)
        result = T.train_model(model, train, val, config, **kwargs)
        return model, result

    ref_model, ref = run("reference")
    real, calls = T.LabelSmoothedCrossEntropy, [0]

    class NanInEpoch2(real):  # 6 batches an epoch: a NaN at the first batch of epoch 2 stops the run
        def forward(self, *args, **kwargs):
            loss, n = super().forward(*args, **kwargs)
            calls[0] += 1
            return (loss * float("nan") if calls[0] == 7 else loss), n

    monkeypatch.setattr(T, "LabelSmoothedCrossEntropy", NanInEpoch2)
    with pytest.raises(TrainingError):
        run("broken")
    monkeypatch.setattr(T, "LabelSmoothedCrossEntropy", real)
    ckpts = toy_data / "runs" / "broken" / "checkpoints"
    best, last = (torch.load(ckpts / f, weights_only=True)["position"] for f in ("best.pt", "last.pt"))
    assert (best["step"], best["epoch"], best["batch"]) == (last["step"], last["epoch"], last["batch"]) == (6, 1, 0)
    (ckpts / "last.pt").write_bytes(b"")
    assert find_resumable(ckpts) == ckpts / "best.pt"  # last.prev.pt does not exist yet: one last.pt write so far
    model, result = run("broken", resume_from=ckpts / "best.pt")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))
    assert (result.train_losses, result.val_losses, result.history) == (ref.train_losses, ref.val_losses, ref.history)
