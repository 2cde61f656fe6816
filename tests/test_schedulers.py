"""Each schedule's learning rate over optimizer steps matches its formula, warmup 0 included."""

import math
from pathlib import Path

import pytest
import torch
from tiny import TINY_DIMS

from torchlingo.config import Config
from torchlingo.schedulers import build_scheduler

LR = 1e-3


def lrs_per_step(config: Config, total: int, n_steps: int) -> list[float]:
    """The learning rate each optimizer step n = 1..n_steps runs with."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config, total)
    out = []
    for _ in range(n_steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def seed_noam(step, d_model, warmup_steps):
    """The documentation's transformer_lr_schedule, verbatim in behaviour."""
    step = max(step, 1)
    return d_model ** (-0.5) * min(step ** (-0.5), step * warmup_steps ** (-1.5))


@pytest.mark.parametrize("warmup", [0, 1, 10, 100])
def test_cosine_warmup_then_cosine_decay(warmup):
    total = 200
    lrs = lrs_per_step(Config(learning_rate=LR, scheduler_type="cosine", warmup_steps=warmup), total, total + 20)
    for n in [1, 2, 5, 10, 50, 99, 100, 101, 150, 199, 200, 220]:
        if n <= warmup:
            expected = LR * n / warmup
        else:
            expected = LR * 0.5 * (1 + math.cos(math.pi * min(1.0, (n - warmup) / (total - warmup))))
        assert lrs[n - 1] == pytest.approx(expected, rel=1e-9, abs=1e-15), n
    if warmup:
        assert lrs[warmup - 1] == pytest.approx(LR)  # the peak is learning_rate, at the end of warmup
    assert lrs[total - 1] == pytest.approx(0.0, abs=1e-15)


def test_cosine_min_lr_ratio():
    lrs = lrs_per_step(Config(learning_rate=LR, warmup_steps=10, min_lr_ratio=0.1), 100, 120)
    assert lrs[99] == pytest.approx(0.1 * LR)
    assert lrs[119] == pytest.approx(0.1 * LR)
    assert lrs[54] == pytest.approx(LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90))))


@pytest.mark.parametrize("name", ["transformer", "noam"])
@pytest.mark.parametrize("warmup", [1, 8, 4000])
def test_noam_is_the_documented_schedule_scaled_to_peak_at_learning_rate(name, warmup):
    lrs = lrs_per_step(Config(learning_rate=LR, scheduler_type=name, warmup_steps=warmup), 10_000, 9000)
    peak = seed_noam(warmup, 512, warmup)
    for n in [1, 2, 7, 8, 9, 100, 3999, 4000, 4001, 9000]:
        assert lrs[n - 1] == pytest.approx(LR * seed_noam(n, 512, warmup) / peak, rel=1e-9), n
    assert max(lrs) == pytest.approx(LR)
    assert lrs.index(max(lrs)) == min(warmup, 9000) - 1


def test_noam_without_warmup_starts_at_peak_and_decays_as_inverse_sqrt():
    lrs = lrs_per_step(Config(learning_rate=LR, scheduler_type="noam", warmup_steps=0), 100, 100)
    for n in [1, 4, 16, 100]:
        assert lrs[n - 1] == pytest.approx(LR / math.sqrt(n))


def test_none_is_constant():
    assert set(lrs_per_step(Config(learning_rate=LR, scheduler_type="none", warmup_steps=50), 100, 100)) == {LR}


def test_plateau_halves_after_scheduler_patience_validations_without_improvement():
    config = Config(learning_rate=LR, scheduler_type="plateau", scheduler_patience=3)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = build_scheduler(optimizer, config, 100)
    seen = []
    for val_loss in [5.0, 4.0, 4.5, 4.5, 4.5, 4.6, 4.7, 4.8, 3.0]:
        scheduler.step(val_loss)
        seen.append(optimizer.param_groups[0]["lr"])
    # 3rd non-improving validation (index 4) halves; three more (index 7) halve again; improvement keeps it.
    assert seen == [LR, LR, LR, LR, LR / 2, LR / 2, LR / 2, LR / 4, LR / 4]


def test_train_model_logs_the_schedule_it_uses(tmp_path):
    """The loop steps the scheduler once per optimizer step: train/learning_rate follows the cosine formula."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from toy_tasks import loaders

    from torchlingo.models import SimpleTransformer
    from torchlingo.training import train_model

    config = Config(
        **TINY_DIMS,
        learning_rate=LR,
        warmup_steps=5,
        num_epochs=2,
        log_interval=1,
        tensorboard_dir=str(tmp_path),
        save_checkpoints=False,
        accumulation_steps=2,
    )
    train, val = loaders("copy", n_train=320, batch_size=32)  # 10 batches = 5 optimizer steps per epoch
    result = train_model(SimpleTransformer(16, 16, config), train, None, config)
    assert result.steps == 10
    acc = EventAccumulator(str(config.run_dir))
    acc.Reload()
    logged = {e.step: e.value for e in acc.Scalars("train/learning_rate")}
    # logged after step n: the rate step n+1 will use
    for n in range(1, 10):
        expected = LR * ((n + 1) / 5 if n + 1 <= 5 else 0.5 * (1 + math.cos(math.pi * (n + 1 - 5) / 5)))
        assert logged[n] == pytest.approx(expected, rel=1e-6)
