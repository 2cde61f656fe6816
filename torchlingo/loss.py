"""The training objective: label-smoothed cross-entropy over the non-padding target tokens."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_CHUNK = 128  # rows of log-probabilities at a time: 128 x 8k fp32 stays in a core's L2 cache


class LabelSmoothedCrossEntropy(torch.nn.Module):
    """Label-smoothed cross-entropy of decoder states against target ids, over the non-padding positions only.

    The loss owns the projection to the vocabulary (as in torchtune): it receives the decoder states and the model's
    output layer, and projects only the non-padding positions (the largest matmul of a step), so padding costs
    nothing and cannot change the loss or the gradients. Returns (mean loss per target token, number of tokens).
    Equal to `CrossEntropyLoss(ignore_index=pad_idx, label_smoothing=ls)` over the logits `output_proj(hidden)`.
    """

    def __init__(self, pad_idx: int = 0, label_smoothing: float = 0.0):
        super().__init__()
        self.pad_idx, self.label_smoothing = pad_idx, label_smoothing
        self.logits_buffer = LogitsBuffer()  # the fused path's logits reuse one allocation from step to step

    def forward(
        self, hidden: torch.Tensor, output_proj: torch.nn.Module, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = targets != self.pad_idx  # (B, T)
        total = self.summed(hidden[keep], output_proj, targets[keep])  # hidden[keep]: (tokens, D)
        n_tokens = keep.sum()
        return total / n_tokens.clamp(min=1), n_tokens

    def summed(self, hidden: torch.Tensor, output_proj: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
        """Summed loss of (tokens, D) states: the fused projection + loss where it applies, else the plain one."""
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        plain = not isinstance(output_proj, torch.nn.Linear) or output_proj.bias is not None
        if dtype is torch.float16 or plain:
            # fp16 needs the loss scale inside the logits' gradient, which the fused path keeps unscaled
            logits = output_proj(hidden).float()
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing, reduction="sum")
        buffer = self.logits_buffer if hidden.device.type == "cpu" else None  # CUDA's allocator caches already
        return ProjectedCrossEntropy.apply(hidden, output_proj.weight, targets, self.label_smoothing, dtype, buffer)


def sequence_loss(
    model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor, pad_idx: int = 0, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced loss of a batch in one call: (mean loss per target token, number of target tokens).

    `tgt` is `<s> y1 .. yn </s> <pad>..`; the decoder reads tgt[:, :-1] and predicts tgt[:, 1:].
    """
    hidden = model(src, tgt[:, :-1], hidden_only=True)  # through __call__: a torch.compile'd model runs compiled
    return LabelSmoothedCrossEntropy(pad_idx, label_smoothing)(hidden, model.output_proj, tgt[:, 1:])


class LogitsBuffer:
    """One reusable block of memory for the (tokens x vocabulary) logits of the fused loss, on CPU.

    The logits are the one tensor of a training step over glibc's 32 MB mmap limit: allocated fresh, their pages
    fault in one by one at every step (the vocabulary softmax ran 3x slower). Keeping this one block, sized to the
    largest batch so far, removes that cost without touching the process's allocator (which made memory grow).
    A step's logits are saved for its backward; autograd refuses (rather than miscomputes) a backward whose
    logits a later forward has overwritten."""

    def __init__(self) -> None:
        self.block: torch.Tensor | None = None

    def take(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A (rows, cols) tensor of `like`'s dtype and device, in the kept block (grown by 1/8 when too small)."""
        need, block = rows * cols, self.block
        if block is None or block.numel() < need or block.dtype != like.dtype or block.device != like.device:
            block = self.block = like.new_empty(need + need // 8)
        return block[:need].view(rows, cols)


class ProjectedCrossEntropy(torch.autograd.Function):
    """sum over rows of label-smoothed cross-entropy(hidden @ weight.T, targets), with the softmax in fp32.

    Under bf16 the (tokens x vocabulary) logits are the largest tensor of a step. Written out with autocast they are
    cast to fp32, log-softmaxed, smoothed and differentiated in five full passes over memory. Here they are made
    once in `dtype` and overwritten, a cache-sized chunk at a time, by their gradient: softmax - (1-ls)*onehot - ls/V,
    since d loss / d logits of label-smoothed cross-entropy does not depend on anything after the loss.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        label_smoothing: float,
        dtype: torch.dtype,
        buffer: LogitsBuffer | None = None,
    ) -> torch.Tensor:
        h, w = hidden.to(dtype), weight.to(dtype)
        if buffer is None:
            logits = h @ w.t()
        else:
            logits = torch.mm(h, w.t(), out=buffer.take(h.size(0), w.size(0), h))
        vocab, total = w.size(0), hidden.new_zeros((), dtype=torch.float32 if dtype != torch.float64 else dtype)
        differentiate = any(ctx.needs_input_grad[:2])  # not under no_grad (validation)
        for start in range(0, logits.size(0), _CHUNK):
            chunk, y = logits[start : start + _CHUNK], targets[start : start + _CHUNK, None]
            log_probs = torch.log_softmax(chunk, -1, dtype=total.dtype)
            nll, uniform = -log_probs.gather(1, y).sum(), -log_probs.sum() / vocab
            total += (1 - label_smoothing) * nll + label_smoothing * uniform
            if not differentiate:
                continue
            grad = log_probs.exp_().sub_(label_smoothing / vocab)
            grad.scatter_add_(1, y, grad.new_full(y.shape, label_smoothing - 1))
            chunk.copy_(grad)
        if differentiate:
            ctx.save_for_backward(logits, h, w)
        ctx.dtypes = hidden.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None, None]:
        grad_logits, h, w = ctx.saved_tensors
        grad_hidden = (grad_logits @ w).to(ctx.dtypes[0]).mul_(grad_total)
        grad_weight = (grad_logits.t() @ h).to(ctx.dtypes[1]).mul_(grad_total)
        return grad_hidden, grad_weight, None, None, None, None
