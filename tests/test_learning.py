"""A tiny Transformer trained by train_model learns toy tasks: fp32, bf16 autocast on CPU, and the CUDA paths."""

import math

import pytest
import torch
from toy_tasks import ToyTask, greedy_accuracy, loaders

from torchlingo.config import Config
from torchlingo.models import SimpleTransformer
from torchlingo.training import train_model
from torchlingo.translator import Translator

TINY = dict(
    n_heads=4,
    dropout=0.0,
    label_smoothing=0.0,
    warmup_steps=30,
    use_tensorboard=False,
    save_checkpoints=False,
    progress_bar=False,
    seed=0,
)
# The model and schedule that learn the reverse task in 8 epochs (fp32, and on CUDA).
REVERSE = dict(d_model=64, num_encoder_layers=2, num_decoder_layers=2, d_ff=128, learning_rate=3e-3, num_epochs=8)


def test_learns_to_reverse_in_fp32():
    config = Config(**REVERSE, amp="none", **TINY)
    train, val = loaders("reverse", n_train=2000)
    model = SimpleTransformer(16, 16, config)
    result = train_model(model, train, val, config)
    assert result.steps == 8 * 32
    assert result.val_losses[-1] < 0.1 < result.val_losses[0]
    assert greedy_accuracy(model, ToyTask(200, "reverse", seed=1)) >= 0.95  # unseen strings


def test_learns_to_copy_under_bf16_autocast_on_cpu():
    """bf16 runs on every CPU; where it is emulated (no AVX512-BF16/AMX) it is slow, hence the small model."""
    config = Config(
        d_model=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
        d_ff=128,
        learning_rate=5e-3,
        num_epochs=8,
        amp="bf16",
        device="cpu",
        **TINY,
    )
    train, val = loaders("copy", n_train=1600)
    model = SimpleTransformer(16, 16, config)
    seen = []
    hook = model.decoder_layers[0].ff.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    result = train_model(model, train, val, config)
    hook.remove()
    assert torch.bfloat16 in seen and model.decoder_layers[0].ff.fc1.weight.dtype == torch.float32
    assert result.val_losses[-1] < 0.1
    assert greedy_accuracy(model, ToyTask(200, "copy", seed=1)) >= 0.95
    # Decoding in bf16 runs a bf16 copy (the trained model stays fp32) through the cached greedy and beam search.
    pairs = ToyTask(200, "copy", seed=1).pairs
    for beam in (1, 5):
        translator = Translator(model, None, None, beam_size=beam, max_len_a=1.0, max_len_b=2, amp="bf16", device="cpu")
        assert translator.model.output_proj.weight.dtype == torch.bfloat16
        out = translator.decode_ids([src.tolist() for src, _ in pairs])
        assert sum(nbest[0][0] == tgt.tolist() for nbest, (_, tgt) in zip(out, pairs)) >= 0.95 * len(pairs)
    assert model.output_proj.weight.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["fp16", "bf16", "none"])
def test_learns_to_reverse_on_cuda(amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    config = Config(**REVERSE, amp=amp, device="cuda", **TINY)
    train, val = loaders("reverse", n_train=2000)
    model = SimpleTransformer(16, 16, config)
    train_model(model, train, val, config)
    assert greedy_accuracy(model.cpu(), ToyTask(200, "reverse", seed=1)) >= 0.95


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_grad_scaler_state_is_checkpointed(tmp_path):
    config = Config(
        d_model=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        d_ff=64,
        num_epochs=1,
        amp="fp16",
        device="cuda",
        tensorboard_dir=str(tmp_path),
        **{**TINY, "save_checkpoints": True},
    )
    train, val = loaders("copy", n_train=128)
    result = train_model(SimpleTransformer(16, 16, config), train, val, config)
    state = torch.load(result.last_checkpoint, weights_only=True)
    assert state["scaler"]["scale"] > 0


def test_compile_true_trains_through_the_compiled_model(monkeypatch):
    """compile: true must run the training forward through torch.compile (the loss calls the model, not its
    methods, which a compiled wrapper would pass through uncompiled). Dynamo's eager backend keeps the test fast;
    benchmarks/train_speed.py --compile measures the real (inductor) one."""
    from torch._dynamo.utils import counters

    real_compile, compiled = torch.compile, []

    def eager_compile(model, **kwargs):
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    torch._dynamo.reset()
    counters.clear()
    config = Config(
        d_model=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        d_ff=64,
        learning_rate=3e-3,
        num_epochs=1,
        amp="none",
        compile=True,
        **TINY,
    )
    train, val = loaders("copy", n_train=200)
    model = SimpleTransformer(16, 16, config)
    result = train_model(model, train, val, config)
    assert compiled == [model] and result.steps > 0
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the encoder-decoder forward
    assert math.isfinite(result.val_losses[-1])
