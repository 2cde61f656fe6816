"""CPU fast paths, each measured and kept beside the textbook code it speeds up (the model file reads without them).

- `Dropout`: one 64-bit random draw gives the masks of four elements (about 2x faster than nn.Dropout on CPU,
  where dropout was a sixth of a bf16 training step).
- `attention_in_fp32`: under bf16 on CPU, attention itself runs in fp32 (PyTorch's bf16 CPU attention backward was
  38% of a step; the projections stay bf16).
- `use_fused_attention`: on CPU, attention is the formula itself (two matmuls and a softmax), which is 1.1-2.5x
  faster forward + backward than `scaled_dot_product_attention`'s fused CPU kernel at translation lengths; other
  devices use the fused kernels.
- `PackedLinear` / `pack_linears_`: bf16 linear weights reordered for oneDNN once, for decoding (1.2-1.7x per call
  at decoding shapes, bitwise-equal outputs).
- `quantize_linears_`: int8 linear layers for CPU decoding (`quantize: int8`), PyTorch's dynamic quantization
  (Multi30k 3+3 x 256, 8k vocabulary, fp32 CPU, 1 thread: greedy 1.5-1.7x, beam 5 1.46x; BLEU on 200 test
  sentences 35.3 -> 35.5 greedy, 35.9 -> 36.1 beam 5; quantizing the tied output projection too is most of the
  gain, at no BLEU cost).
- (in loss.py) `LogitsBuffer`: the fused loss's logits reuse one block instead of page-faulting a fresh one per step.
- `reuse_freed_memory`: glibc keeps up to 256 MB of freed memory for the next step instead of returning it and
  page-faulting it back (the `torchlingo` command calls it; the library itself changes nothing process-wide).
- `bound_kernel_caches`: oneDNN's bf16 matmuls cache a kernel per input shape, and token-budget batches bring new
  shapes every step (`torchlingo train` calls it: bf16 training's memory then stays at fp32's).

Each has an equivalence test in tests/test_fast_path.py or tests/test_decoding.py.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

import torch
import torch.nn as nn

from .runtime import cpu_has_fast_bf16


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPU, where PyTorch draws one random number per element, serially, and dropout
    was a sixth of a bf16 training step. One 64-bit draw here gives the keep decisions of four elements: each 16-bit
    lane is uniform, and kept when >= p * 2^16 - 2^15 (p rounded to 1/65536). About 2x faster than nn.Dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1).view(torch.int16)[:n]
        # A 0/1 mask in x's dtype: multiplying by a bool mask would convert it in forward and again in backward.
        keep = torch.ge(lanes.view(x.shape), round(self.p * 2**16) - 2**15, out=torch.empty_like(x))
        return (x * keep).mul_(1.0 / (1.0 - self.p))


def attention_in_fp32(x: torch.Tensor) -> bool:
    """bf16 on CPU (a bf16 model or bf16 autocast) computes attention in fp32, the projections in bf16: PyTorch's CPU
    attention kernels are 3-4x slower in bf16 (backward above all) and attention is a small share of the FLOPs."""
    return x.device.type == "cpu" and (
        x.dtype == torch.bfloat16
        or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
    )


def use_fused_attention(q: torch.Tensor) -> bool:
    """Whether attention goes through `F.scaled_dot_product_attention` (everywhere but the CPU).

    On CPU its flash kernel tiles for long sequences; at translation lengths (8-80 positions, head size 64) two
    matmuls and a softmax are faster (fp32 forward + backward, 2 threads: 2.0-2.5x at 8-16 positions, 1.1-1.5x at
    36-80; the decoder's causal self-attention gains most). Same values: see tests/test_fast_path.py."""
    return q.device.type != "cpu"


def reuse_freed_memory(keep_mb: int = 256) -> bool:
    """Ask glibc to keep up to `keep_mb` of freed memory for reuse (Linux only; True if applied). Process-wide, so
    the `torchlingo` command calls it, not the library.

    A training step frees its activations (hundreds of MB) at the end of backward; glibc's default returns freed
    memory at the top of the heap above a threshold of at most 64 MB, and the next step page-faults it back in (19k
    page faults a step against 5k, at the speed benchmark's batches). A fixed threshold keeps that memory, bounded by
    `keep_mb` (blocks over 32 MB still get their own mappings; the logits, the one such block, have LogitsBuffer).
    The previous setting here (mmap off, a 1 GB threshold) let the heap grow with every new batch shape.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, keep_mb << 20))


# Each caches one oneDNN matmul per input shape, 1024 by default: oneDNN's own primitive cache, and the one in
# PyTorch's ideep layer above it.
KERNEL_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_kernel_caches(entries: int = 64) -> bool:
    """Keep at most `entries` oneDNN kernels per cache (a setting already in the environment wins; True if one was
    set). Both are read at the first bf16 matmul, so this must come before it; process-wide, so the command calls it.

    bf16 on CPU runs matmuls through oneDNN, which caches a kernel (and its buffers) for each input shape; batches of
    a token budget have new shapes nearly every step, so a run's memory grew by about 1 MB a step until each cache
    held 1,024 (Multi30k recipe, 1 thread: 1.96 GB after 120 steps, 1.04 GB with 64 entries, same loss). One step
    needs about 36 kernels, so 64 keep the reuse within a step; across steps shapes rarely repeat anyway."""
    unset = [name for name in KERNEL_CACHES if name not in os.environ]
    for name in unset:
        os.environ[name] = str(entries)
    return bool(unset)


_OPS = torch.ops.mkldnn


class PackedLinear(nn.Module):
    """`nn.Linear` in bf16 whose weight oneDNN has reordered once (`rows`: the row count to tune the layout for).

    It keeps the linear layer's own weight and bias (same parameters, same state_dict keys); the packed copy is
    made once, so later changes to the weight do not reach it."""

    def __init__(self, linear: nn.Linear, rows: int = 64):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.packed_weight = _OPS._reorder_linear_weight(linear.weight.detach(), rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OPS._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def can_pack(model: nn.Module) -> bool:
    """True when `model` is on a CPU with native bf16 matmuls, in bf16, and this PyTorch has oneDNN's packed linear."""
    p = next(model.parameters(), None)
    return (
        p is not None
        and p.device.type == "cpu"
        and p.dtype == torch.bfloat16
        and cpu_has_fast_bf16()
        and hasattr(_OPS, "_reorder_linear_weight")
        and hasattr(_OPS, "_linear_pointwise")
    )


def pack_linears_(model: nn.Module) -> nn.Module:
    """Replace every bf16 `nn.Linear` of `model` by a `PackedLinear`, in place; returns `model`."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16:
                setattr(module, name, PackedLinear(child))
    return model


def quantized_engines() -> list[str]:
    """The quantized CPU backends this PyTorch has (x86, fbgemm, onednn, qnnpack); empty where it has none."""
    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


def quantize_linears_(model: nn.Module) -> nn.Module:
    """Replace every fp32 `nn.Linear` of `model` (on CPU) by PyTorch's int8 dynamic-quantized linear, in place.

    The weights are int8 per tensor; each call quantizes its input on the fly and returns fp32. A tied output
    projection gets its own int8 copy (the embedding stays fp32). Raises a ConfigError where this PyTorch has no
    quantized CPU kernels (torch.backends.quantized.engine)."""
    from .errors import ConfigError

    engines = quantized_engines()
    if not engines:
        raise ConfigError("quantize: int8 needs PyTorch's quantized CPU ops, which this build lacks; use none")
    if torch.backends.quantized.engine == "none":
        torch.backends.quantized.engine = engines[0]
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; the built-in still works
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def is_quantized_linear(module: nn.Module) -> bool:
    """True for the int8 linear layers `quantize_linears_` makes."""
    return isinstance(module, torch.ao.nn.quantized.dynamic.Linear)
