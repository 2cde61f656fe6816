"""Batches: `collate_fn` pads sentence pairs, `TokenBudgetBatchSampler` groups sentences of similar length."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from .. import distributed
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

    Several ranks (torchrun; `num_replicas` and `rank` default to its environment): every rank computes the same
    global batch list and takes every num_replicas-th batch from its rank on, so each round of num_replicas
    batches is one optimizer step of all ranks together. With `even` (training) the last round is dropped when it
    is incomplete, so every rank has the same number of batches and steps; which batches fall in it changes with
    the epoch's shuffle. Without `even` (evaluation) every batch is kept, and a rank can have one batch fewer.
    One process: the global list itself, exactly as without sharding.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int | None,
        shuffle: bool = True,
        seed: int = 0,
        max_sentences: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        even: bool = True,
    ):
        if max_tokens is None and max_sentences is None:
            raise ValueError("give max_tokens, max_sentences or both")
        self.num_replicas = distributed.world_size() if num_replicas is None else num_replicas
        self.rank = distributed.rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in 0 .. num_replicas - 1 = {self.num_replicas - 1}")
        self.even = even
        max_tokens = max_tokens or 2**62
        self.src_lengths = [int(n) + 2 for n in src_lengths]  # + BOS/EOS as collate_fn adds them
        self.tgt_lengths = [int(n) + 2 for n in tgt_lengths]
        self.max_tokens, self.shuffle, self.seed, self.max_sentences = max_tokens, shuffle, seed, max_sentences
        self.epoch = 0
        self._batches: list[list[int]] | None = None  # all ranks' batches of this epoch
        self._shard: list[list[int]] | None = None  # this rank's

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._batches, self._shard = epoch, None, None

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self._batches, self._shard = state["seed"], None, None
        self.epoch = state["epoch"]

    def batches(self) -> list[list[int]]:
        """This rank's batches of this epoch: with one process, all of them (`global_batches`)."""
        if self._shard is None:
            batches, n = self.global_batches(), self.num_replicas
            if self.even:
                batches = batches[: len(batches) // n * n]  # drop an incomplete last round
            self._shard = batches[self.rank :: n]
        return self._shard

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches of all ranks together (computed once per epoch)."""
        if self._batches is None:
            rng = random.Random(self.seed * 1_000_003 + self.epoch)
            order = list(range(len(self.src_lengths)))
            if self.shuffle:
                rng.shuffle(order)
            order.sort(key=lambda i: (self.tgt_lengths[i], self.src_lengths[i]))  # stable: ties stay shuffled
            current: list[int] = []
            batches, longest = [], 0
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
    of `config.batch_size` sentences, in an order fixed by (seed, epoch) so that a resumed run sees the same batches.

    Under torchrun each rank gets its share of the batches; a training loader (`shuffle`) gives every rank the same
    number, an evaluation loader keeps every batch (see TokenBudgetBatchSampler)."""
    sampler = TokenBudgetBatchSampler(
        dataset.src_lengths,
        dataset.tgt_lengths,
        config.max_tokens or None,
        shuffle=shuffle,
        seed=config.seed,
        max_sentences=None if config.max_tokens else config.batch_size,
        even=shuffle,
    )
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=config.num_workers)
