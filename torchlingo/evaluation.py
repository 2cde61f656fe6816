"""Corpus BLEU, chrF and TER with sacreBLEU, each with its signature so a reported score can be reproduced.

Scores are computed on detokenized text (what `Vocab.decode` returns) with sacreBLEU's own tokenization, so they
compare across toolkits; never on subword pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import DataError

if TYPE_CHECKING:
    import torch
    from sacrebleu.metrics.base import Metric

    from .config import Config
    from .data_processing import NMTDataset
    from .tracking import RunLogger

METRICS = ("bleu", "chrf", "ter")


def _metric(name: str) -> Metric:
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU, "chrf": CHRF, "ter": TER}[name]()


def score_corpus(
    hyps: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]], metrics: Sequence[str] = METRICS
) -> dict:
    """Corpus scores of `hyps` against `refs`: {"bleu": 27.1, "bleu_signature": "nrefs:1|...", "chrf": ..., ...}.

    `refs` is one reference per hypothesis, or a list of reference streams (each as long as `hyps`) for several.
    """
    hyps = list(hyps)
    if not hyps:
        raise DataError("score_corpus: no sentences to score (the hypotheses are empty)")
    streams = [list(refs)] if not refs or isinstance(refs[0], str) else [list(r) for r in refs]
    for stream in streams:
        if len(stream) != len(hyps):
            raise DataError(
                f"score_corpus: {len(hyps)} hypotheses but {len(stream)} references; they must pair up line by line"
            )
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise DataError(f"score_corpus: unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    scores: dict = {}
    for name in metrics:
        metric = _metric(name)
        result = metric.corpus_score(hyps, streams)  # type: ignore[arg-type]  # streams of str (refs[0] decided)
        scores[name] = float(result.score)
        scores[f"{name}_signature"] = str(metric.get_signature())
    return scores


class BleuValidator:
    """A `train_model` validator: decodes the validation set and returns {"bleu": ..., "chrf": ...}.

    Built by train_model when `config.eval_bleu` is set. Decodes greedily (or with `config.eval_beam_size`) and
    writes the first `samples` translations (default: `config.bleu_samples`) to TensorBoard as text
    (`val/translations`) when given a RunLogger.
    """

    def __init__(
        self, dataset: NMTDataset, config: Config, logger: RunLogger | None = None, samples: int | None = None
    ):
        from .errors import ConfigError

        missing = [a for a in ("src_texts", "tgt_texts", "src_vocab", "tgt_vocab") if not hasattr(dataset, a)]
        if missing:
            raise ConfigError(
                f"eval_bleu: the validation dataset ({type(dataset).__name__}) has no {missing[0]}; "
                "use an NMTDataset as val set"
            )
        self.dataset, self.config, self.logger = dataset, config, logger
        self.samples = config.bleu_samples if samples is None else samples
        self.src_ids = [dataset[i][0].tolist() for i in range(len(dataset))]

    def __call__(self, model: torch.nn.Module, step: int) -> dict:
        from .translator import DecodingSettings, Translator

        c, was_training = self.config, model.training
        device = next(model.parameters()).device
        settings = dataclasses.replace(DecodingSettings.from_config(c), beam_size=c.eval_beam_size)
        translator = Translator(
            model, self.dataset.src_vocab, self.dataset.tgt_vocab, settings, device=str(device), progress=False
        )
        try:
            hyps = [self.dataset.tgt_vocab.decode(nbest[0][0]) for nbest in translator.decode_ids(self.src_ids)]
        finally:
            model.train(was_training)
        scores = score_corpus(hyps, self.dataset.tgt_texts, metrics=("bleu", "chrf"))
        if self.logger is not None and self.samples:
            rows = ["| source | reference | translation |", "|---|---|---|"]
            rows += [
                f"| {_cell(s)} | {_cell(r)} | {_cell(h)} |"
                for s, r, h in zip(self.dataset.src_texts[: self.samples], self.dataset.tgt_texts, hyps)
            ]
            self.logger.text("val/translations", "\n".join(rows), step)
        return {"bleu": scores["bleu"], "chrf": scores["chrf"]}


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
