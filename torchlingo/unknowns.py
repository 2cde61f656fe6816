"""How much of a text a word-level vocabulary does not know: words left out of the training vocabulary become
<unk>, and a model cannot translate what it never sees. Reported once per file, on the "torchlingo" logger.

SentencePiece splits unseen words into known pieces, so only word-level vocabularies are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .data_processing import UNK_IDX

if TYPE_CHECKING:
    from .data_processing import NMTDataset, SentencePieceVocab, Vocab
    from .data_processing.shards import ShardedDataset

log = logging.getLogger("torchlingo")


def unknown_counts(id_seqs: Iterable[Sequence[int]]) -> tuple[int, int]:
    """(unknown tokens, all tokens) over sequences of ids."""
    unknown = total = 0
    for ids in id_seqs:
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        total += len(ids)
        unknown += sum(1 for i in ids if i == UNK_IDX)
    return unknown, total


def _share(unknown: int, total: int) -> str:
    return f"{unknown} of {total} ({100 * unknown / total:.1f}%)" if total else "0 of 0"


def report_dataset(dataset: NMTDataset | ShardedDataset) -> tuple[float, float] | None:
    """Log the unknown-token rates of a dataset's source and target sides when its vocabularies are word level;
    returns the two rates (None for SentencePiece)."""
    if getattr(dataset.src_vocab, "kind", None) != "word":
        return None
    src = unknown_counts(s for s, _ in dataset)  # type: ignore[union-attr]  # iterated by __getitem__ (IndexError)
    tgt = unknown_counts(t for _, t in dataset)  # type: ignore[union-attr]
    log.info(
        "%s: unknown words: source %s tokens, target %s tokens (word vocabulary from the training data)",
        dataset.source,
        _share(*src),
        _share(*tgt),
    )
    src_rate, tgt_rate = (u / t if t else 0.0 for u, t in (src, tgt))
    return src_rate, tgt_rate


def report_input(name: str, vocab: Vocab | SentencePieceVocab, sentences: list[str]) -> float | None:
    """Log the unknown-token rate of input sentences under a word-level source vocabulary; returns it."""
    if getattr(vocab, "kind", None) != "word":
        return None
    unknown, total = unknown_counts(vocab.encode_many([s for s in sentences if s.strip()]))
    log.info("%s: unknown words: %s source tokens are not in the model's word vocabulary", name, _share(unknown, total))
    return unknown / total if total else 0.0
