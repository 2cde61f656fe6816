"""BLEU during training: eval_bleu decodes the validation set, logs val/bleu, val/chrf and sample translations."""

import logging

import pytest
import torch
from tiny import SMALL_RUN, toy_setup

from torchlingo.config import Config
from torchlingo.errors import ConfigError
from torchlingo.training import train_model


def tiny_setup(data_dir, run_dir, **overrides):
    settings = dict(
        SMALL_RUN, num_epochs=3, tensorboard_dir=str(run_dir), experiment_name="bleu", log_interval=2, eval_bleu=True
    )
    config = Config(**{**settings, **overrides})
    return *toy_setup(data_dir, config), config


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_eval_bleu_logs_scores_and_translations_and_drives_best_checkpoint(toy_data):
    model, train_loader, val_loader, config = tiny_setup(
        toy_data / "data", toy_data / "runs", early_stopping_metric="bleu", val_interval=4
    )
    result = train_model(model, train_loader, val_loader, config)
    bleus = [h["bleu"] for h in result.history]
    assert len(bleus) >= 3 and all("chrf" in h and 0.0 <= h["chrf"] <= 100.0 for h in result.history)
    assert max(bleus) > 0.0  # the toy corpus is word for word: a few epochs already translate some of it
    assert result.best_metric == max(bleus)
    assert result.best_step == next(h["step"] for h in result.history if h["bleu"] == max(bleus))
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["position"]["step"] == result.best_step

    events = read_events(config.run_dir)
    scalars = events.Tags()["scalars"]
    assert {"val/bleu", "val/chrf", "val/loss"} <= set(scalars)
    logged = [(e.step, round(e.value, 4)) for e in events.Scalars("val/bleu")]
    assert logged == [(h["step"], round(h["bleu"], 4)) for h in result.history]
    text_tags = [t for t in events.Tags()["tensors"] if t.startswith("val/translations")]
    assert text_tags
    sample = events.Tensors(text_tags[0])[-1].tensor_proto.string_val[0].decode()
    assert "| source | reference | translation |" in sample
    assert val_loader.dataset.src_texts[0] in sample and val_loader.dataset.tgt_texts[0] in sample
    assert model.training  # decoding switched to eval mode and back


def test_eval_bleu_with_beam_and_loss_metric(toy_data, caplog):
    model, train_loader, val_loader, config = tiny_setup(
        toy_data / "data", toy_data / "runs", eval_beam_size=3, num_epochs=1, use_tensorboard=False
    )
    with caplog.at_level(logging.INFO, logger="torchlingo"):
        result = train_model(model, train_loader, val_loader, config)
    assert len(result.history) == 1 and {"bleu", "chrf", "val_loss"} <= set(result.history[0])
    h = result.history[0]  # the epoch's line shows the scores beside the loss
    assert f"val loss {h['val_loss']:.4f} | val bleu {h['bleu']:.2f} | val chrf {h['chrf']:.2f} | lr" in caplog.text
    assert result.best_metric == result.history[0]["val_loss"]


def test_bleu_metric_without_eval_bleu_is_a_config_error(toy_data):
    model, train_loader, val_loader, config = tiny_setup(
        toy_data / "data", toy_data / "runs", early_stopping_metric="bleu"
    )
    with pytest.raises(ConfigError, match="early_stopping_metric: bleu needs a validation set and eval_bleu: true"):
        train_model(model, train_loader, val_loader, config.replace(eval_bleu=False))
    with pytest.raises(ConfigError, match="early_stopping_metric: bleu needs"):
        train_model(model, train_loader, None, config)
