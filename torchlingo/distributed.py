"""Data-parallel training under torchrun: one process per device, each training on its share of every step's batches.

    torchrun --nproc_per_node 4 -m torchlingo train configs/base.yaml

torchrun starts the processes and tells each one its place in the environment (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT). This module is all the rest of torchlingo knows about it:

- where this process is: `rank()`, `world_size()`, `is_writer()` (rank 0, the one process that writes the run
  directory); `wait_for_writer()` ... `writer_ready()` (rank 0 prepares something, then the others read it)
- `setup(device)`: join the process group (NCCL on CUDA, gloo on CPU), each rank on its own cuda:LOCAL_RANK
- `wrap(model)`: DistributedDataParallel, which averages the gradients over the ranks during backward;
  `gradient_sync(ddp, False)` skips that on the micro-steps of gradient accumulation
- the agreements that keep the ranks in step, one collective each: `token_share` (the loss is normalized by the
  target tokens of all ranks), `all_finite` (a NaN on one rank skips the update on every rank), `agreed_signal`
  (SIGTERM stops every rank after the same step), `from_writer` (rank 0's validation record, so early stopping
  and the schedule decide once), `sum_over_ranks`, `gather_to_writer` (each rank's random state for checkpoints)

Outside torchrun (WORLD_SIZE unset or 1) every function is a no-op that hands its input back: a single process runs
the code, and computes the numbers, it always did.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import io
import logging
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
import torch.distributed as dist

from .errors import ConfigError, TrainingError, first_line

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader

log = logging.getLogger("torchlingo")
_T = TypeVar("_T")

# The waits on rank 0 (reading the corpus and training the tokenizer, BLEU decoding, writing a checkpoint) go through
# a gloo group with this timeout; the collectives of a training step keep torch's default (10 min NCCL, 30 min gloo).
WAIT_TIMEOUT = timedelta(hours=2)
_cpu_group = None  # the gloo group for waits and small CPU-side agreements, once setup() has run


# -- where this process is ----------------------------------------------------------------------------------
def world_size() -> int:
    """Processes training together: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    """This process' place among them, 0 .. world_size() - 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def local_rank() -> int:
    """This process' place on its machine: the GPU it trains on."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_writer() -> bool:
    """True in the one process that writes the run directory (rank 0), and in a single process."""
    return rank() == 0


# -- joining the group ----------------------------------------------------------------------------------------
def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def bind_device(device: torch.device) -> torch.device:
    """This rank's device: cuda (or auto on a GPU machine) becomes cuda:LOCAL_RANK; CPU stays CPU."""
    if world_size() == 1:
        return device
    if device.type == "mps":
        raise ConfigError("device: mps cannot train with several processes; use device: cpu under torchrun")
    if device.type != "cuda":
        return device
    local = local_rank()
    if device.index is not None and device.index != local and int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:
        raise ConfigError(
            f"device: cuda:{device.index} puts every rank on one GPU; use device: cuda (or auto) under torchrun, "
            "each rank then takes cuda:LOCAL_RANK"
        )
    device = torch.device("cuda", local if device.index is None else device.index)
    torch.cuda.set_device(device)
    return device


def setup(device: torch.device) -> torch.device:
    """Under torchrun: join the process group (once per process) and return this rank's device. Ranks other than
    0 log errors only, so the progress and the warnings appear once. A single process gets `device` back."""
    global _cpu_group
    if world_size() == 1 and not dist.is_initialized():
        return device
    device = bind_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), device_id=device if device.type == "cuda" else None)
        atexit.register(shutdown)
    if _cpu_group is None:
        _cpu_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    if not is_writer():
        log.setLevel(logging.ERROR)
    return device


def shutdown() -> None:
    """Leave the process group (at exit)."""
    global _cpu_group
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _cpu_group = None


def _active() -> bool:
    return _cpu_group is not None and world_size() > 1


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module a training step calls: DistributedDataParallel around `model` when there are several ranks
    (it broadcasts rank 0's weights now, and averages the gradients in every backward), else `model` itself.
    Buffers are not broadcast before every forward: the model's only buffer is its constant table of positions."""
    if not _active():
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    new_name = "forward_sync_buffers" in inspect.signature(DDP).parameters  # torch >= 2.12; the old name warns
    buffers: dict[str, Any] = {"forward_sync_buffers" if new_name else "broadcast_buffers": False}
    with peer_failures_as_errors():
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **buffers)


def gradient_sync(module: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager[None]:
    """Context for one micro-batch's forward and backward: DDP all-reduces the gradients only when `sync` (the last
    micro-batch of an optimizer step); the others accumulate locally (`no_sync`)."""
    if sync or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return cast("DistributedDataParallel", module).no_sync()  # the module wrap() gave: DDP has no_sync


# -- agreements -----------------------------------------------------------------------------------------------
def token_share(n_tokens: torch.Tensor) -> torch.Tensor | None:
    """world_size x this rank's share of the micro-step's target tokens (None for one process).

    A rank's loss is the mean over its own tokens; times this factor, DDP's average of the gradients is the
    gradient of the mean over the tokens of all ranks: N ranks with max_tokens B train like one process with N x B."""
    if not _active():
        return None
    total = n_tokens.detach().clone()
    with peer_failures_as_errors():
        dist.all_reduce(total)
    return n_tokens.double() * world_size() / total.double()


def all_finite(finite: torch.Tensor) -> bool:
    """True when the step's loss was finite on every rank (a host sync: the one a step has anyway)."""
    if not _active():
        return bool(finite)
    flag = finite.to(torch.int32)
    with peer_failures_as_errors():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def agreed_signal(received: int | None) -> int | None:
    """The stop signal any rank has received (torchrun forwards SIGTERM / SIGINT to each, not at the same instant),
    so that every rank stops after the same step. Called once a step; on the CPU, no device sync."""
    if not _active():
        return received
    flag = torch.tensor(received or 0)
    with peer_failures_as_errors():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_cpu_group)
    return int(flag) or None


def sum_over_ranks(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors summed over the ranks (new tensors; the inputs are left as they are)."""
    if not _active():
        return tensors
    summed = tuple(t.detach().clone() for t in tensors)
    with peer_failures_as_errors():
        for t in summed:
            dist.all_reduce(t)
    return summed


def from_writer(obj: _T) -> _T:
    """Rank 0's `obj` on every rank (picklable values): one decision, taken on rank 0, followed everywhere."""
    if not _active():
        return obj
    box = [obj]
    with peer_failures_as_errors():
        dist.broadcast_object_list(box, src=0, group=_cpu_group)
    return box[0]


def gather_to_writer(obj: object) -> list | None:
    """[rank 0's obj, rank 1's, ...] on rank 0, None elsewhere; [obj] for one process. `obj` is made of tensors
    and plain values (a checkpoint's kind): it travels as torch.save bytes and is read back weights-only."""
    if not _active():
        return [obj]
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    out: list[Any] | None = [None] * world_size() if is_writer() else None
    with peer_failures_as_errors():
        dist.gather_object(buffer.getvalue(), out, dst=0, group=_cpu_group)
    return [torch.load(io.BytesIO(b), weights_only=True) for b in out] if out is not None else None


def barrier() -> None:
    """Wait until every rank is here (up to WAIT_TIMEOUT)."""
    if _active():
        with peer_failures_as_errors():
            dist.barrier(group=_cpu_group)


def wait_for_writer() -> None:
    """Ranks other than 0 wait here until rank 0 reaches `writer_ready()` (the two halves of one barrier): rank 0
    prepares something in between (the run directory, the tokenizer) that the others then read. If rank 0 fails
    instead, the others stop with it."""
    if not is_writer():
        barrier()


def writer_ready() -> None:
    """Rank 0: what the other ranks wait for in `wait_for_writer()` is written."""
    if is_writer():
        barrier()


@contextlib.contextmanager
def peer_failures_as_errors() -> Iterator[None]:
    """A collective that fails because another rank is gone (it raised an error, or was killed) becomes a one-line
    TrainingError: that rank has printed the cause, and torchrun stops the group."""
    try:
        yield
    except RuntimeError as e:
        if world_size() == 1 or not _peer_failure(e):
            raise
        raise TrainingError(
            f"rank {rank()}: stopped because another rank failed ({_reason(e)}); its error is above"
        ) from None


def _reason(e: RuntimeError) -> str:
    """ "Connection closed by peer [127.0.0.1]:41234" of gloo's "[.../pair.cc:553] Connection closed ... GLHF!"."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", first_line(e, 400))
    return text.split(". ")[0][:160]


def _peer_failure(e: RuntimeError) -> bool:
    text = str(e)
    distributed_error = getattr(dist, "DistError", ())
    return isinstance(e, distributed_error) or any(
        word in text for word in ("gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe")
    )


def check_shards(loader: DataLoader) -> None:
    """The training loader must give every rank the same number of batches, at least one: a rank with fewer would
    leave the others waiting in a collective. A loader that does not shard (every rank trains on the same
    batches) is allowed, with a warning."""
    if not _active():
        return
    samplers = (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None))
    if not any(getattr(s, "num_replicas", 1) > 1 for s in samplers):
        log.warning("the training loader is not sharded: every rank trains on the same batches (use make_loader)")
    counts = [None] * world_size()
    with peer_failures_as_errors():
        dist.all_gather_object(counts, len(loader), group=_cpu_group)
    if len(set(counts)) > 1 or not counts[0]:
        per_rank = ", ".join(f"rank {r}: {n}" for r, n in enumerate(counts))
        raise TrainingError(
            f"the training loader gives the ranks different or no batches an epoch ({per_rank}); build it with "
            "make_loader, whose sampler gives every rank the same number, and give it more batches than ranks"
        )
