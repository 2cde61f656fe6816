"""Learning-rate schedules. The training loop holds a `Schedule`: `build_scheduler` plus when it steps.

The multipliers below give the learning rate of optimizer step n (1-based) as a fraction of `learning_rate`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from .config import Config

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler


def cosine_factor(n: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine decay to `min_ratio` at step `total` (and flat after)."""
    if warmup > 0 and n <= warmup:
        return n / warmup
    progress = min(1.0, (n - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def noam_factor(n: int, warmup: int) -> float:
    """Vaswani et al.'s inverse square root, scaled so that the peak (end of warmup) is 1.

    d_model^-0.5 * min(n^-0.5, n * w^-1.5) divided by its peak w^-0.5: min(n / w, sqrt(w / n)). With no warmup the
    first step has the full rate and the decay is 1 / sqrt(n).
    """
    n = max(n, 1)
    if warmup == 0:
        return n**-0.5
    return min(n / warmup, math.sqrt(warmup / n))


def build_scheduler(optimizer: torch.optim.Optimizer, config: Config, total_steps: int) -> LRScheduler:
    """The schedule `config.scheduler_type` names. Plateau is stepped with the validation loss, the others per
    optimizer step (LambdaLR's step count k is the number of steps done, so step k+1 uses factor(k+1))."""
    kind, warmup = config.scheduler_type, config.warmup_steps
    if kind == "plateau":
        # torch cuts after `patience` + 1 bad validations; ours cuts at the scheduler_patience-th, as documented.
        patience = max(0, config.scheduler_patience - 1)
        return ReduceLROnPlateau(optimizer, mode="min", factor=config.scheduler_factor, patience=patience)
    if kind == "cosine":
        return LambdaLR(optimizer, lambda k: cosine_factor(k + 1, warmup, total_steps, config.min_lr_ratio))
    if kind in ("transformer", "noam"):
        return LambdaLR(optimizer, lambda k: noam_factor(k + 1, warmup))
    return LambdaLR(optimizer, lambda k: 1.0)


# When each schedule steps: after every optimizer step, or after every validation (stepped with the validation loss).
STEPS_ON = {"cosine": "step", "transformer": "step", "noam": "step", "none": "step", "plateau": "validation"}


class Schedule:
    """The learning-rate scheduler of a run together with the moment it steps (`STEPS_ON`), so the training loop
    calls `after_step()` and `after_validation(loss)` and never asks which kind of schedule it has."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: Config, total_steps: int):
        self.scheduler = build_scheduler(optimizer, config, total_steps)
        self.steps_on = STEPS_ON[config.scheduler_type]

    def after_step(self) -> None:
        if self.steps_on == "step":
            self.scheduler.step()

    def after_validation(self, val_loss: float) -> None:
        if self.steps_on == "validation":
            self.scheduler.step(val_loss)  # type: ignore[arg-type]  # plateau only: ReduceLROnPlateau.step(metrics)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)
