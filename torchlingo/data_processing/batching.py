"""Batches: `collate_fn` pads sentence pairs, `TokenBudgetBatchSampler` groups sentences of similar length."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from .vocab import BOS_IDX, EOS_IDX, PAD_IDX


def pad_batch(seqs: Sequence[torch.Tensor], pad_idx: int = PAD_IDX, bos: bool = True, eos: bool = True) -> torch.Tensor:
    """Stack id sequences into a (batch, max_len) LongTensor, wrapped in BOS/EOS and right-padded."""
    extra = int(bos) + int(eos)
    out = torch.full((len(seqs), max(len(s) for s in seqs) + extra), pad_idx, dtype=torch.long)
    for row, s in zip(out, seqs):
        n = len(s)
        if bos:
            row[0] = BOS_IDX
        row[int(bos) : int(bos) + n] = s
        if eos:
            row[int(bos) + n] = EOS_IDX
    return out


def collate_fn(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_idx: int = PAD_IDX
) -> tuple[torch.Tensor, torch.Tensor]:
    """[(src_ids, tgt_ids), ...] -> (src, tgt), each `<s> ids </s>` right-padded with `pad_idx`."""
    src, tgt = zip(*batch)
    return pad_batch(src, pad_idx), pad_batch(tgt, pad_idx)


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of sentences of similar length whose padded size stays within `max_tokens`.

    The order depends only on (seed, epoch): sentences are shuffled, sorted by length (target, then source), cut
    into batches under the budget, and the batches shuffled. `set_epoch` picks the epoch; `state_dict` records it.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int | None,
        shuffle: bool = True,
        seed: int = 0,
        max_sentences: int | None = None,
    ):
        if max_tokens is None and max_sentences is None:
            raise ValueError("give max_tokens, max_sentences or both")
        max_tokens = max_tokens or 2**62
        self.src_lengths = [int(n) + 2 for n in src_lengths]  # + BOS/EOS as collate_fn adds them
        self.tgt_lengths = [int(n) + 2 for n in tgt_lengths]
        self.max_tokens, self.shuffle, self.seed, self.max_sentences = max_tokens, shuffle, seed, max_sentences
        self.epoch = 0
        self._batches: list[list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._batches = epoch, None

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self._batches = state["seed"], None
        self.epoch = state["epoch"]

    def batches(self) -> list[list[int]]:
        """This epoch's batches (computed once per epoch)."""
        if self._batches is None:
            rng = random.Random(self.seed * 1_000_003 + self.epoch)
            order = list(range(len(self.src_lengths)))
            if self.shuffle:
                rng.shuffle(order)
            order.sort(key=lambda i: (self.tgt_lengths[i], self.src_lengths[i]))  # stable: ties stay shuffled
            batches, current, longest = [], [], 0
            for i in order:
                need = max(longest, self.src_lengths[i], self.tgt_lengths[i])
                full = self.max_sentences is not None and len(current) >= self.max_sentences
                if current and (need * (len(current) + 1) > self.max_tokens or full):
                    batches.append(current)
                    current, need = [], max(self.src_lengths[i], self.tgt_lengths[i])
                current.append(i)
                longest = need
            if current:
                batches.append(current)
            if self.shuffle:
                rng.shuffle(batches)
            self._batches = batches
        return self._batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def make_loader(dataset, config, shuffle: bool) -> DataLoader:
    """The DataLoader `torchlingo train` uses: length-bucketed batches of `config.max_tokens` tokens (when > 0) or
    of `config.batch_size` sentences, in an order fixed by (seed, epoch) so that a resumed run sees the same batches."""
    sampler = TokenBudgetBatchSampler(
        dataset.src_lengths,
        dataset.tgt_lengths,
        config.max_tokens or None,
        shuffle=shuffle,
        seed=config.seed,
        max_sentences=None if config.max_tokens else config.batch_size,
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=config.num_workers)
