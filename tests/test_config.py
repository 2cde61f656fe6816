"""Config: every documented name exists, bad values fail naming the field, YAML groups and overrides work."""

import pytest

from torchlingo.config import Config, describe_fields
from torchlingo.errors import ConfigError, TorchlingoError

DOCUMENTED = [
    "batch_size",
    "learning_rate",
    "d_model",
    "n_heads",
    "num_encoder_layers",
    "num_decoder_layers",
    "pad_idx",
    "scheduler_type",
    "scheduler_patience",
    "warmup_steps",
    "use_tensorboard",
    "experiment_name",
    "tensorboard_dir",
    "log_interval",
    "d_ff",
    "dropout",
    "label_smoothing",
    "grad_clip",
    "num_epochs",
    "max_steps",
    "val_interval",
    "patience",
    "seed",
    "device",
    "amp",
    "accumulation_steps",
    "weight_decay",
    "tie_embeddings",
    "min_freq",
    "max_vocab_size",
]


def test_every_documented_field_exists_with_a_doc():
    fields = {name: doc for _, name, _, _, doc in describe_fields()}
    for name in DOCUMENTED:
        assert name in fields and fields[name], name
    assert Config().pad_idx == 0 and Config().scheduler_type == "cosine"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"learning_rate": -1e-4}, "learning_rate: must be > 0.0, got -0.0001"),
        ({"learning_rate": 0}, "learning_rate: must be > 0.0"),
        (
            {"scheduler_type": "cosin"},
            "scheduler_type: 'cosin' is not one of cosine, plateau, transformer, noam, none; did you mean 'cosine'?",
        ),
        ({"n_heads": 3}, "n_heads: 3 does not divide d_model 256"),
        ({"batch_size": 0}, "batch_size: must be >= 1, got 0"),
        ({"batch_size": "32x"}, "batch_size: expected an integer, got '32x' (str)"),
        ({"use_tensorboard": "yes"}, "use_tensorboard: expected true or false"),
        ({"dropout": 1.5}, "dropout: must be <= 0.99"),
        ({"amp": "fp8"}, "amp: 'fp8' is not one of"),
        ({"pad_idx": 5}, "pad_idx: must be <= 0"),
        ({"learning_rate": float("nan")}, "learning_rate: expected a number"),
    ],
)
def test_bad_values_name_the_field(kwargs, message):
    with pytest.raises(ConfigError) as err:
        Config(**kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, TorchlingoError)


def test_noam_is_an_alias_of_transformer():
    assert Config(scheduler_type="noam").scheduler_type == "transformer"


def test_yaml_groups_overrides_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  batch_size: 8\nmodel:\n  d_model: 64\n  n_heads: 2\ntraining:\n  learning_rate: 1e-4\n"
        "seed: 7\nlogging:\n"
    )
    config = Config.from_yaml(path, ["training.num_epochs=3", "d_ff=96", "experiment_name=exp 1"])
    assert (config.batch_size, config.d_model, config.learning_rate, config.seed) == (8, 64, 1e-4, 7)
    assert (config.num_epochs, config.d_ff, config.experiment_name) == (3, 96, "exp 1")
    out = tmp_path / "resolved.yaml"
    config.to_yaml(out)
    assert Config.from_yaml(out) == config


@pytest.mark.parametrize(
    "text, message",
    [
        ("training:\n  learnig_rate: 0.1\n", "unknown key 'learnig_rate'; did you mean 'learning_rate'?"),
        ("model: {d_model: 64}\nd_model: 32\n", "key 'd_model' is given twice"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("batch_size: [1\n", "not valid YAML"),
        ("model:\n  n_heads: 'four'\n", "n_heads: expected an integer"),
    ],
)
def test_yaml_errors_are_one_line_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Config.from_yaml(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        Config.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "ok.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        Config.from_yaml(tmp_path / "ok.yaml", ["batch_size"])
    with pytest.raises(ConfigError, match="unknown key 'bach_size'; did you mean 'batch_size'"):
        Config.from_yaml(tmp_path / "ok.yaml", ["bach_size=3"])
