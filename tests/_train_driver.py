"""A tiny training run driven through the Python API, for the kill / resume / signal tests (run as a subprocess).

    python tests/_train_driver.py RUN_PARENT DATA_DIR FAULT [--resume] [KEY=VALUE ...]
    python tests/_train_driver.py cli FAULT train CONFIG [--resume]     (the CLI instead of the Python API)
    torchrun --standalone --nproc_per_node 2 tests/_train_driver.py ...  (the same, one process per rank)

FAULT injects one fault by wrapping a torchlingo function in this process only (the library has no test hooks):
  none          train normally
  batch:N       SIGKILL this process at the start of the N-th training batch (mid-epoch when N is)
  save:N        SIGKILL during the N-th write of last.pt: the temporary file is written and fsynced, not renamed
  val:N         SIGKILL inside the N-th validation
  nan:A-B       the loss of batches A..B (1-based, counted in this process) is NaN
  sleep:N       sleep 3 s at the start of the N-th batch (a window for the signal tests), printing "READY"
                (under torchrun "READY PID", PID the process to signal)
  error:N       raise a DataError at the start of the N-th batch (the CLI prints it as its one-line error)
  worse:N       from the N-th validation on, this process' validation loss rises (1, 2, 3, ...)
  record        (cli) no fault: print "PREPARING rank R" when this rank prepares shards, and write RUN/final.pt
                (final.rankR.pt) with the weights, steps and batches per epoch train_model ended with
  FAULT@R       (under torchrun) the fault in rank R only, e.g. nan:3-3@1; FAULT,FAULT: both
At the end it writes RUN/final.pt: the model weights and the TrainResult's histories (rank R > 0: final.rankR.pt).
"""

import os
import signal
import sys
import time
import types

import torch
import yaml

torch.set_num_threads(1)  # bitwise equality needs the same thread count in every run

from tiny import QUIET, TINY_MODEL  # noqa: E402

import torchlingo.checkpoint as C  # noqa: E402
import torchlingo.files as F  # noqa: E402
import torchlingo.training as T  # noqa: E402
from torchlingo.config import Config  # noqa: E402
from torchlingo.data_processing import NMTDataset, make_loader  # noqa: E402
from torchlingo.errors import DataError, TorchlingoError  # noqa: E402
from torchlingo.logs import log_to_stderr  # noqa: E402
from torchlingo.models import SimpleTransformer  # noqa: E402

TINY = dict(
    **TINY_MODEL,
    batch_size=8,
    num_epochs=2,
    learning_rate=3e-3,
    warmup_steps=4,
    checkpoint_interval=3,
    val_interval=4,
    patience=3,
    **QUIET,
    experiment_name="run",
    seed=7,
)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def inject(faults: str) -> None:
    for fault in faults.split(","):
        inject_one(fault)


def inject_one(fault: str) -> None:
    fault, _, only_rank = fault.partition("@")
    kind, _, arg = fault.partition(":")
    if kind == "none" or (only_rank and int(only_rank) != int(os.environ.get("RANK", 0))):
        return
    if kind in ("batch", "sleep", "nan", "error"):
        lo, _, hi = arg.partition("-")
        lo, hi = int(lo), int(hi or lo)
        calls = [0]

        class FaultyLoss(T.LabelSmoothedCrossEntropy):  # the training loss (validation uses loss.py's own)
            def forward(self, *args, **kwargs):
                calls[0] += 1
                if kind == "batch" and calls[0] == lo:
                    kill_self()
                if kind == "sleep" and calls[0] == lo:
                    print(f"READY {os.getpid()}" if "RANK" in os.environ else "READY", flush=True)
                    time.sleep(3)
                if kind == "error" and calls[0] == lo:
                    raise DataError("injected.tsv:3: injected error")
                loss, n = super().forward(*args, **kwargs)
                if kind == "nan" and lo <= calls[0] <= hi:
                    loss = loss * float("nan")
                return loss, n

        T.LabelSmoothedCrossEntropy = FaultyLoss
    elif kind == "val":
        real_val, calls = T.validation_loss, [0]

        def validation_loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] == int(arg):
                kill_self()
            return real_val(*args, **kwargs)

        T.validation_loss = validation_loss
    elif kind == "worse":
        real_val, calls = T.validation_loss, [0]

        def validation_loss(*args, **kwargs):
            calls[0] += 1
            value = real_val(*args, **kwargs)  # every rank takes part in the collective
            return value if calls[0] < int(arg) else float(calls[0])

        T.validation_loss = validation_loss
    elif kind == "save":
        calls = [0]

        def replace(src, dst):
            if os.path.basename(dst) == "last.pt":
                calls[0] += 1
                if calls[0] == int(arg):
                    assert os.path.getsize(src) > 0  # the temporary file is complete and fsynced
                    kill_self()
            os.replace(src, dst)

        F.os = types.SimpleNamespace(**{**vars(os), "replace": replace})  # files.py's view of os only
    elif kind == "record":
        record()
    else:
        raise SystemExit(f"unknown fault {fault}")


def record() -> None:
    """Wrap experiment.train_model and prepare.prepare_shards to report what this rank did (the CLI's run)."""
    import torchlingo.data_processing.prepare as S
    import torchlingo.experiment as E

    real_train, real_prepare, rank = E.train_model, S.prepare_shards, int(os.environ.get("RANK", 0))

    def prepare_shards(*args, **kwargs):
        print(f"PREPARING rank {rank}", flush=True)
        return real_prepare(*args, **kwargs)

    def train_model(model, train_loader, val_loader, config, **kwargs):
        result = real_train(model, train_loader, val_loader, config, **kwargs)
        final = {"model": model.state_dict(), "steps": result.steps, "batches": len(train_loader)}
        final["dataset"] = type(train_loader.dataset).__name__
        torch.save(final, config.run_dir / (f"final.rank{rank}.pt" if rank else "final.pt"))
        return result

    E.train_model, S.prepare_shards = train_model, prepare_shards


def main() -> None:
    log_to_stderr()  # the library installs no handler; the tests read the progress lines from stderr
    if sys.argv[1] == "cli":  # _train_driver.py cli FAULT train CONFIG ...: the CLI, with the fault injected
        from torchlingo.cli import main as cli_main

        inject(sys.argv[2])
        raise SystemExit(cli_main(sys.argv[3:]))
    parent, data, fault, *rest = sys.argv[1:]
    resume = "--resume" in rest
    overrides = dict(TINY, tensorboard_dir=parent)
    for item in (r for r in rest if "=" in r):
        key, _, value = item.partition("=")
        overrides[key] = type(overrides[key])(value) if key in overrides else yaml.safe_load(value)
    config = Config(**overrides)
    train = NMTDataset(os.path.join(data, "train.tsv"), config=config)
    val = NMTDataset(os.path.join(data, "val.tsv"), train.src_vocab, train.tgt_vocab, config=config)
    torch.manual_seed(config.seed)
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config=config)
    resume_from = C.find_resumable(config.run_dir / "checkpoints") if resume else None
    inject(fault)
    try:
        result = T.train_model(
            model,
            make_loader(train, config, shuffle=True),
            make_loader(val, config, shuffle=False),
            config,
            resume_from=resume_from,
        )
    except TorchlingoError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(getattr(e, "exit_code", 2)) from None
    torch.save(
        {
            "model": model.state_dict(),
            "train_losses": result.train_losses,
            "val_losses": result.val_losses,
            "history": result.history,
            "steps": result.steps,
            "stopped_early": result.stopped_early,
            "resumed_from": str(resume_from),
        },
        config.run_dir / (f"final.rank{rank}.pt" if (rank := int(os.environ.get("RANK", 0))) else "final.pt"),
    )


if __name__ == "__main__":
    main()
