"""benchmarks/decode_speed.py runs end to end on a tiny checkpoint and prints one table."""

import importlib.util
from pathlib import Path

import pytest

from torchlingo.config import Config
from torchlingo.data_processing.batching import make_loader
from torchlingo.data_processing.dataset import NMTDataset
from torchlingo.models import SimpleTransformer
from torchlingo.training import train_model

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decode_speed.py"


def load_script():
    spec = importlib.util.spec_from_file_location("decode_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_decode_speed_script_on_tiny_checkpoint(toy_data, capsys):
    config = Config(
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
        num_epochs=2,
        device="cpu",
        amp="none",
        tensorboard_dir=str(toy_data / "runs"),
        experiment_name="tiny",
        progress_bar=False,
        use_tensorboard=False,
        max_len_b=5,
    )
    train = NMTDataset(toy_data / "data" / "train.tsv", config=config)
    val = NMTDataset(toy_data / "data" / "val.tsv", train.src_vocab, train.tgt_vocab, config=config)
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config)
    result = train_model(model, make_loader(train, config, True), make_loader(val, config, False), config)
    split = toy_data / "bench"
    split.mkdir()
    (split / "test_2016_flickr.de").write_text("\n".join(val.src_texts) + "\n", encoding="utf-8")
    (split / "test_2016_flickr.en").write_text("\n".join(val.tgt_texts) + "\n", encoding="utf-8")

    rows = load_script().main(
        [
            "--checkpoint",
            str(result.best_checkpoint),
            "--data",
            str(split),
            "--threads",
            "1",
            "--batch-sentences",
            "8",
            "--beam",
            "3",
            "--reference-sentences",
            "5",
        ]
    )
    assert [r["decoder"].split(",")[0] for r in rows] == ["greedy", "greedy", "beam 3", "beam 3"]
    assert [r["sentences"] for r in rows] == [len(val), 5, len(val), 5]
    assert all(r["sent_per_s"] > 0 and r["tok_per_s"] >= r["sent_per_s"] and r["mean_len"] > 0 for r in rows)
    # The cached decoders translate the shared prefix exactly as the naive ones do.
    assert rows[0]["bleu_prefix"] == pytest.approx(rows[1]["bleu_prefix"])
    assert rows[2]["bleu_prefix"] == pytest.approx(rows[3]["bleu_prefix"])
    out = capsys.readouterr().out
    assert out.count("| greedy") == 2 and out.count("| beam 3") == 2 and "BLEU@5" in out
