"""The documented examples (tests/seed_examples, verbatim from the docs) run unchanged against the package."""

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_toy_tsv
from torch.utils.data import DataLoader

EXAMPLES = Path(__file__).parent / "seed_examples"
SEED_DOC = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "004_5152bed5db27d343.txt"
ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def event_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.skipif(not SEED_DOC.exists(), reason="documentation source not beside the repo")
def test_examples_are_verbatim_copies_of_the_docs():
    blocks = re.findall(r"```python\n(.*?)```", SEED_DOC.read_text(), re.S)
    for example in EXAMPLES.glob("*.py"):
        assert example.read_text() in blocks, f"{example.name} no longer matches the documentation"


def test_minimal_example_runs_unchanged(tmp_path):
    write_toy_tsv(tmp_path / "data" / "train.tsv", 64)
    proc = run_example("minimal_example.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(x) for x in re.findall(r"Epoch \d+: Loss = ([\d.]+)", proc.stdout)]
    assert len(losses) == 10
    assert losses[-1] < losses[0]  # it learns


def test_complete_training_script_runs_unchanged(tmp_path):
    write_toy_tsv(tmp_path / "data" / "train.tsv", 32, seed=0)
    write_toy_tsv(tmp_path / "data" / "val.tsv", 16, seed=1)
    proc = run_example("complete_training_script.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = re.findall(r"Epoch (\d+): Train=([\d.]+), Val=([\d.]+)", proc.stdout)
    assert len(lines) == 50
    assert float(lines[-1][1]) < float(lines[0][1])
    state = torch.load(tmp_path / "best_model.pt", weights_only=True)
    assert any(k.startswith("encoder_layers.3.") for k in state)  # num_encoder_layers=4 was honoured
    assert list((tmp_path / "runs").iterdir())  # SummaryWriter() wrote its default run directory


@pytest.fixture
def documented_context(tmp_path, monkeypatch):
    """The names the documentation's fragments assume: model, train_loader, val_loader."""
    from torchlingo.config import Config
    from torchlingo.data_processing import NMTDataset, collate_fn
    from torchlingo.models import SimpleTransformer

    monkeypatch.chdir(tmp_path)
    write_toy_tsv(tmp_path / "data" / "train.tsv", 48, seed=0)
    write_toy_tsv(tmp_path / "data" / "val.tsv", 16, seed=1)
    small = Config(d_model=32, n_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=64, tokenizer="word")
    train = NMTDataset("data/train.tsv", config=small)
    val = NMTDataset("data/val.tsv", src_vocab=train.src_vocab, tgt_vocab=train.tgt_vocab, config=small)
    return {
        "model": SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config=small),
        "train_loader": DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate_fn),
        "val_loader": DataLoader(val, batch_size=16, collate_fn=collate_fn),
    }


def test_tensorboard_fragment_logs_exactly_the_documented_tags(documented_context, tmp_path):
    namespace = runpy.run_path(str(EXAMPLES / "tensorboard_fragment.py"), init_globals=documented_context)
    result = namespace["result"]
    assert result.steps == 10 * 3  # default num_epochs=10, 48 pairs in batches of 16
    assert event_tags(tmp_path / "runs" / "my_experiment") == {
        "train/loss",
        "train/epoch_loss",
        "train/learning_rate",
        "val/loss",
        "val/epoch_loss",
    }


def test_scheduler_fragment_trains_with_plateau(documented_context):
    namespace = runpy.run_path(str(EXAMPLES / "scheduler_fragment.py"), init_globals=documented_context)
    config, result = namespace["config"], namespace["result"]
    assert config.scheduler_type == "plateau" and config.scheduler_patience == 3
    assert len(result.val_losses) == config.num_epochs
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    assert result.best_checkpoint.is_file()
