"""ModelArgs: the model's arguments, built once from the Config, stored in checkpoints as a plain dict."""

import dataclasses

import torch

from torchlingo.checkpoint import load_model, save_checkpoint
from torchlingo.config import Config
from torchlingo.models import ModelArgs, SimpleTransformer

# The `model_args` keys every checkpoint written so far holds; renaming one would orphan those checkpoints.
CHECKPOINT_KEYS = [
    "src_vocab_size",
    "tgt_vocab_size",
    "d_model",
    "n_heads",
    "num_encoder_layers",
    "num_decoder_layers",
    "d_ff",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "tie_embeddings",
    "share_all_embeddings",
    "max_positions",
    "pad_idx",
]


def test_every_model_setting_of_the_config_is_a_model_argument():
    """A field added to the config's model group must reach the model (and its checkpoints) through ModelArgs."""
    model_group = {f.name for f in dataclasses.fields(Config) if f.metadata["group"] == "model"}
    assert model_group == {f.name for f in dataclasses.fields(ModelArgs)} - {"src_vocab_size", "tgt_vocab_size"}
    assert [f.name for f in dataclasses.fields(ModelArgs)] == CHECKPOINT_KEYS


def test_model_args_come_from_the_config_and_its_overrides():
    config = Config(d_model=48, n_heads=4, d_ff=96, dropout=0.3, tie_embeddings=False, max_positions=77)
    args = ModelArgs.from_config(11, 13, config)
    assert (args.src_vocab_size, args.tgt_vocab_size, args.d_model, args.dropout) == (11, 13, 48, 0.3)
    assert args.tie_embeddings is False and args.max_positions == 77
    model = SimpleTransformer(11, 13, config, num_decoder_layers=1, activation_dropout=0.2)
    expected = dataclasses.replace(args, num_decoder_layers=1, activation_dropout=0.2)
    assert type(model.args) is dict and model.args == dataclasses.asdict(expected)
    assert len(model.decoder_layers) == 1 and model.positions.shape == (77, 48)


def test_model_args_round_trip_through_a_weights_only_checkpoint(tmp_path):
    config = Config(d_model=32, n_heads=2, num_encoder_layers=1, num_decoder_layers=2, d_ff=48, tie_embeddings=False)
    torch.manual_seed(0)
    model = SimpleTransformer(17, 19, config, activation_dropout=0.1).eval()
    assert list(model.args) == CHECKPOINT_KEYS and all(type(v) in (int, float, bool) for v in model.args.values())
    path = save_checkpoint({"model": model.state_dict(), "model_args": model.args}, tmp_path / "model.pt")
    loaded, _, _, state = load_model(path)  # torch.load(weights_only=True) inside
    assert state["model_args"] == model.args and loaded.args == model.args
    assert loaded.state_dict().keys() == model.state_dict().keys()
    src, tgt = torch.randint(4, 17, (3, 6)), torch.randint(4, 19, (3, 5))
    with torch.no_grad():
        assert torch.equal(loaded(src, tgt), model(src, tgt))


def test_a_checkpoint_dict_written_before_model_args_existed_still_loads():
    """The literal dict an older torchlingo stored (no share_all_embeddings yet) rebuilds the same architecture."""
    old_keys = [k for k in CHECKPOINT_KEYS if k != "share_all_embeddings"]
    old = dict(zip(old_keys, [21, 23, 32, 4, 2, 1, 64, 0.1, 0.0, 0.0, True, 128, 0], strict=True))
    model = SimpleTransformer.from_args(old)
    assert model.args == old | {"share_all_embeddings": False}
    assert model.src_embed.weight is not model.tgt_embed.weight
    assert (len(model.encoder_layers), len(model.decoder_layers), model.d_model) == (2, 1, 32)
    assert model.output_proj.weight is model.tgt_embed.weight and model.positions.shape == (128, 32)
