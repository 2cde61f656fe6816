"""KVCache: the keys and values a decoder has already computed, so that each decoding step computes only its own.

Self-attention keys/values grow by one position a step; cross-attention ones (the source) are computed once, at the
first step. Rows are what the decoder decodes: sentences (greedy) or sentences x beams (beam search) on the
self-attention side, always sentences on the cross-attention side, since a sentence's beams share its source (see
`CrossAttention` in transformer.py).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every decoder layer for incremental decoding.

    Self-attention keys/values live in buffers with room for `capacity` positions, so a step writes its one new
    position instead of copying the whole past (the room doubles when a sequence outlives it)."""

    def __init__(self, num_layers: int, capacity: int = 64):
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers  # (rows, H, capacity, D/H)
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers  # (sentences, H, S, D/H)
        self.length = 0  # positions decoded so far
        self.capacity = capacity  # positions a layer's first buffers make room for

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values (rows, H, new, D/H) after the cached ones; returns views of all of them."""
        end = self.length + k.size(2)
        buffers = self.self_kv[layer]
        if buffers is None or end > buffers[0].size(2):
            room = max(self.capacity, end) if buffers is None else max(2 * buffers[0].size(2), end)
            grown = [t.new_empty(t.size(0), t.size(1), room, t.size(3)) for t in (k, v)]  # (rows, H, room, D/H)
            if buffers is not None:
                for new, old in zip(grown, buffers):
                    new[:, :, : self.length] = old[:, :, : self.length]
            buffers = self.self_kv[layer] = (grown[0], grown[1])
        buffers[0][:, :, self.length : end] = k
        buffers[1][:, :, self.length : end] = v
        return buffers[0][:, :, :end], buffers[1][:, :, :end]  # (rows, H, end, D/H)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder to) these rows of both caches: greedy decoding drops its finished sentences."""
        self.reorder(rows)
        self.select_source(rows)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep these rows of the self-attention cache, in this order (beam search: each new beam's origin).

        One buffer at a time: each old one is freed before the next copy is made, so a reorder needs room for one
        extra buffer, not a second cache (beam search reorders at every step)."""

        def pick(t: torch.Tensor) -> torch.Tensor:  # copies the filled positions only, in one pass
            out = t.new_empty(rows.numel(), *t.shape[1:])
            torch.index_select(t[:, :, : self.length], 0, rows, out=out[:, :, : self.length])
            return out

        for layer in range(len(self.self_kv)):  # not enumerate(): its reused result tuple would keep a pair alive
            kv, self.self_kv[layer] = self.self_kv[layer], None
            if kv is not None:
                k, v = kv
                del kv  # now `k` and `v` hold the only references: each old buffer goes as its copy replaces it
                k = pick(k)
                v = pick(v)
                self.self_kv[layer] = (k, v)

    def select_source(self, rows: torch.Tensor) -> None:
        """Keep these rows (sentences) of the cross-attention cache."""
        self.cross_kv = [
            None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows)) for kv in self.cross_kv
        ]
