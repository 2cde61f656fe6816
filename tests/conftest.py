"""Shared fixtures: small corpora written to temporary folders, seeded, CPU only."""

import logging
import random
from pathlib import Path

import pytest
import torch

WORDS = {
    "the": "el",
    "a": "un",
    "cat": "gato",
    "dog": "perro",
    "sees": "ve",
    "likes": "quiere",
    "house": "casa",
    "red": "rojo",
    "big": "grande",
    "small": "pequeño",
    "runs": "corre",
    "and": "y",
}


def write_toy_tsv(path: Path, n: int, seed: int = 0, header: bool = True) -> Path:
    """A word-for-word English->Spanish toy corpus: enough to exercise every code path quickly."""
    rng = random.Random(seed)
    words = list(WORDS)
    lines = ["src\ttgt"] if header else []
    for _ in range(n):
        s = [rng.choice(words) for _ in range(rng.randint(2, 7))]
        lines.append(" ".join(s) + "\t" + " ".join(WORDS[w] for w in s))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def toy_data(tmp_path):
    """tmp_path/data/{train,val}.tsv; returns tmp_path."""
    write_toy_tsv(tmp_path / "data" / "train.tsv", 96, seed=0)
    write_toy_tsv(tmp_path / "data" / "val.tsv", 24, seed=1)
    return tmp_path


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture
def torchlingo_logs(caplog):
    """caplog for torchlingo's logger from INFO up. The library sets no level and the CLI's main() stops the
    propagation to the root logger caplog listens on, so the handler goes on the logger itself, propagation off
    (records once), and everything is restored after the test."""
    logger = logging.getLogger("torchlingo")
    saved = logger.level, logger.propagate
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
