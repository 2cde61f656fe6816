"""A bad `--set KEY=VALUE` is blamed on `--set KEY`, not on the config file it overrides."""

from __future__ import annotations

import pytest
import yaml

from torchlingo.config import Config
from torchlingo.errors import ConfigError


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"training": {"learning_rate": 1e-3}, "model": {"d_model": 32, "n_heads": 4}}))
    return path


def message(path, *overrides) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(path, list(overrides))
    return str(info.value)


def test_an_unknown_override_names_the_override(base):
    assert message(base, "lr=1e-3") == "--set lr: unknown key 'lr'; see docs/configuration.md for the keys"
    assert message(base, "training.max_step=3") == "--set max_step: unknown key 'max_step'; did you mean 'max_steps'?"


def test_a_bad_override_value_names_the_override(base):
    assert message(base, "batch_size=many").startswith("--set batch_size: expected an integer, got 'many'")
    assert message(base, "n_heads=3").startswith("--set n_heads: 3 does not divide d_model 32")


def test_the_file_is_blamed_for_its_own_keys(base, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  lr: 0.1\n")
    assert message(bad).startswith(f"{bad}: unknown key 'lr'")
    assert message(bad, "seed=1").startswith(f"{bad}: unknown key 'lr'")  # the override is fine; the file is not
    # a check between two keys: the file's key is named, and the override that broke it is mentioned
    assert message(base, "d_model=30").startswith(f"{base} with --set d_model: n_heads: 4 does not divide d_model 30")
