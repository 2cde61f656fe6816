"""What a run shows while it trains: TensorBoard scalars and text, a progress bar or progress lines, and one line
per epoch."""

from __future__ import annotations

import logging
import math
import sys
import time

from . import distributed
from .config import Config
from .logs import ON_CONSOLE

log = logging.getLogger("torchlingo")


def tensorboard_layout(config: Config) -> dict:
    """The Custom Scalars tab's layout: the curves over optimizer steps in one section, the curves over epochs in
    another (the seed's tags, `train/epoch_loss` and `val/epoch_loss`, keep their names; TensorBoard's Scalars tab
    groups by the prefix and would mix the two axes), train and validation loss drawn in one chart each."""
    steps = {
        "loss (train, val)": ["Multiline", ["^train/loss$", "^val/loss$"]],
        "learning rate": ["Multiline", ["^train/learning_rate$"]],
    }
    if config.eval_bleu:
        steps["BLEU, chrF (val)"] = ["Multiline", ["^val/bleu$", "^val/chrf$"]]
    epochs = {"epoch loss (train, val)": ["Multiline", ["^train/epoch_loss$", "^val/epoch_loss$"]]}
    return {"x axis: optimizer step": steps, "x axis: epoch": epochs}


def format_duration(seconds: float) -> str:
    """`42s`, `4m12s`, `3h05m`: short enough for a log line, as exact as a forecast needs."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RunLogger:
    """Writes `train/*` and `val/*` scalars to tensorboard_dir/experiment_name and shows the progress: a bar when
    stderr is a terminal, else a line every log_interval steps (epoch of the planned epochs, loss, tokens/s, ETA);
    under torchrun on rank 0 only (the other ranks' loggers show and write nothing)."""

    def __init__(
        self,
        config: Config,
        start_step: int = 0,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
    ):
        self.writer, self.shows = None, distributed.is_writer()
        if config.use_tensorboard and self.shows:
            from torch.utils.tensorboard import SummaryWriter

            config.run_dir.mkdir(parents=True, exist_ok=True)
            # Resuming from a checkpoint of step S, this run logs steps S+1, ...; what a killed run logged after S
            # is hidden by purge_step, which drops every earlier event with step >= purge_step. S itself (its
            # train/loss, val/loss) was logged before the checkpoint was written and is kept: purge_step is S + 1.
            self.writer = SummaryWriter(str(config.run_dir), purge_step=start_step + 1 if start_step else None)
            self.writer.add_custom_scalars(tensorboard_layout(config))
        self.bar = None
        if config.progress_bar and self.shows and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, leave=False)
        self.start_step, self.total_steps = start_step, total_steps
        self.planned_epochs, self.step_limit = _plan(config, total_steps, steps_per_epoch)
        self._start_time = self._last_time = time.perf_counter()

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

    def log_train(self, step: int, loss: float, lr: float, tokens: int, epoch: int | None = None) -> None:
        """Called every log_interval optimizer steps with the mean loss and the tokens of the interval, in `epoch`
        (1-based). The line goes to the log (train.log); to the console only when no progress bar shows it."""
        now = time.perf_counter()
        tokens_per_sec = tokens / max(now - self._last_time, 1e-9)
        self._last_time = now
        self.scalar("train/loss", loss, step)
        self.scalar("train/learning_rate", lr, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_sec:,.0f}", refresh=False)
        if self.shows:
            line = self.progress_line(step, loss, lr, tokens_per_sec, epoch, now)
            log.info("%s", line, extra={ON_CONSOLE: self.bar is not None})

    def progress_line(self, step: int, loss: float, lr: float, tok_s: float, epoch: int | None, now: float) -> str:
        """`epoch 3/10 | step 1200/1500 | loss 2.3456 | lr 1.00e-03 | 9,291 tok/s | ETA 4m12s`: the step's total
        only when max_steps ends the run before its epochs do; the ETA is the mean time of this session's steps
        (validations included) times the planned steps left."""
        where = f"epoch {epoch}/{self.planned_epochs} | " if epoch is not None else ""
        where += f"step {step}/{self.step_limit}" if self.step_limit else f"step {step}"
        line = f"{where} | loss {loss:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s"
        done = step - self.start_step
        if self.total_steps and done > 0:
            eta = (now - self._start_time) / done * max(self.total_steps - step, 0)
            line += f" | ETA {format_duration(eta)}"
        return line

    def epoch_summary(
        self, epoch: int, step: int, train_loss: float, val_loss: float | None, lr: float, metrics: dict | None = None
    ) -> None:
        """The epoch's line; `metrics` are the validators' scores (eval_bleu: bleu and chrf), shown after the loss."""
        val = f" | val loss {val_loss:.4f}" if val_loss is not None else ""
        val += "".join(f" | val {name} {value:.2f}" for name, value in (metrics or {}).items())
        log.info("epoch %d | step %d | train loss %.4f%s | lr %.2e", epoch, step, train_loss, val, lr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()


def _plan(config: Config, total_steps: int | None, steps_per_epoch: int | None) -> tuple[int, int | None]:
    """(epochs the run is planned for, its step budget when max_steps ends it before num_epochs would)."""
    if not total_steps or not steps_per_epoch:
        return config.num_epochs, config.max_steps or None
    full = steps_per_epoch * config.num_epochs
    return min(config.num_epochs, math.ceil(total_steps / steps_per_epoch)), total_steps if total_steps < full else None
