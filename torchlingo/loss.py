"""The training objective: label-smoothed cross-entropy over the non-padding target tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_loss(model, src: torch.Tensor, tgt: torch.Tensor, pad_idx: int = 0,
                  label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced loss of a batch: (mean loss per target token, number of target tokens).

    `tgt` is `<s> y1 .. yn </s> <pad>..`; the decoder reads tgt[:, :-1] and predicts tgt[:, 1:]. Only the
    non-padding positions are projected to the vocabulary (the largest matmul), so padding costs nothing and
    cannot change the loss or the gradients. Equal to `CrossEntropyLoss(ignore_index=pad_idx, label_smoothing=ls)`
    over `model(src, tgt[:, :-1])`.
    """
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    hidden = model.decode_hidden(tgt_in, *model.encode(src))
    keep = tgt_out != pad_idx
    logits = model.project(hidden[keep])
    if logits.dtype in (torch.float16, torch.bfloat16):  # softmax over the vocabulary in fp32 under autocast
        logits = logits.float()
    total = F.cross_entropy(logits, tgt_out[keep], label_smoothing=label_smoothing, reduction="sum")
    n_tokens = keep.sum()
    return total / n_tokens.clamp(min=1), n_tokens
