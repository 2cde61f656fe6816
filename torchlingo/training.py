"""train_model: the training loop, and only the loop.

Each optimizer step is the five steps of the docs: zero the gradients, forward under autocast, label-smoothed
cross-entropy over the non-padding tokens, backward (scaled for fp16), clip and update, then step the schedule.
Validation, early stopping, logging and checkpoints are called from here and written in their own modules.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import check_writable, load_checkpoint, save_checkpoint
from .config import Config
from .errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted, first_line
from .fastpath import keep_freed_memory
from .loss import sequence_loss
from .runtime import (
    Precision,
    build_optimizer,
    capture_rng,
    resolve_device,
    restore_rng,
    seed_everything,
)
from .schedulers import build_scheduler, is_plateau
from .tracking import RunLogger
from .validation import EarlyStopping, validation_loss

log = logging.getLogger("torchlingo")


@dataclass
class TrainResult:
    """What a training run did: per-epoch losses, every validation, the best checkpoint and the counts."""

    train_losses: list[float] = field(default_factory=list)  # mean training loss of each epoch
    val_losses: list[float] = field(default_factory=list)  # validation loss at the end of each epoch
    history: list[dict] = field(default_factory=list)  # every validation: step, epoch, val_loss (and bleu, chrf)
    best_val_loss: float = math.inf
    best_metric: float | None = None  # what early stopping follows (loss, or BLEU)
    best_step: int = 0
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None
    steps: int = 0  # optimizer steps taken in total (a resumed run counts the steps before the resume)
    epochs: int = 0  # epochs completed
    stopped_early: bool = False
    train_time: float = 0.0  # seconds in the loop, over every session of a resumed run
    target_tokens: int = 0  # target tokens trained on, over every session
    run_dir: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.target_tokens / self.train_time if self.train_time > 0 else 0.0


@dataclass
class _Position:
    """Where the loop is: everything besides model/optimizer/scheduler state that a resume needs."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` already consumed
    epoch_rng: dict | None = None  # random state when the epoch's data iterator was created
    epoch_loss: float = 0.0  # sums over the current epoch, for train/epoch_loss
    epoch_tokens: int = 0
    bad_steps: int = 0  # optimizer steps in a row skipped for a non-finite loss


def train_model(  # noqa: C901, PLR0912, PLR0915 (split into a trainer next)
    model: torch.nn.Module,
    train_loader,
    val_loader=None,
    config: Config | None = None,
    *,
    resume_from: str | Path | None = None,
    validators=(),
    run_info: dict | None = None,
    restart_epoch: bool = False,
) -> TrainResult:
    """Train `model` on `train_loader`, validating on `val_loader`; see `Config` for every setting.

    Also callable as `train_model(model, (train_loader, val_loader), config)`. `resume_from` continues a run from
    one of its checkpoints. `validators` are extra callables `f(model, step) -> {name: value}` run at each
    validation (BLEU decoding plugs in here); their values are logged as `val/<name>`. `run_info` (plain values:
    the corpus fingerprint, tokenizer hashes) is stored in every checkpoint as `state["run_info"]`; `restart_epoch`
    resumes at the start of the checkpoint's epoch instead of its batch (for a corpus that changed on purpose).
    """
    if isinstance(train_loader, (tuple, list)):
        if isinstance(val_loader, Config) and config is None:
            config, val_loader = val_loader, None
        if val_loader is not None:
            raise TypeError("pass the loaders either as a (train, val) pair or separately, not both")
        train_loader, val_loader = train_loader
    config = config or Config()
    if config.early_stopping_metric == "bleu" and not (validators or (config.eval_bleu and val_loader is not None)):
        raise ConfigError(
            "early_stopping_metric: bleu needs a validation set and eval_bleu: true "
            "(or a validator that returns 'bleu')"
        )
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    if device.type == "cpu":
        keep_freed_memory()  # large tensors are reused instead of page-faulted in every step
    optimizer = build_optimizer(model, config)
    precision = Precision(config, device)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulation_steps)
    total_steps = steps_per_epoch * config.num_epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    scheduler = build_scheduler(optimizer, config, total_steps)
    metric_mode = "max" if config.early_stopping_metric == "bleu" else "min"
    stopper = EarlyStopping(config.patience, metric_mode)
    ckpt_dir = config.run_dir / "checkpoints"
    if config.save_checkpoints:
        check_writable(ckpt_dir)  # an unwritable run directory fails now, not hours later
    result, pos = TrainResult(run_dir=config.run_dir), _Position()
    vocabs = {k: getattr(getattr(train_loader, "dataset", None), k, None) for k in ("src_vocab", "tgt_vocab")}

    def checkpoint_state() -> dict:
        return {
            "model": model.state_dict(),
            "model_args": getattr(model, "args", {}),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": precision.scaler.state_dict(),
            "rng": capture_rng(),
            "position": dataclasses.asdict(pos),
            "sampler": _sampler_state(train_loader),
            "early_stopping": stopper.state_dict(),
            "result": _result_state(result, time.perf_counter() - start_time, int(interval_tokens.item())),
            "config": config.to_dict(grouped=False),
            "run_info": dict(run_info or {}),
            **{k: v.to_state() for k, v in vocabs.items() if v is not None},
        }

    if resume_from is not None:
        state = load_checkpoint(resume_from, map_location=device)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            precision.scaler.load_state_dict(state["scaler"])
            stopper.load_state_dict(state["early_stopping"])
            pos = _Position(**state["position"])
            if restart_epoch and pos.batch:
                pos.batch, pos.epoch_loss, pos.epoch_tokens = 0, 0.0, 0
            _load_result_state(result, state["result"])
            restore_rng(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{resume_from}: cannot resume from this checkpoint ({first_line(e)})") from None
        log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, pos.step, pos.epoch + 1, pos.batch)

    logger = RunLogger(config, start_step=pos.step, total_steps=total_steps)
    if config.eval_bleu and val_loader is not None:  # decode the validation set: val/bleu, val/chrf, sample text
        from .evaluation import BleuValidator

        validators = (*validators, BleuValidator(val_loader.dataset, config, logger))
    train_model_fn = torch.compile(model) if config.compile else model

    def validate() -> bool:
        """Validate, log, keep the best checkpoint; returns True when early stopping says stop."""
        record = {"step": pos.step, "epoch": pos.epoch + 1}
        record["val_loss"] = validation_loss(model, val_loader, device, precision, config.pad_idx)
        for validator in validators:
            record.update(validator(model, pos.step))
        for name, value in record.items():
            if name not in ("step", "epoch", "val_loss") and isinstance(value, (int, float)):
                logger.scalar(f"val/{name}", value, pos.step)
        logger.scalar("val/loss", record["val_loss"], pos.step)
        result.history.append(record)
        result.best_val_loss = min(result.best_val_loss, record["val_loss"])
        if is_plateau(scheduler):
            scheduler.step(record["val_loss"])
        metric = record["bleu"] if config.early_stopping_metric == "bleu" else record["val_loss"]
        nonlocal pending_best
        if stopper.update(metric):
            result.best_metric, result.best_step = metric, pos.step
            pending_best = config.save_checkpoints
        return stopper.should_stop

    pending_best = False  # best.pt waits for save_last, where the position is consistent and resumable

    def save_last(last: bool = True) -> None:
        """best.pt after an improvement, and last.pt: written where the position is consistent (resumable)."""
        nonlocal pending_best
        if config.save_checkpoints and (last or pending_best):
            state = checkpoint_state()
            if pending_best:
                result.best_checkpoint = save_checkpoint(state, ckpt_dir / "best.pt")
                pending_best = False
            if last:
                result.last_checkpoint = save_checkpoint(state, ckpt_dir / "last.pt", keep_previous=True)

    model.train()
    start_time, done = time.perf_counter(), pos.step >= total_steps
    interval_loss = torch.zeros((), dtype=torch.float64, device=device)
    interval_tokens = torch.zeros((), dtype=torch.int64, device=device)
    stop_signal = _SignalFlag()
    try:
        while not done and pos.epoch < config.num_epochs:
            _set_epoch(train_loader, pos.epoch)
            if pos.batch == 0:
                pos.epoch_rng = capture_rng()
            resume_rng = capture_rng() if pos.batch else None
            restore_rng(pos.epoch_rng)  # the iterator draws its shuffling seed now, as it did first time round
            batches = iter(train_loader)
            for _ in range(pos.batch):  # fast-forward to where a resumed run stopped
                next(batches)
            if resume_rng is not None:
                restore_rng(resume_rng)
            epoch_loss = torch.tensor(pos.epoch_loss, dtype=torch.float64, device=device)
            epoch_tokens = torch.tensor(pos.epoch_tokens, dtype=torch.int64, device=device)
            stop = False
            for src, tgt in batches:
                micro = pos.batch % config.accumulation_steps
                if micro == 0:
                    optimizer.zero_grad(set_to_none=True)  # 1. zero the gradients
                src, tgt = src.to(device, non_blocking=True), tgt.to(device, non_blocking=True)
                with precision.autocast():  # 2. forward, 3. loss
                    loss, n_tokens = sequence_loss(train_model_fn, src, tgt, config.pad_idx, config.label_smoothing)
                precision.backward(loss / config.accumulation_steps)  # 4. backward
                pos.batch += 1
                finite = torch.isfinite(loss.detach())
                step_finite = finite if micro == 0 else step_finite & finite  # noqa: F821
                n_tokens = n_tokens * finite  # a non-finite batch counts for nothing in the averages
                weighted = torch.where(finite, loss.detach().double(), 0.0) * n_tokens
                epoch_loss += weighted
                epoch_tokens += n_tokens
                interval_loss += weighted
                interval_tokens += n_tokens
                if micro + 1 < config.accumulation_steps and pos.batch < len(train_loader):
                    continue
                # One host sync per optimizer step: the update must be skipped before it is applied.
                if bool(step_finite):
                    precision.step(optimizer, model.parameters(), config.grad_clip)  # 5. clip, update
                    pos.bad_steps = 0
                else:
                    _skip_bad_step(optimizer, pos, config)
                if not is_plateau(scheduler):
                    scheduler.step()
                pos.step += 1
                logger.advance()
                if pos.step % config.log_interval == 0 or pos.step == total_steps:
                    tokens = int(interval_tokens.item())
                    result.target_tokens += tokens
                    logger.log_train(
                        pos.step, (interval_loss / max(tokens, 1)).item(), optimizer.param_groups[0]["lr"], tokens
                    )
                    interval_loss.zero_()
                    interval_tokens.zero_()
                end_of_epoch = pos.batch == len(train_loader)
                due_val = bool(val_loader is not None and config.val_interval and pos.step % config.val_interval == 0)
                due_ckpt = bool(config.checkpoint_interval and pos.step % config.checkpoint_interval == 0)
                if (due_val or due_ckpt) and not end_of_epoch:
                    pos.epoch_loss, pos.epoch_tokens = epoch_loss.item(), int(epoch_tokens.item())
                    stop = validate() if due_val else False
                    save_last(last=due_ckpt)
                if stop_signal.signum is not None:
                    pos.epoch_loss, pos.epoch_tokens = epoch_loss.item(), int(epoch_tokens.item())
                    break
                if stop or pos.step >= total_steps:
                    break
            if stop_signal.signum is not None:
                save_last()
                name = signal.Signals(stop_signal.signum).name
                where = f"; saved {result.last_checkpoint}, continue with --resume" if result.last_checkpoint else ""
                raise TrainingInterrupted(f"{name} received: stopped at step {pos.step}{where}", stop_signal.signum)
            # End of an epoch (or of training): epoch averages, validation, last checkpoint.
            if pos.batch == len(train_loader) or pos.step >= total_steps or stop:
                train_loss = (epoch_loss / epoch_tokens.clamp(min=1)).item()
                result.train_losses.append(train_loss)
                logger.scalar("train/epoch_loss", train_loss, pos.epoch + 1)
                if val_loader is not None:
                    if not stop:
                        stop = validate()
                    result.val_losses.append(result.history[-1]["val_loss"])
                    logger.scalar("val/epoch_loss", result.val_losses[-1], pos.epoch + 1)
                logger.epoch_summary(
                    pos.epoch + 1,
                    pos.step,
                    train_loss,
                    result.val_losses[-1] if val_loader is not None else None,
                    optimizer.param_groups[0]["lr"],
                )
                pos.epoch, pos.batch, pos.epoch_loss, pos.epoch_tokens = pos.epoch + 1, 0, 0.0, 0
                result.epochs = pos.epoch
                save_last()
                if stop:
                    result.stopped_early = True
                    log.info("early stopping at step %d: no improvement in %d validations", pos.step, config.patience)
                done = stop or pos.step >= total_steps
    finally:
        stop_signal.restore()
        result.train_time += time.perf_counter() - start_time
        result.target_tokens += int(interval_tokens.item())
        logger.close()
    result.steps = pos.step
    return result


def _skip_bad_step(optimizer, pos: _Position, config: Config) -> None:
    """Drop the gradients of a step whose loss was NaN or infinite; too many in a row end the run."""
    optimizer.zero_grad(set_to_none=True)
    pos.bad_steps += 1
    if pos.bad_steps >= config.max_bad_steps:
        raise TrainingError(
            f"step {pos.step + 1}: the loss was NaN or infinite in {pos.bad_steps} steps in a row "
            f"(max_bad_steps: {config.max_bad_steps}); lower learning_rate or check the data; "
            "the last good checkpoint is kept"
        )
    log.warning(
        "step %d: NaN or infinite loss, update skipped (%d in a row, stopping at %d)",
        pos.step + 1,
        pos.bad_steps,
        config.max_bad_steps,
    )


class _SignalFlag:
    """SIGINT / SIGTERM set `signum`; the loop saves last.pt after the current step and stops. A second SIGINT
    while waiting raises KeyboardInterrupt at once. Only installed in the main thread (signals need it)."""

    def __init__(self):
        self.signum, self._previous = None, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step and saving last.pt", signal.Signals(signum).name)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _set_epoch(loader, epoch: int) -> None:
    """Tell a seeded sampler (ours, or a DistributedSampler) which epoch it is, so the order depends on it."""
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _sampler_state(loader) -> dict | None:
    sampler = getattr(loader, "batch_sampler", None)
    return sampler.state_dict() if hasattr(sampler, "state_dict") else None


def _result_state(result: TrainResult, session_time: float, pending_tokens: int) -> dict:
    return {
        "train_losses": list(result.train_losses),
        "val_losses": list(result.val_losses),
        "history": [dict(h) for h in result.history],
        "best_val_loss": result.best_val_loss,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "epochs": result.epochs,
        "train_time": result.train_time + session_time,
        "target_tokens": result.target_tokens + pending_tokens,
    }


def _load_result_state(result: TrainResult, state: dict) -> None:
    for key in ("train_losses", "val_losses", "history", "best_val_loss", "best_metric", "best_step", "epochs"):
        setattr(result, key, state[key])
    result.train_time, result.target_tokens = state.get("train_time", 0.0), state.get("target_tokens", 0)
    result.best_checkpoint = Path(state["best_checkpoint"]) if state["best_checkpoint"] else None
