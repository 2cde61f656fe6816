"""Data: vocabularies, the NMTDataset, and batching."""

from .batching import TokenBudgetBatchSampler, collate_fn, make_loader, pad_batch
from .dataset import NMTDataset, build_vocabs, resolve_data_path
from .vocab import BOS_IDX, EOS_IDX, PAD_IDX, UNK_IDX, SentencePieceVocab, Vocab, load_vocab, vocab_from_state

__all__ = [
    "NMTDataset",
    "collate_fn",
    "make_loader",
    "pad_batch",
    "TokenBudgetBatchSampler",
    "Vocab",
    "SentencePieceVocab",
    "load_vocab",
    "vocab_from_state",
    "build_vocabs",
    "resolve_data_path",
    "PAD_IDX",
    "UNK_IDX",
    "BOS_IDX",
    "EOS_IDX",
]
