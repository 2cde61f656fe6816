"""train_model: the training loop, and only the loop.

A `Trainer` holds one run: model, optimizer, schedule, precision, data, and where the loop is (`Position`). Each
optimizer step is the five steps of the docs (`Trainer.train_step`):

    1. zero the gradients
    2. forward: decoder states for the gold target prefix (teacher forcing), under autocast
    3. loss: label-smoothed cross-entropy over the non-padding target tokens
    4. backward (scaled for fp16), once per batch of the step (gradient accumulation)
    5. update: clip the gradient norm, optimizer step, then the learning-rate schedule

Everything else is called from the loop and written in its own method or module: the resume fast-forward, the
NaN rule, logging, validation and early stopping (validation.py), checkpoints (checkpoint.py).

Under torchrun the same loop runs in every process, each on its share of the batches; the calls into
distributed.py (all no-ops for one process) keep the ranks in step: DistributedDataParallel, the loss normalized
by the target tokens of all ranks, one NaN decision, one stop signal, rank 0's validation record, rank 0 writing.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import distributed
from .checkpoint import (
    check_writable,
    load_checkpoint,
    prune_step_checkpoints,
    save_checkpoint,
    step_checkpoint_name,
)
from .config import Config
from .errors import CheckpointError, ConfigError, TrainingError, TrainingInterrupted, first_line
from .loss import LabelSmoothedCrossEntropy
from .runtime import (
    Precision,
    StopSignals,
    build_optimizer,
    capture_rng,
    resolve_device,
    restore_rng,
    seed_everything,
)
from .schedulers import Schedule
from .tracking import RunLogger
from .validation import EarlyStopping, validation_loss

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

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
class Position:
    """Where the loop is: everything besides model/optimizer/schedule state that a resume needs."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches of `epoch` already consumed
    epoch_rng: dict | None = None  # random state when the epoch's data iterator was created
    epoch_loss: float = 0.0  # sums over the current epoch, for train/epoch_loss
    epoch_tokens: int = 0
    bad_steps: int = 0  # optimizer steps in a row skipped for a non-finite loss


class LossMeter:
    """Token-weighted loss sums kept on the device, so a step needs no host sync: one pair for the current log
    interval, one for the epoch. A non-finite batch adds nothing (its update is skipped anyway)."""

    def __init__(self, device: torch.device, epoch_loss: float = 0.0, epoch_tokens: int = 0):
        self.interval_loss = torch.zeros((), dtype=torch.float64, device=device)
        self.interval_tokens = torch.zeros((), dtype=torch.int64, device=device)
        self.epoch_loss = torch.tensor(epoch_loss, dtype=torch.float64, device=device)
        self.epoch_tokens = torch.tensor(epoch_tokens, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
        """Count one batch's mean loss over `n_tokens` tokens; returns whether the loss was finite (on the device)."""
        finite = torch.isfinite(loss.detach())
        n_tokens = n_tokens * finite
        weighted = torch.where(finite, loss.detach().double(), 0.0) * n_tokens
        self.interval_loss += weighted
        self.interval_tokens += n_tokens
        self.epoch_loss += weighted
        self.epoch_tokens += n_tokens
        return finite

    def take_interval(self) -> tuple[float, int]:
        """(mean loss, tokens) of the interval since the last call, over all ranks, and start a new one."""
        loss, token_sum = distributed.sum_over_ranks(self.interval_loss, self.interval_tokens)
        tokens = int(token_sum.item())
        mean = (loss / max(tokens, 1)).item()
        self.interval_loss.zero_()
        self.interval_tokens.zero_()
        return mean, tokens

    def start_epoch(self) -> None:
        self.epoch_loss.zero_()
        self.epoch_tokens.zero_()

    def epoch_mean(self) -> float:
        """The epoch's mean loss over all ranks."""
        loss, tokens = distributed.sum_over_ranks(self.epoch_loss, self.epoch_tokens)
        return (loss / tokens.clamp(min=1)).item()

    def epoch_sums(self) -> tuple[float, int]:
        """This rank's sums (for its checkpoint state)."""
        return self.epoch_loss.item(), int(self.epoch_tokens.item())

    def pending_tokens(self) -> int:
        """Tokens of all ranks not yet taken by take_interval."""
        return int(distributed.sum_over_ranks(self.interval_tokens)[0].item())


def train_model(
    model: torch.nn.Module,
    train_loader: DataLoader | tuple[DataLoader, DataLoader | None],
    val_loader: DataLoader | Config | None = None,
    config: Config | None = None,
    *,
    resume_from: str | Path | None = None,
    validators: Iterable[Callable[[torch.nn.Module, int], dict]] = (),
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
    train_loader, val_loader, config = _loaders_and_config(train_loader, val_loader, config)
    trainer = Trainer(model, train_loader, val_loader, config, validators, run_info)
    if resume_from is not None:
        trainer.resume(resume_from, restart_epoch)
    return trainer.fit()


def _loaders_and_config(
    train_loader: DataLoader | tuple[DataLoader, DataLoader | None],
    val_loader: DataLoader | Config | None,
    config: Config | None,
) -> tuple[DataLoader, DataLoader | None, Config]:
    """Accept both call forms: (model, train, val, config) and (model, (train, val), config)."""
    if isinstance(train_loader, (tuple, list)):
        if isinstance(val_loader, Config) and config is None:
            config, val_loader = val_loader, None
        if val_loader is not None:
            raise TypeError("pass the loaders either as a (train, val) pair or separately, not both")
        train_loader, val_loader = train_loader
    config = config or Config()
    return train_loader, val_loader, config  # type: ignore[return-value]  # a Config val_loader: the pair form only


class Trainer:
    """One training run. `fit()` is the loop; each method below is one thing the loop does."""

    def __init__(
        self,
        model: torch.nn.Module,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        config: Config,
        validators: Iterable[Callable[[torch.nn.Module, int], dict]] = (),
        run_info: dict | None = None,
    ):
        if config.early_stopping_metric == "bleu" and not (validators or (config.eval_bleu and val_loader)):
            raise ConfigError(
                "early_stopping_metric: bleu needs a validation set and eval_bleu: true "
                "(or a validator that returns 'bleu')"
            )
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        seed_everything(config.seed + distributed.rank())  # each rank its own dropout masks
        self.config, self.train_loader, self.val_loader = config, train_loader, val_loader
        self.device = distributed.setup(resolve_device(config.device))  # torchrun: cuda:LOCAL_RANK, process group
        self.model = model.to(self.device)
        self.ddp = distributed.wrap(self.model, self.device)  # several ranks: DistributedDataParallel, else model
        self.forward = torch.compile(self.ddp) if config.compile else self.ddp
        self.loss_fn = LabelSmoothedCrossEntropy(config.pad_idx, config.label_smoothing)
        self.optimizer = build_optimizer(model, config)
        self.precision = Precision(config, self.device)
        self.batches_per_epoch = len(train_loader)
        distributed.check_shards(train_loader)  # the same number of batches on every rank
        self.total_steps = _planned_steps(self.batches_per_epoch, config)
        self.schedule = Schedule(self.optimizer, config, self.total_steps)
        self.stopper = EarlyStopping(config.patience, "max" if config.early_stopping_metric == "bleu" else "min")
        self.ckpt_dir = config.run_dir / "checkpoints"
        if config.save_checkpoints and distributed.is_writer():
            check_writable(self.ckpt_dir)  # an unwritable run directory fails now, not hours later
        self.result, self.pos = TrainResult(run_dir=config.run_dir), Position()
        self.validators, self.run_info = tuple(validators), dict(run_info or {})
        self.pending_best = False  # best.pt waits for the next save, where the position is resumable
        self.last_validated_step = -1
        self.session_start = time.perf_counter()

    # -- the loop -----------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until the step budget, the epoch budget, early stopping or a signal ends the run:

        for each epoch:
            for each optimizer step's batches (accumulation_steps of them, fewer at the epoch's end):
                train_step(batches)        the five steps
                after_step()               log, validate, checkpoint when due; stop when told to
            end of the epoch: epoch losses, validation, early stopping, last.pt
        (stopped mid-epoch: validation and last.pt at the true position, so a resume continues there)
        """
        self.start_session()
        try:
            with distributed.peer_failures_as_errors(), StopSignals() as signals:
                while not self.finished():
                    for batches in self.epoch_steps():
                        self.train_step(batches)
                        if self.after_step() or distributed.agreed_signal(signals.received):
                            break
                    if received := distributed.agreed_signal(signals.received):  # the same step on every rank
                        self.interrupt(received)
                    self.end_epoch_or_run()
            self.result.target_tokens += self.meter.pending_tokens()
        finally:
            self.end_session()
        return self.result

    def train_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """One optimizer step over `batches` (accumulation_steps of them): the five steps."""
        self.optimizer.zero_grad(set_to_none=True)  # 1. zero the gradients
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for i, (src, tgt) in enumerate(batches, 1):
            src, tgt = src.to(self.device, non_blocking=True), tgt.to(self.device, non_blocking=True)
            with distributed.gradient_sync(self.ddp, i == len(batches)):  # ranks average gradients in the last one
                with self.precision.autocast():
                    hidden = self.forward(src, tgt[:, :-1], hidden_only=True)  # 2. forward: (B, T, D) states
                    loss, n_tokens = self.loss_fn(hidden, self.model.output_proj, tgt[:, 1:])  # 3. loss
                self.precision.backward(self.scaled(loss, n_tokens))  # 4. backward
            finite &= self.meter.add(loss, n_tokens)
        if distributed.all_finite(finite):  # the one host sync of a step: no rank applies a non-finite update
            self.precision.step(self.optimizer, self.model.parameters(), self.config.grad_clip)  # 5. update
            self.pos.bad_steps = 0
        else:
            self.skip_update()
        self.schedule.after_step()
        self.pos.batch += len(batches)
        self.pos.step += 1

    def scaled(self, loss: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
        """What backward sees: the batch's mean loss over accumulation_steps. With several ranks each rank's mean is
        first weighted by world_size x its share of the micro-step's target tokens (distributed.token_share), so the
        averaged gradient is that of the mean over every rank's tokens."""
        share = distributed.token_share(n_tokens)
        if share is not None:
            loss = loss * share.to(loss.dtype)
        return loss / self.config.accumulation_steps

    # -- around the steps ---------------------------------------------------------------------------------
    def start_session(self) -> None:
        self.model.train()
        steps_per_epoch = math.ceil(self.batches_per_epoch / self.config.accumulation_steps)
        self.logger = RunLogger(self.config, self.pos.step, self.total_steps, steps_per_epoch)
        if self.config.eval_bleu and self.val_loader is not None:  # val/bleu, val/chrf, sample translations
            from .evaluation import BleuValidator

            self.validators += (  # BleuValidator checks that the dataset is one with texts and vocabularies
                BleuValidator(self.val_loader.dataset, self.config, self.logger),  # type: ignore[arg-type]
            )
        self.meter = LossMeter(self.device, self.pos.epoch_loss, self.pos.epoch_tokens)
        self.session_start = time.perf_counter()

    def end_session(self) -> None:
        """Also run when an error ends the session: no collective here (another rank may be gone)."""
        self.result.train_time += time.perf_counter() - self.session_start
        self.result.steps = self.pos.step
        self.logger.close()

    def finished(self) -> bool:
        """Nothing left to train: the step or epoch budget is spent, or early stopping has said stop."""
        pos, c = self.pos, self.config
        return pos.step >= self.total_steps or pos.epoch >= c.num_epochs or self.stopper.should_stop

    def epoch_steps(self) -> Iterator[list]:
        """This epoch's batches, grouped by optimizer step, after those a resumed run already trained on.

        The data iterator is created from the random state saved at the epoch's start, so a shuffling loader draws
        the same order it drew the first time; the skipped batches are then passed over, and the random state of
        the resumed position restored."""
        pos = self.pos
        _set_epoch(self.train_loader, pos.epoch)
        if pos.batch == 0:
            pos.epoch_rng = capture_rng()
        resume_rng = capture_rng() if pos.batch else None
        assert pos.epoch_rng is not None  # captured above at batch 0, else restored with the resumed position
        restore_rng(pos.epoch_rng)
        batches = iter(self.train_loader)
        skipped = sum(1 for _ in itertools.islice(batches, pos.batch))
        if skipped < pos.batch:
            raise TrainingError(
                f"resume: the checkpoint is at batch {pos.batch} of epoch {pos.epoch + 1}, but the training data now "
                f"has {skipped} batches in that epoch (the corpus or the batching settings changed); "
                "start a new run, or resume with restart_epoch to begin this epoch again"
            )
        if resume_rng is not None:
            restore_rng(resume_rng)
        while group := list(itertools.islice(batches, self.config.accumulation_steps)):
            yield group

    def after_step(self) -> bool:
        """Log, validate and checkpoint when due. True when training must stop here (budget or early stopping)."""
        pos, c = self.pos, self.config
        self.logger.advance()
        if pos.step % c.log_interval == 0 or pos.step == self.total_steps:
            self.log_interval()
        if pos.batch < self.batches_per_epoch:  # the epoch's end validates and saves anyway
            due_val = self.val_loader is not None and c.val_interval and pos.step % c.val_interval == 0
            due_ckpt = c.checkpoint_interval and pos.step % c.checkpoint_interval == 0
            if due_val:
                self.validate()
            if due_val or due_ckpt:
                self.save(last=bool(due_ckpt))
        return pos.step >= self.total_steps or self.stopper.should_stop

    def end_epoch_or_run(self) -> None:
        """At the end of an epoch: epoch losses, validation, last.pt. Stopped before the epoch's end (step budget or
        early stopping): the same, with last.pt at the true position, so a larger budget continues exactly there."""
        pos, result = self.pos, self.result
        if self.val_loader is not None and self.last_validated_step != pos.step:
            self.validate()
        epoch_done = pos.batch >= self.batches_per_epoch
        train_loss = self.meter.epoch_mean()
        if epoch_done:
            self.record_epoch(train_loss)
            pos.epoch, pos.batch, pos.epoch_rng = pos.epoch + 1, 0, None
            self.meter.start_epoch()
            result.epochs = pos.epoch
        self.save(last=True)
        if not epoch_done:  # the partial epoch is reported, not stored: a resume finishes this epoch
            self.record_epoch(train_loss)
        if self.stopper.should_stop:
            result.stopped_early = True
            log.info("early stopping at step %d: no improvement in %d validations", pos.step, self.config.patience)

    def record_epoch(self, train_loss: float) -> None:
        """train/epoch_loss and val/epoch_loss, the epoch's lists in the result, and the one-line summary."""
        epoch, result = self.pos.epoch + 1, self.result
        result.train_losses.append(train_loss)
        self.logger.scalar("train/epoch_loss", train_loss, epoch)
        val_loss, metrics = None, {}
        if self.val_loader is not None:
            val_loss = result.history[-1]["val_loss"]
            result.val_losses.append(val_loss)
            self.logger.scalar("val/epoch_loss", val_loss, epoch)
            metrics = {k: v for k, v in result.history[-1].items() if k not in ("step", "epoch", "val_loss")
                       and isinstance(v, (int, float))}  # fmt: skip
        lr = self.optimizer.param_groups[0]["lr"]
        self.logger.epoch_summary(epoch, self.pos.step, train_loss, val_loss, lr, metrics)

    def log_interval(self) -> None:
        loss, tokens = self.meter.take_interval()
        self.result.target_tokens += tokens
        lr = self.optimizer.param_groups[0]["lr"]
        self.logger.log_train(self.pos.step, loss, lr, tokens, epoch=self.pos.epoch + 1)

    def skip_update(self) -> None:
        """Drop the gradients of a step whose loss was NaN or infinite; too many in a row end the run."""
        self.optimizer.zero_grad(set_to_none=True)
        pos, limit = self.pos, self.config.max_bad_steps
        pos.bad_steps += 1
        if pos.bad_steps >= limit:
            raise TrainingError(
                f"step {pos.step + 1}: the loss was NaN or infinite in {pos.bad_steps} steps in a row "
                f"(max_bad_steps: {limit}); lower learning_rate or check the data; the last good checkpoint is kept"
            )
        log.warning(
            "step %d: NaN or infinite loss, update skipped (%d in a row, stopping at %d)",
            pos.step + 1,
            pos.bad_steps,
            limit,
        )

    # -- validation and checkpoints -----------------------------------------------------------------------
    def validate(self) -> None:
        """Validation loss and the validators' metrics, logged; the schedule and early stopping see them.

        The training random state is put back afterwards (each DataLoader iterator draws a seed from it), so how
        often a run validates never changes what it trains: a run stopped and extended equals the straight one."""
        pos, result = self.pos, self.result
        rng = capture_rng()
        record: dict[str, Any] = {"step": pos.step, "epoch": pos.epoch + 1}
        c = self.config
        loader: DataLoader = self.val_loader  # type: ignore[assignment]  # validate() runs only with a val_loader
        record["val_loss"] = validation_loss(self.model, loader, self.device, self.precision, c.pad_idx)
        if distributed.is_writer():  # the validators (BLEU decoding) run once, on rank 0
            for validator in self.validators:
                record.update(validator(self.model, pos.step))
        record = distributed.from_writer(record)  # so every rank takes the same decisions from it
        restore_rng(rng)
        for name, value in record.items():
            if name not in ("step", "epoch", "val_loss") and isinstance(value, (int, float)):
                self.logger.scalar(f"val/{name}", value, pos.step)
        self.logger.scalar("val/loss", record["val_loss"], pos.step)
        result.history.append(record)
        result.best_val_loss = min(result.best_val_loss, record["val_loss"])
        self.schedule.after_validation(record["val_loss"])
        metric = record["bleu"] if self.config.early_stopping_metric == "bleu" else record["val_loss"]
        if self.stopper.update(metric):
            result.best_metric, result.best_step = metric, pos.step
            self.pending_best = self.config.save_checkpoints
        self.last_validated_step = pos.step

    def save(self, last: bool = True) -> None:
        """best.pt after an improvement, and last.pt: both written at a resumable position."""
        if not self.config.save_checkpoints or not (last or self.pending_best):
            return
        state = self.state_dict()
        if self.pending_best:
            self.result.best_checkpoint = self.write(state, "best.pt")
            self.pending_best = False
        if last:
            self.result.last_checkpoint = self.write(state, "last.pt", keep_previous=True)
            if self.config.keep_checkpoints:
                self.write(state, step_checkpoint_name(self.pos.step))
                if distributed.is_writer():
                    prune_step_checkpoints(self.ckpt_dir, self.config.keep_checkpoints)

    def write(self, state: dict, name: str, keep_previous: bool = False) -> Path:
        """Rank 0 writes the checkpoint (the only process that writes the run directory); every rank gets its path."""
        path = self.ckpt_dir / name
        if distributed.is_writer():
            save_checkpoint(state, path, keep_previous=keep_previous)
        return path

    def state_dict(self) -> dict:
        """Everything a resume needs, as tensors and plain values (checkpoints load with weights_only=True).

        With several ranks a collective (call it on every rank): "ranks" holds each rank's random state and loss
        sums, the rest is rank 0's (the weights, optimizer and position are the same on every rank)."""
        self.pos.epoch_loss, self.pos.epoch_tokens = self.meter.epoch_sums()
        ranks = distributed.gather_to_writer(self.rank_state())
        vocabs = {k: getattr(getattr(self.train_loader, "dataset", None), k, None) for k in ("src_vocab", "tgt_vocab")}
        session = time.perf_counter() - self.session_start
        return {
            "model": self.model.state_dict(),
            "model_args": getattr(self.model, "args", {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.precision.scaler.state_dict(),
            "rng": capture_rng(),
            "position": dataclasses.asdict(self.pos),
            "sampler": _sampler_state(self.train_loader),
            "early_stopping": self.stopper.state_dict(),
            "result": _result_state(self.result, session, self.meter.pending_tokens()),
            "config": self.config.to_dict(grouped=False),
            "run_info": self.run_info,
            **{k: v.to_state() for k, v in vocabs.items() if v is not None},
            "world_size": distributed.world_size(),
            **({"ranks": ranks} if distributed.world_size() > 1 else {}),
        }

    def rank_state(self) -> dict:
        """This rank's own part of a checkpoint: its random state (dropout masks differ between ranks) and loss sums."""
        pos = self.pos
        return {"rng": capture_rng(), **{k: getattr(pos, k) for k in RANK_FIELDS}}

    def resume(self, path: str | Path, restart_epoch: bool = False) -> None:
        """Load a checkpoint's model, optimizer, schedule, random state and position."""
        state = load_checkpoint(path, map_location=self.device)
        saved, world = state.get("world_size", 1), distributed.world_size()
        if saved != world:
            raise CheckpointError(
                f"{path}: written by a run of {saved} process(es), this one has {world}; resume with the same "
                "number of processes (torchrun --nnodes x --nproc_per_node)"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["scheduler"])
            self.precision.scaler.load_state_dict(state["scaler"])
            self.stopper.load_state_dict(state["early_stopping"])
            self.pos = Position(**state["position"])
            _load_result_state(self.result, state["result"])
            restore_rng(state["rng"])
            if "ranks" in state:  # this rank's own random state and loss sums
                mine = state["ranks"][distributed.rank()]
                restore_rng(mine["rng"])
                self.pos = dataclasses.replace(self.pos, **{k: mine[k] for k in RANK_FIELDS})
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: cannot resume from this checkpoint ({first_line(e)})") from None
        if restart_epoch and self.pos.batch:
            self.pos.batch, self.pos.epoch_loss, self.pos.epoch_tokens = 0, 0.0, 0
        pos = self.pos
        _warn_if_batch_order_changed(state.get("sampler"), self.train_loader, path)
        log.info("resumed from step %d (epoch %d, batch %d) of %s", pos.step, pos.epoch + 1, pos.batch, path)

    def interrupt(self, signum: int) -> None:
        """A signal asked to stop: save last.pt where the loop is and raise TrainingInterrupted."""
        self.save()
        distributed.barrier()  # torchrun stops the group when one rank exits: wait until last.pt is written
        name = signal.Signals(signum).name
        last = self.result.last_checkpoint
        where = f"; saved {last}, continue with --resume" if last else ""
        raise TrainingInterrupted(f"{name} received: stopped at step {self.pos.step}{where}", signum)


RANK_FIELDS = ("epoch_rng", "epoch_loss", "epoch_tokens")  # Position fields each rank has its own of


def _planned_steps(batches_per_epoch: int, config: Config) -> int:
    """Optimizer steps the run is planned for: every epoch's steps, or max_steps if that comes first."""
    total = math.ceil(batches_per_epoch / config.accumulation_steps) * config.num_epochs
    return min(total, config.max_steps) if config.max_steps else total


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a seeded sampler (ours, or a DistributedSampler) which epoch it is, so the order depends on it."""
    sampler: Any
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _warn_if_batch_order_changed(saved: dict | None, loader: DataLoader, path: str | Path) -> None:
    """A checkpoint of a version that drew batches differently: the rest of the run differs from what it would be."""
    sampler = getattr(loader, "batch_sampler", None)
    now = getattr(sampler, "ORDER", None)
    if isinstance(saved, dict) and now is not None and saved.get("order", 1) != now:
        log.warning(
            "%s: written by a torchlingo version that ordered batches differently; from here on the run sees other "
            "batches than that version would have drawn (the resume is not exact)",
            path,
        )


def _sampler_state(loader: DataLoader) -> dict | None:
    sampler: Any = getattr(loader, "batch_sampler", None)
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
