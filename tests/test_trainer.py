"""The training loop's own rules: a stop keeps the true position (a larger budget continues exactly there), a resume
whose data no longer has the checkpoint's batch is a one-line error, and each schedule steps when its table says."""

import ast
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

from torchlingo.checkpoint import load_checkpoint
from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset, make_loader
from torchlingo.errors import TrainingError
from torchlingo.models import SimpleTransformer
from torchlingo.schedulers import STEPS_ON, Schedule
from torchlingo.training import train_model

PACKAGE = Path(__file__).resolve().parent.parent / "torchlingo"


def run(toy_data, name, resume_from=None, train_rows=None, **changes):
    """A tiny fp32 run (96 pairs, 16 a batch: 6 batches an epoch) in toy_data/runs/NAME."""
    torch.set_num_threads(1)
    settings = dict(num_epochs=3, seed=3, scheduler_type="transformer", warmup_steps=4, val_interval=4)
    config = tiny_config(toy_data, **{**settings, **changes}, experiment_name=name)
    train = NMTDataset(toy_data / "data" / "train.tsv", config=config)
    if train_rows is not None:
        train = torch.utils.data.Subset(train, range(train_rows))
        train.src_lengths = [train.dataset.src_lengths[i] for i in train.indices]
        train.tgt_lengths = [train.dataset.tgt_lengths[i] for i in train.indices]
    source = train.dataset if train_rows is not None else train
    val = NMTDataset(toy_data / "data" / "val.tsv", source.src_vocab, source.tgt_vocab, config=config)
    torch.manual_seed(0)
    model = SimpleTransformer(len(source.src_vocab), len(source.tgt_vocab), config=config)
    loaders = make_loader(train, config, shuffle=True), make_loader(val, config, shuffle=False)
    return model, train_model(model, *loaders, config, resume_from=resume_from)


def weights_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_larger_step_budget_continues_exactly_where_the_run_stopped(toy_data):
    """10 steps (mid-epoch 2), then --resume with max_steps 15: the same weights as 15 steps straight."""
    straight, result = run(toy_data, "straight", max_steps=15)
    assert result.steps == 15
    _, first = run(toy_data, "extended", max_steps=10)
    position = load_checkpoint(first.last_checkpoint)["position"]
    assert (position["step"], position["epoch"], position["batch"]) == (10, 1, 4)  # not moved to epoch 3
    assert first.epochs == 1 and len(first.train_losses) == 2  # the partial epoch is reported, not completed
    extended, second = run(toy_data, "extended", resume_from=first.last_checkpoint, max_steps=15)
    assert second.steps == 15 and second.epochs == 2
    assert weights_equal(extended, straight)


def test_resuming_a_finished_run_trains_nothing(toy_data):
    model, first = run(toy_data, "done", max_steps=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again, second = run(toy_data, "done", resume_from=first.last_checkpoint, max_steps=8)
    assert second.steps == 8
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_a_resume_past_the_end_of_a_shrunken_epoch_is_a_one_line_error(toy_data):
    _, first = run(toy_data, "shrunk", max_steps=10)  # stopped at batch 4 of epoch 2
    with pytest.raises(TrainingError) as info:
        run(toy_data, "shrunk", resume_from=first.last_checkpoint, train_rows=32, num_epochs=20)  # 2 batches an epoch
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "resume: the checkpoint is at batch 4 of epoch 2, but the training data now has 2 batches"
    )


def test_the_schedule_table_says_when_each_schedule_steps():
    assert STEPS_ON["plateau"] == "validation"
    assert {STEPS_ON[k] for k in ("cosine", "transformer", "noam", "none")} == {"step"}
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    plateau = Schedule(optimizer, Config(scheduler_type="plateau", scheduler_patience=1), total_steps=10)
    plateau.after_step()
    assert optimizer.param_groups[0]["lr"] == 1.0  # a training step does not move the plateau schedule
    plateau.after_validation(2.0)
    plateau.after_validation(3.0)  # one validation without improvement: cut (scheduler_patience 1)
    assert optimizer.param_groups[0]["lr"] == 0.5
    noam = Schedule(optimizer, Config(scheduler_type="noam", warmup_steps=4, learning_rate=1.0), total_steps=10)
    noam.after_validation(1.0)
    assert noam.scheduler.last_epoch == 0  # a validation does not move a per-step schedule
    optimizer.step()
    noam.after_step()
    assert noam.scheduler.last_epoch == 1


def test_no_function_in_the_package_is_longer_than_60_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == []


def test_the_training_step_reads_as_the_five_steps_in_order():
    """The docs walk through Trainer.train_step; its numbered comments are the five steps, in order."""
    tree = ast.parse((PACKAGE / "training.py").read_text(encoding="utf-8"))
    step = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "train_step")
    lines = (PACKAGE / "training.py").read_text(encoding="utf-8").splitlines()[step.lineno - 1 : step.end_lineno]
    numbered = [int(ln.split("# ")[1][0]) for ln in lines if "# " in ln and ln.split("# ")[1][:2].rstrip(".").isdigit()]
    assert numbered == [1, 2, 3, 4, 5]
    assert step.end_lineno - step.lineno + 1 <= 22
