"""The tiny model the Python-API tests train, in one place: a few thousand weights, a few steps on the toy corpus.

Tests import it as `from tiny import ...` (pytest puts tests/ on sys.path, as for cli_helpers); so do the helper
scripts run as `python tests/_x.py`, whose own folder is on sys.path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset, make_loader
from torchlingo.models import SimpleTransformer

# The model's sizes alone (the tokenizer left at its default).
TINY_DIMS = dict(d_model=16, n_heads=2, num_encoder_layers=1, num_decoder_layers=1, d_ff=32)
# The tiny model on the toy corpus's words.
TINY_MODEL = dict(tokenizer="word", **TINY_DIMS)
# fp32, no TensorBoard files, no progress bar.
QUIET = dict(amp="none", use_tensorboard=False, progress_bar=False)
# A d_model 32 model that learns some of the toy corpus in 2 or 3 epochs on the CPU (its BLEU above 0).
SMALL_RUN = dict(
    tokenizer="word",
    d_model=32,
    n_heads=2,
    num_encoder_layers=1,
    num_decoder_layers=1,
    d_ff=64,
    dropout=0.0,
    batch_size=16,
    learning_rate=3e-3,
    warmup_steps=5,
    device="cpu",
    amp="none",
    progress_bar=False,
    max_len_b=5,
)


def tiny_config(root: Path, **changes) -> Config:
    """TINY_MODEL, QUIET, 16 pairs a batch for 2 epochs, the run directory under root/runs; CHANGES replace any."""
    return Config(
        **{**TINY_MODEL, "batch_size": 16, "num_epochs": 2, **QUIET, "tensorboard_dir": str(root / "runs"), **changes}
    )


def toy_setup(data_dir: Path, config: Config, seed: int | None = None):
    """(model, shuffled train loader, val loader) on data_dir/{train,val}.tsv; SEED seeds torch just before the
    model's weights are drawn."""
    train = NMTDataset(data_dir / "train.tsv", config=config)
    val = NMTDataset(data_dir / "val.tsv", train.src_vocab, train.tgt_vocab, config=config)
    if seed is not None:
        torch.manual_seed(seed)
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config=config)
    return model, make_loader(train, config, shuffle=True), make_loader(val, config, shuffle=False)
