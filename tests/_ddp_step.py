"""One optimizer step of a float64 model, for tests/test_distributed.py.

    torchrun --standalone --nproc_per_node 2 tests/_ddp_step.py OUT DATA_DIR

Under torchrun every case of CASES trains one optimizer step through train_model with make_loader's batches (each
rank its share) and writes each rank's weights to OUT/CASE.rankR.pt. The test runs the same step in one process on
`union_batches`: micro-batch i is the union of the ranks' micro-batches i, which is what N ranks with max_tokens B
are meant to equal (one process with N x B).

Adam with eps 1 (and lr 1) makes the first update g / (|g| + 1), close to g itself: unlike Adam's usual first step
(about lr x sign(g)) it shows a gradient that is off by any factor.
"""

import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from tiny import QUIET, TINY_MODEL  # noqa: E402

from torchlingo.config import Config  # noqa: E402
from torchlingo.data_processing import NMTDataset, TokenBudgetBatchSampler, collate_fn, make_loader  # noqa: E402
from torchlingo.models import SimpleTransformer  # noqa: E402
from torchlingo.training import train_model  # noqa: E402

BASE = dict(
    **TINY_MODEL,
    **QUIET,
    dropout=0.0,
    optimizer="adam",
    learning_rate=1.0,
    adam_eps=1.0,
    scheduler_type="none",
    warmup_steps=0,
    max_tokens=60,
    max_steps=1,
    num_epochs=1,
    label_smoothing=0.0,
    save_checkpoints=False,
    seed=5,
)
CASES = {
    "plain": dict(grad_clip=0.0),
    "accumulation_clip_untied": dict(accumulation_steps=2, grad_clip=0.05, tie_embeddings=False, label_smoothing=0.1),
}


def build(case: str, data: Path, run_parent: Path):
    """(config, training set, float64 model with the case's initial weights)."""
    config = Config(**{**BASE, **CASES[case]}, tensorboard_dir=str(run_parent), experiment_name=case)
    train = NMTDataset(data / "train.tsv", config=config)
    torch.manual_seed(0)
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config=config).double()
    return config, train, model


class Batches:
    """A loader of fixed batches (train_model reads a plain list as a (train, val) pair)."""

    def __init__(self, batches: list):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def union_batches(train, config, world: int = 2) -> Batches:
    """The one-process micro-batches equal to `world` ranks' step 1: micro-batch i joins rank r's i-th batch,
    which make_loader's sampler takes from the global list at position i * world + r."""
    sampler = TokenBudgetBatchSampler(
        train.src_lengths, train.tgt_lengths, config.max_tokens, seed=config.seed, num_replicas=1, rank=0
    )
    batches = sampler.global_batches()
    micro = [sum((batches[i * world + r] for r in range(world)), []) for i in range(config.accumulation_steps)]
    return Batches([collate_fn([train[j] for j in indices]) for indices in micro])


def main() -> None:
    out, data = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        config, train, model = build(case, data, out / "runs")
        train_model(model, make_loader(train, config, shuffle=True), None, config)
        torch.save(model.state_dict(), out / f"{case}.rank{rank}.pt")


if __name__ == "__main__":
    main()
