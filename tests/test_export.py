"""Export to CTranslate2: its greedy translations equal ours in fp32, on a small trained model and on a random one
whose sharpened outputs make every weight and the position table matter (skipped without ctranslate2)."""

import sys

import pytest
import torch
from cli_helpers import write_config, write_corpus

from torchlingo.checkpoint import load_model, save_checkpoint
from torchlingo.cli import main
from torchlingo.config import Config
from torchlingo.data_processing.batching import pad_batch
from torchlingo.data_processing.vocab import Vocab
from torchlingo.export import AS_TORCHLINGO as CT2_GREEDY  # <pad>, <s> never generated; </s> may come first
from torchlingo.export import CTranslate2Translator
from torchlingo.models import SimpleTransformer
from torchlingo.search import greedy_decode, max_lengths, position_limit
from torchlingo.translator import DecodingSettings

try:
    import ctranslate2
except ImportError:
    ctranslate2 = None
needs_ct2 = pytest.mark.skipif(ctranslate2 is None, reason="ctranslate2 is not installed (optional extra)")


def test_without_ctranslate2_export_fails_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 raises ImportError
    argv = ["export", "--checkpoint", str(tmp_path / "x.pt"), "--format", "ctranslate2", "--output", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install" in err and "Traceback" not in err


def agreement(ckpt, out, sources: list[list[int]]) -> tuple[int, list]:
    """How many sources CTranslate2 (fp32, greedy) translates exactly as greedy_decode does; and ours."""
    model, src_vocab, tgt_vocab, _ = load_model(ckpt)
    src = pad_batch([torch.tensor(i) for i in sources], 0)
    ours = greedy_decode(model.float(), src, 1.5, 5)
    limits = max_lengths(src, 0, 1.5, 5, position_limit(model))
    translator = ctranslate2.Translator(str(out), device="cpu", compute_type="float32")
    same = 0
    for mine, src_ids, limit in zip(ours, sources, limits):
        result = translator.translate_batch(
            [[src_vocab.itos[t] for t in src_ids]], beam_size=1, max_decoding_length=limit, **CT2_GREEDY
        )[0]
        same += [tgt_vocab.stoi[t] for t in result.hypotheses[0]] == mine
    return same, ours


@needs_ct2
def test_ctranslate2_greedy_equals_ours_on_a_trained_model(tmp_path, capsys):
    root = write_corpus(tmp_path)
    config = write_config(root, "ct2", num_epochs=40, d_model=32, d_ff=64, scheduler_type="none", warmup_steps=0)
    assert main(["train", str(config)]) == 0
    ckpt = root / "runs" / "ct2" / "checkpoints" / "best.pt"
    out = tmp_path / "ct2_model"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "ctranslate2", "--output", str(out)]) == 0
    _, src_vocab, _, _ = load_model(ckpt)
    lines = [
        ln.split("\t")[0]
        for name in ("train", "test")
        for ln in (root / "data" / f"{name}.tsv").read_text().splitlines()[1:]
    ]
    same, ours = agreement(ckpt, out, [src_vocab.encode(s) for s in lines])
    assert same >= 0.99 * len(lines), (same, len(lines))
    assert len({tuple(o) for o in ours}) > len(ours) // 2  # the model translates, its outputs differ
    assert (out / "model.bin").is_file() and (out / "target_tokenizer.txt").is_file()
    capsys.readouterr()
    assert main(["export", "--checkpoint", str(ckpt), "--format", "ctranslate2", "--output", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


@needs_ct2
@pytest.mark.parametrize("share", [False, True])
def test_ctranslate2_greedy_equals_ours_on_a_sharp_random_model(tmp_path, share):
    """share: share_all_embeddings, one vocabulary and one matrix written as both sides' embeddings."""
    from torchlingo.export import export_ctranslate2

    torch.manual_seed(0)
    src_vocab = Vocab(["<pad>", "<unk>", "<s>", "</s>"] + [f"s{i}" for i in range(26)])
    tgt_vocab = src_vocab if share else Vocab(["<pad>", "<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(21)])
    config = Config(d_model=32, n_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=64, dropout=0.0)
    untied = config.replace(tie_embeddings=False, share_all_embeddings=share)  # an output projection to sharpen
    model = SimpleTransformer(len(src_vocab), len(tgt_vocab), untied).eval()
    assert (model.src_embed.weight is model.tgt_embed.weight) == share
    with torch.no_grad():
        model.output_proj.weight.mul_(3.0)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))  # biases and norms that are not 0 / 1 are checked too
    state = {"model": model.state_dict(), "model_args": model.args, "src_vocab": src_vocab.to_state()}
    save_checkpoint({**state, "tgt_vocab": tgt_vocab.to_state()}, tmp_path / "random.pt")
    export_ctranslate2(tmp_path / "random.pt", tmp_path / "ct2")
    g = torch.Generator().manual_seed(1)
    sources = [torch.randint(4, 30, (int(n),), generator=g).tolist() for n in torch.randint(1, 12, (60,), generator=g)]
    same, ours = agreement(tmp_path / "random.pt", tmp_path / "ct2", sources)
    assert same >= 0.99 * len(sources), (same, len(sources))
    assert len({tuple(o) for o in ours}) > 40
    # CTranslate2Translator: batches of mixed lengths decoded side by side, each hypothesis cut at its own limit.
    settings = DecodingSettings(beam_size=1, max_len_a=1.5, max_len_b=5)
    positions = model.positions.size(0)
    ct2 = CTranslate2Translator(tmp_path / "ct2", src_vocab, tgt_vocab, settings, positions, 16, inter_threads=2)
    same = sum(a == b for a, b in zip(ct2.decode_ids(sources), ours))
    assert same >= 0.99 * len(sources), (same, len(sources))
