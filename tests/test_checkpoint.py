"""Checkpoints load weights-only, restore every piece of the run, and a resumed run continues exactly."""

import pytest
import torch
from torch.utils.data import DataLoader

from torchlingo.checkpoint import load_checkpoint, load_model
from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset, collate_fn, make_loader, vocab_from_state
from torchlingo.models import SimpleTransformer
from torchlingo.training import train_model


class Interrupt(Exception):
    pass


def setup(tmp_path, name, toy_data, make=True, **overrides):
    config = Config(
        d_model=32,
        n_heads=2,
        num_encoder_layers=1,
        num_decoder_layers=1,
        d_ff=64,
        tokenizer="word",
        num_epochs=3,
        warmup_steps=4,
        log_interval=2,
        val_interval=3,
        checkpoint_interval=2,
        patience=5,
        batch_size=16,
        tensorboard_dir=str(tmp_path / "runs"),
        experiment_name=name,
        progress_bar=False,
        **overrides,
    )
    train = NMTDataset(toy_data / "data" / "train.tsv", config=config)
    val = NMTDataset(toy_data / "data" / "val.tsv", train.src_vocab, train.tgt_vocab, config=config)
    torch.manual_seed(config.seed)
    if make:
        loaders = make_loader(train, config, shuffle=True), make_loader(val, config, shuffle=False)
    else:  # the documentation's style: a plain shuffled DataLoader drawing from the global RNG
        loaders = (
            DataLoader(train, 16, shuffle=True, collate_fn=collate_fn),
            DataLoader(val, 16, collate_fn=collate_fn),
        )
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config)
    return config, model, loaders


def test_checkpoint_holds_every_piece_and_loads_weights_only(tmp_path, toy_data):
    config, model, (train, val) = setup(tmp_path, "full", toy_data)
    result = train_model(model, train, val, config)
    state = torch.load(result.last_checkpoint, weights_only=True)
    for key in (
        "model",
        "model_args",
        "optimizer",
        "scheduler",
        "scaler",
        "rng",
        "position",
        "sampler",
        "early_stopping",
        "result",
        "config",
        "src_vocab",
        "tgt_vocab",
    ):
        assert key in state, key
    assert state["position"]["step"] == result.steps == 18  # 96 pairs / 16 = 6 batches x 3 epochs
    assert state["position"]["epoch"] == 3
    assert state["scheduler"]["last_epoch"] == 18
    assert state["optimizer"]["state"][0]["step"].item() == 18
    assert state["sampler"] == {"seed": config.seed, "epoch": 2, "order": 2}
    assert state["early_stopping"]["best"] == pytest.approx(min(h["val_loss"] for h in result.history))
    assert state["config"]["d_model"] == 32 and state["config"]["val_interval"] == 3
    assert set(state["rng"]) >= {"python", "torch", "numpy"}
    assert vocab_from_state(state["src_vocab"]).itos == train.dataset.src_vocab.itos
    for name, tensor in model.state_dict().items():
        assert torch.equal(state["model"][name], tensor), name

    loaded, src_vocab, tgt_vocab, _ = load_model(result.last_checkpoint)
    assert not loaded.training and len(tgt_vocab) == len(train.dataset.tgt_vocab)
    src, tgt = next(iter(val))
    model.eval()
    torch.testing.assert_close(loaded(src, tgt[:, :-1]), model(src, tgt[:, :-1]))
    best = load_checkpoint(result.best_checkpoint)
    assert best["position"]["step"] == result.best_step


@pytest.mark.parametrize("make", [True, False], ids=["token-budget-sampler", "plain-dataloader"])
@pytest.mark.parametrize("stop_at", [9, 12], ids=["mid-epoch", "epoch-end"])
def test_resumed_run_matches_the_uninterrupted_run_exactly(tmp_path, toy_data, make, stop_at):
    config, model, (train, val) = setup(tmp_path, "full", toy_data, make)
    full = train_model(model, train, val, config)

    def interrupt(model, step):
        if step == stop_at:
            raise Interrupt
        return {}

    config2, model2, (train2, val2) = setup(tmp_path, "killed", toy_data, make)
    with pytest.raises(Interrupt):
        train_model(model2, train2, val2, config2, validators=[interrupt])
    last = config2.run_dir / "checkpoints" / "last.pt"
    # the validation at step 9 or 12 interrupts before any save there: last.pt is from step 8 or 10
    assert load_checkpoint(last)["position"]["step"] == {9: 8, 12: 10}[stop_at]

    config3, model3, (train3, val3) = setup(tmp_path, "killed", toy_data, make)
    resumed = train_model(model3, train3, val3, config3, resume_from=last)
    assert resumed.steps == full.steps
    for name, tensor in model.state_dict().items():
        assert torch.equal(model3.state_dict()[name], tensor), name
    assert resumed.train_losses == full.train_losses
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    assert resumed.best_step == full.best_step
    assert resumed.target_tokens == full.target_tokens  # counted over both sessions, the lost steps once
    assert resumed.train_time > 0


def test_resume_of_a_finished_run_trains_no_further(tmp_path, toy_data):
    config, model, (train, val) = setup(tmp_path, "done", toy_data)
    result = train_model(model, train, val, config)
    config, model2, (train, val) = setup(tmp_path, "done", toy_data)
    again = train_model(model2, train, val, config, resume_from=result.last_checkpoint)
    assert again.steps == result.steps and again.train_losses == result.train_losses
