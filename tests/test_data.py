"""Vocabularies, NMTDataset, collate_fn and the token-budget sampler."""

import pytest
import torch

from torchlingo.config import Config
from torchlingo.data_processing import (
    NMTDataset,
    SentencePieceVocab,
    TokenBudgetBatchSampler,
    Vocab,
    collate_fn,
    load_vocab,
    make_loader,
    vocab_from_state,
)
from torchlingo.errors import DataError

WORD = Config(tokenizer="word")


def test_word_vocab_specials_frequency_and_size(tmp_path):
    vocab = Vocab.build(["a b b c c c", "c d"], min_freq=2)
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert vocab.itos[4:] == ["c", "b"]  # most frequent first; a and d are below min_freq
    assert vocab.encode("c b a") == [4, 5, 1]
    assert Vocab.build(["a b b c c c"], max_size=6).itos[4:] == ["c", "b"]
    vocab.save(tmp_path / "v.txt")
    assert load_vocab(tmp_path / "v.txt").itos == vocab.itos
    assert vocab_from_state(vocab.to_state()).itos == vocab.itos


def test_word_vocab_splits_punctuation_and_detokenizes():
    vocab = Vocab.build(["¿Dónde está el gato?", "Hola, mundo."])
    ids = vocab.encode("¿Dónde está el mundo?")
    assert vocab.decode([2] + ids + [3, 0, 0]) == "¿Dónde está el mundo?"


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_vocab_shares_special_ids_and_round_trips(tmp_path, model_type):
    texts = ["the cat sat on the mat", "a dog ran in the park", "el gato está en la casa"] * 20
    sp = SentencePieceVocab.train(texts, vocab_size=60, model_type=model_type)
    assert [sp.sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert 10 < len(sp) <= 60
    assert sp.decode(sp.encode("the cat ran")) == "the cat ran"
    sp.save(tmp_path / "sp.model")
    assert load_vocab(tmp_path / "sp.model").encode("la casa") == sp.encode("la casa")
    assert vocab_from_state(sp.to_state()).encode("la casa") == sp.encode("la casa")


def test_tsv_with_and_without_header_and_no_quote_processing(tmp_path):
    rows = ['"Hi," he said\t"Hola", dijo', "NA\tNA", "null\tnulo"]
    (tmp_path / "h.tsv").write_text("src\ttgt\n" + "\n".join(rows) + "\n")
    (tmp_path / "n.tsv").write_text("\n".join(rows))
    for name in ["h.tsv", "n.tsv"]:
        ds = NMTDataset(tmp_path / name, config=WORD)
        assert ds.src_texts == ['"Hi," he said', "NA", "null"]
        assert ds.tgt_texts == ['"Hola", dijo', "NA", "nulo"]
    src, tgt = ds[1]
    assert src.dtype == torch.long and ds.src_vocab.decode(src) == "NA"


def test_parallel_files_and_language_suffixes(tmp_path):
    (tmp_path / "train.de").write_text("ein Hund\nzwei Katzen\n")
    (tmp_path / "train.en").write_text("a dog\ntwo cats\n")
    by_prefix = NMTDataset(tmp_path / "train", config=Config(tokenizer="word", src_lang="de", tgt_lang="en"))
    by_pair = NMTDataset((tmp_path / "train.de", tmp_path / "train.en"), config=WORD)
    assert by_prefix.src_texts == by_pair.src_texts == ["ein Hund", "zwei Katzen"]
    assert by_prefix.tgt_texts == ["a dog", "two cats"]
    (tmp_path / "train.en").write_text("a dog\n")
    with pytest.raises(DataError, match=r"train.de has 2 lines but .*train.en has 1"):
        NMTDataset(tmp_path / "train", config=Config(tokenizer="word", src_lang="de", tgt_lang="en"))


def test_default_vocabulary_is_sentencepiece_joint(toy_data):
    ds = NMTDataset(toy_data / "data" / "train.tsv")
    assert isinstance(ds.src_vocab, SentencePieceVocab) and ds.src_vocab is ds.tgt_vocab
    val = NMTDataset(toy_data / "data" / "val.tsv", src_vocab=ds.src_vocab, tgt_vocab=ds.tgt_vocab)
    assert val.src_vocab is ds.src_vocab


def test_collate_adds_bos_eos_and_right_pads():
    src, tgt = collate_fn([(torch.tensor([5, 6, 7]), torch.tensor([8])), (torch.tensor([9]), torch.tensor([10, 11]))])
    assert src.tolist() == [[2, 5, 6, 7, 3], [2, 9, 3, 0, 0]]
    assert tgt.tolist() == [[2, 8, 3, 0], [2, 10, 11, 3]]


def test_max_len_filters_and_reports(tmp_path):
    (tmp_path / "t.tsv").write_text("a b c d e\tx\nshort\tshort\n")
    ds = NMTDataset(tmp_path / "t.tsv", config=WORD, max_len=3)
    assert ds.src_texts == ["short"] and ds.skipped == {"longer than max_len=3 tokens": 1}


def lengths(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 40, (n,), generator=g), torch.randint(1, 40, (n,), generator=g)


def test_token_budget_sampler_respects_budget_covers_everything_and_is_seeded():
    src, tgt = lengths(500)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens=300, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        assert len(b) * max(max(int(src[i]), int(tgt[i])) + 2 for i in b) <= 300
    again = TokenBudgetBatchSampler(src, tgt, max_tokens=300, seed=3)
    assert list(again) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    restored = TokenBudgetBatchSampler(src, tgt, max_tokens=300, seed=0)
    restored.load_state_dict(sampler.state_dict())
    assert list(restored) == list(sampler)


def test_token_budget_batches_have_little_padding():
    src, tgt = lengths(2000, seed=1)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens=1000, seed=0)
    real = padded = 0
    for b in sampler:
        longest = max(int(tgt[i]) for i in b) + 2
        real += sum(int(tgt[i]) + 2 for i in b)
        padded += longest * len(b)
    assert 1 - real / padded < 0.05


def test_make_loader_uses_batch_size_or_token_budget(toy_data):
    ds = NMTDataset(toy_data / "data" / "train.tsv", config=WORD)
    by_size = make_loader(ds, Config(tokenizer="word", batch_size=10), shuffle=True)
    assert len(by_size) == 10 and max(len(src) for src, _ in by_size) == 10
    by_tokens = make_loader(ds, Config(tokenizer="word", max_tokens=64), shuffle=True)
    assert all(src.numel() <= 64 and tgt.numel() <= 64 for src, tgt in by_tokens)
