"""Seeded synthetic tasks (copy, reverse) and a plain full-prefix greedy decoder to score them."""

import torch
from torch.utils.data import DataLoader, Dataset

from torchlingo.data_processing import BOS_IDX, EOS_IDX, collate_fn

N_SYMBOLS = 10  # ids 4..13


class ToyTask(Dataset):
    """Random symbol strings; the target is the source copied or reversed."""

    def __init__(self, n: int, task: str = "reverse", seed: int = 0, min_len: int = 3, max_len: int = 8):
        g = torch.Generator().manual_seed(seed)
        self.pairs = []
        for _ in range(n):
            length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
            src = torch.randint(4, 4 + N_SYMBOLS, (length,), generator=g)
            self.pairs.append((src, src.flip(0) if task == "reverse" else src.clone()))

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        return self.pairs[i]


def loaders(task: str, n_train: int = 2000, batch_size: int = 64):
    train = DataLoader(
        ToyTask(n_train, task, seed=0),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(ToyTask(200, task, seed=1), batch_size=100, collate_fn=collate_fn)
    return train, val


@torch.no_grad()
def greedy_accuracy(model, dataset: ToyTask, max_extra: int = 2) -> float:
    """Exact-match rate of greedy decoding that recomputes the whole prefix each step (no cache: the reference)."""
    model.eval()
    src, tgt = collate_fn(dataset.pairs)
    out = torch.full((len(src), 1), BOS_IDX)
    memory, mask = model.encode(src)
    for _ in range(tgt.size(1) + max_extra):
        next_tok = model.decode(out, memory, mask)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, next_tok], dim=1)
    correct = 0
    for row, (_, gold) in zip(out, dataset.pairs):
        hyp = row[1:].tolist()
        hyp = hyp[: hyp.index(EOS_IDX)] if EOS_IDX in hyp else hyp
        correct += hyp == gold.tolist()
    return correct / len(dataset.pairs)
