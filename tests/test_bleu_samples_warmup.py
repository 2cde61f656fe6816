"""configs/base.yaml logs BLEU and sample translations (their number a config key); a warmup longer than the run is
warned about."""

from __future__ import annotations

import yaml
from cli_helpers import REPO
from tiny import TINY_MODEL

from torchlingo.config import Config
from torchlingo.data_processing import NMTDataset
from torchlingo.evaluation import BleuValidator
from torchlingo.experiment import warn_long_warmup
from torchlingo.models import SimpleTransformer


class TextLog:
    def __init__(self):
        self.texts = []

    def text(self, tag, text, step):
        self.texts.append((tag, text, step))


def test_base_config_logs_bleu_and_samples():
    base = yaml.safe_load((REPO / "configs" / "base.yaml").read_text())
    assert base["decoding"]["eval_bleu"] is True and base["decoding"]["bleu_samples"] == 3
    assert Config().bleu_samples == 3


def test_bleu_samples_is_the_number_of_logged_translations(toy_data):
    config = Config(**TINY_MODEL)
    train = NMTDataset(toy_data / "data" / "train.tsv", config=config)
    val = NMTDataset(toy_data / "data" / "val.tsv", train.src_vocab, train.tgt_vocab, config)
    model = SimpleTransformer(len(train.src_vocab), len(train.tgt_vocab), config=config)
    for samples in (1, 5, 0):
        logger = TextLog()
        scores = BleuValidator(val, config.replace(bleu_samples=samples, max_len_b=3), logger)(model, step=7)
        assert set(scores) == {"bleu", "chrf"}
        if samples:
            ((tag, text, step),) = logger.texts
            assert tag == "val/translations" and step == 7 and len(text.splitlines()) == 2 + samples  # header rows
        else:
            assert logger.texts == []


def test_warmup_longer_than_the_run_is_warned(torchlingo_logs):
    config = Config(warmup_steps=200, num_epochs=2, scheduler_type="cosine")
    assert warn_long_warmup(config, batches_per_epoch=30) == 60
    (record,) = [r for r in torchlingo_logs.records if r.levelname == "WARNING"]
    assert record.getMessage().startswith(
        "warmup_steps: 200 is more than the 60 optimizer steps this run is planned for (2 epochs of 30 steps)"
    )
    torchlingo_logs.clear()
    assert warn_long_warmup(config.replace(max_steps=50), batches_per_epoch=1000) == 50
    assert "(max_steps=50)" in torchlingo_logs.records[0].getMessage()
    assert warn_long_warmup(config, batches_per_epoch=100) is None  # 200 steps planned: warmup fits
    assert warn_long_warmup(config.replace(scheduler_type="plateau"), batches_per_epoch=30) is None  # no warmup
    assert len(torchlingo_logs.records) == 1
