"""int8 decoding (`quantize: int8`): a trained model's quantized copy translates as the fp32 model does on nearly
every sentence, its linear layers really are int8, and the model passed in is left alone."""

import pytest
import torch
import torch.nn as nn
from toy_tasks import ToyTask, loaders

from torchlingo.config import Config
from torchlingo.errors import ConfigError
from torchlingo.fastpath import is_quantized_linear
from torchlingo.models import SimpleTransformer
from torchlingo.training import train_model
from torchlingo.translator import Translator


@pytest.fixture(scope="module")
def copier() -> SimpleTransformer:
    """A tiny model (tied output projection) trained for some seconds to copy symbol strings (95% exact)."""
    config = Config(
        d_model=64,
        n_heads=4,
        num_encoder_layers=1,
        num_decoder_layers=1,
        d_ff=128,
        dropout=0.0,
        label_smoothing=0.0,
        learning_rate=5e-3,
        warmup_steps=30,
        num_epochs=5,
        amp="none",
        use_tensorboard=False,
        save_checkpoints=False,
        progress_bar=False,
        seed=0,
    )
    train, val = loaders("copy", n_train=2000)
    model = SimpleTransformer(16, 16, config)
    train_model(model, train, val, config)
    return model.eval()


@pytest.mark.parametrize("beam", [1, 4])
def test_int8_copy_translates_as_the_fp32_model(copier, beam):
    sources = [src.tolist() for src, _ in ToyTask(200, "copy", seed=1).pairs]
    before = {k: v.clone() for k, v in copier.state_dict().items()}
    settings = dict(beam_size=beam, amp="none", max_len_b=4, progress=False)
    fp32 = Translator(copier, None, None, **settings).decode_ids(sources)
    int8 = Translator(copier, None, None, quantize="int8", **settings)
    same = sum(a[0][0] == b[0][0] for a, b in zip(fp32, int8.decode_ids(sources)))
    assert same >= 0.9 * len(sources)
    n_linear = sum(isinstance(m, nn.Linear) for m in copier.modules())
    assert sum(is_quantized_linear(m) for m in int8.model.modules()) == n_linear > 0
    assert not any(is_quantized_linear(m) for m in copier.modules())
    assert all(torch.equal(v, copier.state_dict()[k]) for k, v in before.items())


def test_int8_without_quantized_ops_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr("torchlingo.fastpath.quantized_engines", lambda: [])
    model = SimpleTransformer(16, 16, Config(d_model=32, n_heads=4, num_encoder_layers=1, num_decoder_layers=1))
    with pytest.raises(ConfigError, match="^quantize: int8 needs PyTorch's quantized CPU ops") as e:
        Translator(model, None, None, quantize="int8")
    assert "\n" not in str(e.value)


def test_quantize_is_a_checked_decoding_key():
    with pytest.raises(ConfigError, match="quantize"):
        Config(quantize="int4")
    assert Config().quantize == "none"
