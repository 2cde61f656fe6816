"""Validation loss and early stopping, called from the training loop."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from . import distributed
from .loss import sequence_loss

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from .runtime import Precision


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, precision: Precision, pad_idx: int = 0
) -> float:
    """Mean cross-entropy per target token over the whole loader (no label smoothing: exp of it is perplexity)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    tokens = torch.zeros((), dtype=torch.int64, device=device)
    for src, tgt in loader:
        src, tgt = src.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
        with precision.autocast():
            loss, n = sequence_loss(model, src, tgt, pad_idx)
        total += loss.double() * n
        tokens += n
    total, tokens = distributed.sum_over_ranks(total, tokens)  # torchrun: each rank validated its share
    model.train(was_training)
    return (total / tokens.clamp(min=1)).item()


class EarlyStopping:
    """Tracks the best validation metric; `update` says whether it improved, `should_stop` once `patience`
    validations in a row did not (patience 0 never stops)."""

    def __init__(self, patience: int, mode: str = "min"):
        self.patience, self.mode = patience, mode
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_validations = 0

    def update(self, value: float) -> bool:
        improved = value < self.best if self.mode == "min" else value > self.best
        if improved:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_validations >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_validations": self.bad_validations, "mode": self.mode}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_validations = float(state["best"]), int(state["bad_validations"])
