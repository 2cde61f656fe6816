"""The small builders the training loop uses: device, precision (autocast + grad scaling), optimizer, RNG state."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from .config import Config
from .errors import ConfigError

if TYPE_CHECKING:
    from types import FrameType

log = logging.getLogger("torchlingo")


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; an explicit device that is not there is a config error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but CUDA is not available; use device: cpu or auto")
    return device


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matmuls (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `config.amp` on this device, or None for full fp32."""
    if amp == "none":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError(f"amp: fp16 needs a CUDA device (this run is on {device.type}); use bf16 or none")
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":  # auto
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


class Precision:
    """Autocast for the forward pass and, for fp16, a GradScaler around backward and the optimizer step."""

    def __init__(self, config: Config, device: torch.device):
        self.device, self.dtype = device, resolve_amp_dtype(config.amp, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype is torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(
        self, optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], grad_clip: float
    ) -> torch.Tensor | None:
        """Unscale, clip to `grad_clip` (0: no clipping), step and update the scale. Returns the gradient norm."""
        norm = None
        if grad_clip > 0:
            self.scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        return norm


def build_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """Adam or AdamW; weight decay only on matrices (not biases, norms or embeddings); fused kernels where supported."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    kwargs: dict[str, Any] = dict(lr=config.learning_rate, betas=tuple(config.adam_betas), eps=config.adam_eps)
    device = next(model.parameters()).device
    if device.type in ("cpu", "cuda"):
        try:
            return cls(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError):
            pass
    return cls(groups, **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict:
    """Every random state that affects training (python, numpy, torch CPU and CUDA), as checkpointable values."""
    np_state = cast(tuple, np.random.get_state())  # the legacy tuple (name, keys, pos, has_gauss, gauss)
    state = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].copy()),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put back a `capture_rng` state (its tensors may be on the GPU, from a checkpoint loaded with map_location)."""
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy(), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class StopSignals:
    """While training: SIGINT, SIGTERM and SIGHUP (a closed terminal, a dropped ssh session) set `received`; the loop
    saves last.pt after the current step and stops. A second SIGINT while waiting raises KeyboardInterrupt at once.
    Installed only in the main thread (Python delivers signals there); elsewhere `received` stays None."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: stopping after this step and saving last.pt", signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
