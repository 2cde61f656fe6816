"""Training faults: NaN/inf losses are skipped, too many in a row stop the run; SIGINT/SIGTERM save and exit cleanly."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import tiny_config, toy_setup

import torchlingo.training as T
from torchlingo.checkpoint import load_checkpoint
from torchlingo.errors import TorchlingoError, TrainingError

DRIVER = Path(__file__).with_name("_train_driver.py")


def poison(monkeypatch, batches: set[int], value: float = math.nan) -> None:
    """Make the loss of the given (1-based) training batches NaN or inf, as a diverging model would."""
    calls = [0]

    class PoisonedLoss(T.LabelSmoothedCrossEntropy):  # the training loss (validation uses loss.py's own)
        def forward(self, *args, **kwargs):
            loss, n = super().forward(*args, **kwargs)
            calls[0] += 1
            return (loss * value if calls[0] in batches else loss), n

    monkeypatch.setattr(T, "LabelSmoothedCrossEntropy", PoisonedLoss)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_loss_skips_the_update(toy_data, monkeypatch, torchlingo_logs, value):
    config = tiny_config(toy_data, max_bad_steps=3)  # 6 batches an epoch, 12 steps
    model, train, val = toy_setup(toy_data / "data", config)
    poison(monkeypatch, {3, 4, 9}, value)
    result = T.train_model(model, train, val, config)
    assert result.steps == 12
    skipped = [r.getMessage() for r in torchlingo_logs.records if "update skipped" in r.getMessage()]
    assert skipped == [
        "step 3: NaN or infinite loss, update skipped (1 in a row, stopping at 3)",
        "step 4: NaN or infinite loss, update skipped (2 in a row, stopping at 3)",
        "step 9: NaN or infinite loss, update skipped (1 in a row, stopping at 3)",
    ]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(x) for x in result.train_losses + result.val_losses)  # bad batches not averaged in
    state = load_checkpoint(result.last_checkpoint)
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {9.0}  # 12 steps, 3 skipped: the optimizer applied exactly 9 updates


def test_too_many_bad_steps_stop_with_the_last_good_checkpoint(toy_data, monkeypatch):
    config = tiny_config(toy_data, max_bad_steps=3, checkpoint_interval=2)
    model, train, val = toy_setup(toy_data / "data", config)
    poison(monkeypatch, set(range(5, 100)))
    with pytest.raises(TrainingError) as info:
        T.train_model(model, train, val, config)
    message = str(info.value)
    assert isinstance(info.value, TorchlingoError) and "\n" not in message
    assert message.startswith("step 7: the loss was NaN or infinite in 3 steps in a row (max_bad_steps: 3)")
    state = load_checkpoint(config.run_dir / "checkpoints" / "last.pt")
    assert state["position"]["step"] == 6  # written at step 6; steps 5 and 6 were skipped, so its weights are good
    assert all(torch.isfinite(w).all() for w in state["model"].values())
    assert state["position"]["bad_steps"] == 2


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_saves_last_and_exits_cleanly(toy_data, sig, code):
    """The driver stops 3 s inside batch 5 (it prints READY); the signal lands there, step 5 finishes, last.pt is
    saved at step 5 and the run ends with TrainingInterrupted (exit 128 + signal), no traceback."""
    env = {**os.environ, "PYTHONPATH": str(DRIVER.parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(DRIVER), str(toy_data / "p"), str(toy_data / "data"), "sleep:5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    name = signal.Signals(sig).name
    last = toy_data / "p" / "run" / "checkpoints" / "last.pt"
    assert f"error: {name} received: stopped at step 5; saved {last}, continue with --resume" in err
    assert "Traceback" not in err
    assert load_checkpoint(last)["position"]["step"] == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # this process's handlers untouched
