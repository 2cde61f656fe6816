"""benchmarks/decode_speed.py runs end to end on a tiny checkpoint and prints one table; its CTranslate2 rows
(skipped without ctranslate2) measure both engines on a tiny checkpoint."""

import math
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import load_benchmark
from tiny import SMALL_RUN, TINY_DIMS, toy_setup

from torchlingo.checkpoint import save_checkpoint
from torchlingo.config import Config
from torchlingo.data_processing.vocab import Vocab
from torchlingo.models import SimpleTransformer
from torchlingo.training import train_model

try:
    import ctranslate2
except ImportError:
    ctranslate2 = None
needs_ct2 = pytest.mark.skipif(ctranslate2 is None, reason="ctranslate2 is not installed (optional extra)")


def test_decode_speed_script_on_tiny_checkpoint(toy_data, capsys):
    config = Config(
        **SMALL_RUN, num_epochs=2, tensorboard_dir=str(toy_data / "runs"), experiment_name="tiny", use_tensorboard=False
    )
    model, train_loader, val_loader = toy_setup(toy_data / "data", config)
    result = train_model(model, train_loader, val_loader, config)
    val = val_loader.dataset
    split = toy_data / "bench"
    split.mkdir()
    (split / "test_2016_flickr.de").write_text("\n".join(val.src_texts) + "\n", encoding="utf-8")
    (split / "test_2016_flickr.en").write_text("\n".join(val.tgt_texts) + "\n", encoding="utf-8")

    rows = load_benchmark("decode_speed").main(
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


def sharp_random_checkpoint(path: Path) -> Path:
    """A small random model whose sharpened outputs translate the toy words s0..s19 into distinct t0..t19 lines."""
    src_vocab = Vocab(["<pad>", "<unk>", "<s>", "</s>"] + [f"s{i}" for i in range(20)])
    tgt_vocab = Vocab(["<pad>", "<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(20)])
    config = Config(**TINY_DIMS, dropout=0.0)
    model = SimpleTransformer(len(src_vocab), len(tgt_vocab), config.replace(tie_embeddings=False)).eval()
    with torch.no_grad():
        model.output_proj.weight.mul_(3.0)
    state = {"model": model.state_dict(), "model_args": model.args, "src_vocab": src_vocab.to_state()}
    save_checkpoint({**state, "tgt_vocab": tgt_vocab.to_state(), "config": {"max_len_b": 4}}, path)
    return path


@needs_ct2
@pytest.mark.parametrize("beam", [1, 2])
def test_ctranslate2_rows_on_a_tiny_checkpoint(tmp_path, beam):
    from torchlingo.export import export_ctranslate2
    from torchlingo.translator import Translator

    ckpt = sharp_random_checkpoint(tmp_path / "random.pt")
    folder = export_ctranslate2(ckpt, tmp_path / "ct2")
    fp32 = Translator.from_checkpoint(ckpt, beam_size=beam, amp="none", max_sentences=2, progress=False)
    sources = ["s1 s2 s3", "s4 s5", "s6 s7 s8 s9", "s10"]
    refs = ["t1 t2 t3", "t4 t5", "t6 t7 t8 t9", "t10"]
    rows = load_benchmark("decode_speed").ctranslate2_rows(folder, {"fp32": fp32}, sources, refs, repeats=1, n_ref=2)
    search, layout = "greedy" if beam == 1 else "beam 2", "(1 inter x 1 intra)"  # one torch thread in the tests
    assert [r["decoder"] for r in rows] == [
        f"{search}, batched + KV cache, fp32",
        f"{search}, CTranslate2 fp32 {layout}",
        f"{search}, CTranslate2 int8 {layout}",
    ]
    for r in rows:
        assert r["sentences"] == 4 and r["sent_per_s"] > 0 and r["tok_per_s"] >= r["sent_per_s"]
        assert isinstance(r["bleu"], float) and math.isfinite(r["bleu"]) and math.isfinite(r["bleu_prefix"])
    assert rows[0]["same"] is None and all(0.0 <= r["same"] <= 1.0 for r in rows[1:])


def test_ctranslate2_flag_without_ctranslate2_exits_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark("decode_speed").main(["--checkpoint", "missing.pt", "--ctranslate2"])
    message = str(exit_info.value.code)
    assert "\n" not in message and "ctranslate2" in message and "pip install" in message


def test_by_default_our_decoder_batches_as_translate_does(tmp_path):
    """Without --batch-sentences the benchmark times `translate`'s own batches (the checkpoint's token budget);
    with it, batches of that many sentences."""
    bench = load_benchmark("decode_speed")
    ckpt = str(sharp_random_checkpoint(tmp_path / "random.pt"))
    default = bench.make_translator(bench.parse_args(["--checkpoint", ckpt]), 1)
    fixed_args = ["--checkpoint", ckpt, "--batch-sentences", "8", "--parallel-batches", "1"]
    fixed = bench.make_translator(bench.parse_args(fixed_args), 1)
    assert default.max_sentences is None and default.settings.decode_max_tokens == Config().decode_max_tokens
    assert fixed.max_sentences == 8 and fixed.settings.decode_max_tokens == 10**9
    assert [len(g) for g in fixed.batches([3] * 20)] == [8, 8, 4]
