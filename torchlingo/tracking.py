"""What a run shows while it trains: TensorBoard scalars and text, a progress bar, and one line per epoch."""

from __future__ import annotations

import logging
import sys
import time

from . import distributed
from .config import Config

log = logging.getLogger("torchlingo")


class RunLogger:
    """Writes `train/*` and `val/*` scalars to tensorboard_dir/experiment_name and drives the progress bar
    (under torchrun on rank 0 only; the other ranks' loggers show and write nothing)."""

    def __init__(self, config: Config, start_step: int = 0, total_steps: int | None = None):
        self.writer, shows = None, distributed.is_writer()
        if config.use_tensorboard and shows:
            from torch.utils.tensorboard import SummaryWriter

            config.run_dir.mkdir(parents=True, exist_ok=True)
            # Resuming from a checkpoint of step S, this run logs steps S+1, ...; what a killed run logged after S
            # is hidden by purge_step, which drops every earlier event with step >= purge_step. S itself (its
            # train/loss, val/loss) was logged before the checkpoint was written and is kept: purge_step is S + 1.
            self.writer = SummaryWriter(str(config.run_dir), purge_step=start_step + 1 if start_step else None)
        self.bar = None
        if config.progress_bar and shows and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, leave=False)
        self._last_time = time.perf_counter()

    # Each event is flushed at once (not within the writer's 120 s): a checkpoint of this step may follow, and a
    # run killed after it must keep the curves up to the step it will be resumed from. Events come every
    # log_interval steps and at validations, so this costs nothing measurable.
    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)
            self.writer.flush()

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)
            self.writer.flush()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log_train(self, step: int, loss: float, lr: float, tokens: int) -> None:
        """Called every log_interval optimizer steps with the mean loss and the tokens of the interval."""
        now = time.perf_counter()
        tokens_per_sec = tokens / max(now - self._last_time, 1e-9)
        self._last_time = now
        self.scalar("train/loss", loss, step)
        self.scalar("train/learning_rate", lr, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_sec:,.0f}", refresh=False)

    def epoch_summary(self, epoch: int, step: int, train_loss: float, val_loss: float | None, lr: float) -> None:
        val = f" | val loss {val_loss:.4f}" if val_loss is not None else ""
        message = f"epoch {epoch} | step {step} | train loss {train_loss:.4f}{val} | lr {lr:.2e}"
        if self.bar is not None:
            self.bar.write(message)
        else:
            log.info(message)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
