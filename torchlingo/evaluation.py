"""Corpus BLEU, chrF and TER with sacreBLEU, each with its signature so a reported score can be reproduced.

Scores are computed on detokenized text (what `Vocab.decode` returns) with sacreBLEU's own tokenization, so they
compare across toolkits; never on subword pieces.
"""

from __future__ import annotations

from typing import Sequence

from .errors import DataError

METRICS = ("bleu", "chrf", "ter")


def _metric(name: str):
    from sacrebleu.metrics import BLEU, CHRF, TER

    return {"bleu": BLEU, "chrf": CHRF, "ter": TER}[name]()


def score_corpus(hyps: Sequence[str], refs: Sequence[str] | Sequence[Sequence[str]],
                 metrics: Sequence[str] = METRICS) -> dict:
    """Corpus scores of `hyps` against `refs`: {"bleu": 27.1, "bleu_signature": "nrefs:1|...", "chrf": ..., ...}.

    `refs` is one reference per hypothesis, or a list of reference streams (each as long as `hyps`) for several.
    """
    hyps = list(hyps)
    streams = [list(refs)] if not refs or isinstance(refs[0], str) else [list(r) for r in refs]
    for stream in streams:
        if len(stream) != len(hyps):
            raise DataError(f"score_corpus: {len(hyps)} hypotheses but {len(stream)} references; they must pair up line by line")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise DataError(f"score_corpus: unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    scores: dict = {}
    for name in metrics:
        metric = _metric(name)
        result = metric.corpus_score(hyps, streams)
        scores[name] = float(result.score)
        scores[f"{name}_signature"] = str(metric.get_signature())
    return scores
