"""Decoding: cached batched greedy/beam search (search.py) against the full-prefix references (reference.py), the
Translator (translator.py), and sacreBLEU scores."""

import copy
import dataclasses
import math
import threading
import time

import pytest
import torch
import torch.nn as nn

from torchlingo.checkpoint import save_checkpoint
from torchlingo.config import Config
from torchlingo.data_processing.batching import pad_batch
from torchlingo.data_processing.vocab import Vocab
from torchlingo.errors import CheckpointError, ConfigError, DataError
from torchlingo.evaluation import score_corpus
from torchlingo.fastpath import PackedLinear, can_pack, pack_linears_
from torchlingo.models import SimpleTransformer
from torchlingo.reference import reference_beam, reference_greedy
from torchlingo.search import Sampling, beam_search, gnmt_penalty, greedy_decode, max_lengths
from torchlingo.translator import DecodingSettings, Translator, even_batches


def random_model(seed: int, src_vocab: int = 30, tgt_vocab: int = 25, **config) -> SimpleTransformer:
    """A seeded random model in float64 and eval mode: batched and unbatched runs agree far below any argmax gap.

    Untied, sharpened output weights make the logits well separated and the output lengths vary (some sentences end
    early, some run into the length limit), so every code path is exercised.
    """
    torch.manual_seed(seed)
    config = Config(
        d_model=32,
        n_heads=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        tie_embeddings=False,
        **config,
    )
    model = SimpleTransformer(src_vocab, tgt_vocab, config).double().eval()
    with torch.no_grad():
        model.output_proj.weight.mul_(3.0)
    return model


def random_batch(seed: int, n: int, vocab: int = 30, max_len: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len, (n,), generator=g).tolist()
    lengths[0] = max_len  # at least one long sentence, so the others are padded
    return pad_batch([torch.randint(4, vocab, (length,), generator=g) for length in lengths])


@pytest.mark.parametrize("seed,batch", [(0, 1), (1, 3), (2, 8), (3, 16)])
def test_greedy_matches_full_prefix_reference(seed, batch):
    model, src = random_model(seed), random_batch(seed + 100, batch)
    assert (src == 0).any() or batch == 1
    out = greedy_decode(model, src, max_len_a=1.5, max_len_b=4)
    ref = [reference_greedy(model, src[i], max_len_a=1.5, max_len_b=4) for i in range(batch)]
    assert out == ref
    limits = max_lengths(src, 0, 1.5, 4, 10_000)
    assert all(len(o) <= lim for o, lim in zip(out, limits))
    assert len({len(o) for o in out}) > 1 or batch == 1  # lengths differ: rows were dropped mid-batch


@pytest.mark.parametrize("seed,batch,beam", [(0, 1, 2), (1, 4, 3), (2, 8, 5), (4, 13, 4)])
def test_beam_matches_full_prefix_reference(seed, batch, beam):
    model, src = random_model(seed), random_batch(seed + 200, batch)
    out = beam_search(model, src, beam_size=beam, length_penalty=0.6, max_len_a=1.2, max_len_b=5, n_best=beam)
    for i in range(batch):
        ref = reference_beam(model, src[i], beam_size=beam, length_penalty=0.6, max_len_a=1.2, max_len_b=5, n_best=beam)
        assert [ids for ids, _ in out[i]] == [ids for ids, _ in ref]
        assert [s for _, s in out[i]] == pytest.approx([s for _, s in ref], abs=1e-9)
        assert len(out[i]) == beam


def test_beam_search_decodes_its_first_step_on_one_row_a_sentence(monkeypatch):
    """The k beams of a sentence are all <s> at the first step: it runs on one row a sentence, then on k (the
    reference equality above checks that the hypotheses stay exact)."""
    model, src = random_model(3), random_batch(203, 6)
    rows = []
    decode_hidden = model.decode_hidden

    def counting(tokens, *args):
        rows.append(tokens.size(0))
        return decode_hidden(tokens, *args)

    monkeypatch.setattr(model, "decode_hidden", counting)
    beam_search(model, src, beam_size=4, length_penalty=0.6, max_len_a=1.2, max_len_b=5)
    assert rows[:2] == [6, 24] and max(rows) == 24


def test_nbest_sorted_and_scores_are_normalized_log_probs():
    model, src = random_model(5), random_batch(5, 6)
    out = beam_search(model, src, beam_size=4, length_penalty=1.0, max_len_a=1.0, max_len_b=6, n_best=4)
    for i, nbest in enumerate(out):
        scores = [s for _, s in nbest]
        assert scores == sorted(scores, reverse=True) and len(set(map(tuple, (ids for ids, _ in nbest)))) == 4
        ids, score = nbest[0]  # rescore the best hypothesis by teacher forcing
        row = src[i][src[i] != 0].unsqueeze(0)
        tgt = torch.tensor([[2] + ids + [3]])
        logits = model(row, tgt[:, :-1])
        logits[..., 0] = logits[..., 2] = -math.inf  # <pad>, <s> are never produced
        logp = logits.log_softmax(-1).gather(2, tgt[:, 1:].unsqueeze(2)).sum().item()
        assert score == pytest.approx(logp / gnmt_penalty(len(ids) + 1, 1.0), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy(seed):
    model, src = random_model(seed), random_batch(seed + 300, 10)
    greedy = greedy_decode(model, src, 1.5, 6, return_scores=True)
    beam = beam_search(model, src, beam_size=1, length_penalty=0.0, max_len_a=1.5, max_len_b=6)
    assert [b[0][0] for b in beam] == [ids for ids, _ in greedy]
    assert [b[0][1] for b in beam] == pytest.approx([lp for _, lp in greedy], abs=1e-9)


def test_batch_equals_one_by_one():
    model, src = random_model(7), random_batch(7, 12)
    greedy = greedy_decode(model, src, 1.5, 5)
    beam = beam_search(model, src, 3, 0.6, 1.5, 5, n_best=2)
    for i in range(12):
        row = src[i : i + 1, : int((src[i] != 0).sum())]
        assert greedy_decode(model, row, 1.5, 5) == [greedy[i]]
        single = beam_search(model, row, 3, 0.6, 1.5, 5, n_best=2)[0]
        assert [ids for ids, _ in single] == [ids for ids, _ in beam[i]]


def test_fp32_model_agrees_with_reference():
    """The default precision too; a float tie flip would show up as a (rare) honest failure here, not be hidden."""
    model = random_model(11).float()
    src = random_batch(11, 6)
    assert greedy_decode(model, src, 1.5, 5) == [reference_greedy(model, src[i], 1.5, 5) for i in range(6)]
    beam = beam_search(model, src, 3, 0.6, 1.5, 5)
    assert [b[0][0] for b in beam] == [reference_beam(model, src[i], 3, 0.6, 1.5, 5)[0][0] for i in range(6)]


def test_max_length_is_a_times_source_plus_b():
    src = pad_batch([torch.tensor([5] * 4), torch.tensor([6] * 2)])  # 6 and 4 non-pad tokens with <s> </s>
    assert max_lengths(src, 0, 1.5, 3, 1000) == [12, 9]
    assert max_lengths(src, 0, 1.5, 3, 10) == [10, 9]
    model = random_model(0)
    for ids in greedy_decode(model, src, 0.0, 2):
        assert len(ids) <= 2


def toy_translator(beam_size=3, **kwargs):
    texts = ["the cat sees a dog", "a big red house", "the small dog runs", "a cat", "the dog likes the big cat"]
    src_vocab, tgt_vocab = Vocab.build(texts), Vocab.build(["el gato ve un perro", "una casa grande roja"])
    torch.manual_seed(3)
    model = SimpleTransformer(
        len(src_vocab),
        len(tgt_vocab),
        Config(
            d_model=32,
            n_heads=4,
            num_encoder_layers=1,
            num_decoder_layers=1,
            d_ff=64,
            dropout=0.0,
            tie_embeddings=False,
        ),
    )
    return Translator(model, src_vocab, tgt_vocab, beam_size=beam_size, max_len_b=4, **kwargs), texts


@pytest.mark.parametrize("beam", [1, 3])
def test_translator_restores_input_order_and_batches_by_budget(beam):
    translator, texts = toy_translator(beam, decode_max_tokens=12)
    out = translator.translate(texts)
    assert len(out) == len(texts) and all(isinstance(t, str) for t in out)
    assert out == [translator.translate([t])[0] for t in texts]
    lengths = [len(translator.src_vocab.encode(t)) for t in texts]
    groups = translator.batches(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(texts)))
    assert all(len(g) * (max(lengths[i] for i in g) + 2) * beam <= 12 or len(g) == 1 for g in groups)
    assert len(groups) > 1
    assert translator.translate([]) == []


def test_beam_batches_hold_the_budget_over_the_beam_size():
    """decode_max_tokens counts the rows a sentence decodes: beam 5 batches hold a fifth of greedy's source tokens
    (the cache and logits grow with sentences x beams); sampling decodes one row a sentence, as greedy does."""
    lengths = [8] * 1000  # 10 tokens a sentence with <s> </s>
    one = {"decode_parallel_batches": 1}  # one batch at a time: the budget alone cuts (see test_even_batches_...)
    assert [len(g) for g in toy_translator(1, **one)[0].batches(lengths)] == [400, 400, 200]
    assert [len(g) for g in toy_translator(5, **one)[0].batches(lengths)] == [80] * 12 + [40]
    assert {len(g) for g in toy_translator(5, decode_max_tokens=50, **one)[0].batches(lengths)} == {1}  # never empty
    sampler = toy_translator(5, sampling=Sampling("topk", top_k=3), **one)[0]
    assert [len(g) for g in sampler.batches(lengths)] == [400, 400, 200]
    assert DecodingSettings(beam_size=4, decode_max_tokens=1000).source_budget() == 250


def test_decode_max_sentences_caps_the_batches_besides_the_token_budget():
    lengths = [3] * 200  # 1000 tokens with <s> </s>: one batch within the 4000-token budget
    one = {"decode_parallel_batches": 1}
    assert [len(g) for g in toy_translator(3, **one)[0].batches(lengths)] == [200]
    assert [len(g) for g in toy_translator(3, decode_max_sentences=64, **one)[0].batches(lengths)] == [64, 64, 64, 8]
    assert [len(g) for g in toy_translator(1, decode_max_sentences=150, **one)[0].batches(lengths)] == [150, 50]
    keyword_wins = toy_translator(1, decode_max_sentences=150, max_sentences=90, **one)[0]  # Translator(max_sentences=)
    assert [len(g) for g in keyword_wins.batches(lengths)] == [90, 90, 20]


def test_even_batches_give_every_parallel_worker_the_same_share():
    """Batches decoded side by side come in a multiple of the workers, evened out under the budget: the budget's
    own cut (two full batches and a half one) would leave one of two workers idle for the last."""
    lengths = [8] * 1000  # 10 tokens a sentence with <s> </s>
    assert [len(g) for g in even_batches(lengths, 4000, None, 1)] == [400, 400, 200]
    assert [len(g) for g in even_batches(lengths, 4000, None, 2)] == [250] * 4
    assert [len(g) for g in even_batches(lengths, 4000, None, 3)] == [334, 334, 332]
    assert [len(g) for g in even_batches([3] * 200, 4000, None, 2)] == [100, 100]  # one batch becomes two
    assert [len(g) for g in even_batches([3] * 200, 4000, 64, 2)] == [50] * 4  # a multiple already, but a short tail
    assert [len(g) for g in even_batches([3] * 200, 4000, 90, 2)] == [50] * 4  # the sentence cap still holds
    assert even_batches([5], 4000, None, 2) == [[0]]  # fewer sentences than workers
    varied = [n % 37 + 1 for n in range(3000)]
    for workers in (2, 3, 4):
        groups = even_batches(varied, 4000, None, workers)
        assert sorted(i for g in groups for i in g) == list(range(3000))
        assert len(groups) % workers == 0
        assert all(len(g) * (max(varied[i] for i in g) + 2) <= 4000 for g in groups)
    translator = toy_translator(1, decode_parallel_batches=2)[0]
    assert [len(g) for g in translator.batches(lengths)] == [250] * 4


def test_translator_nbest_and_from_checkpoint(tmp_path):
    translator, texts = toy_translator(3, n_best=3)
    nbest = translator.translate_nbest(texts[:2])
    assert all(len(n) == 3 and [s for _, s in n] == sorted((s for _, s in n), reverse=True) for n in nbest)
    model = translator.model
    path = save_checkpoint(
        {
            "model": model.state_dict(),
            "model_args": model.args,
            "src_vocab": translator.src_vocab.to_state(),
            "tgt_vocab": translator.tgt_vocab.to_state(),
            "config": {"beam_size": 2, "max_len_b": 4},
        },
        tmp_path / "best.pt",
    )
    loaded = Translator.from_checkpoint(path, beam_size=3)
    assert loaded.settings == DecodingSettings(beam_size=3, max_len_b=4)  # the rest: Config's defaults
    assert loaded.settings.decode_max_tokens == Config().decode_max_tokens == 4000
    assert loaded.translate(texts) == translator.translate(texts)
    assert Translator.from_checkpoint(path).settings.beam_size == 2
    own = DecodingSettings(beam_size=1, decode_max_tokens=7)
    assert Translator.from_checkpoint(path, own, n_best=2).settings == own  # given settings replace the checkpoint's
    save_checkpoint({"model": model.state_dict(), "model_args": model.args}, tmp_path / "novocab.pt")
    with pytest.raises(CheckpointError, match="no vocabularies"):
        Translator.from_checkpoint(tmp_path / "novocab.pt")


def test_decoding_settings_are_the_config_keys():
    """Same names, defaults and checks as Config's fields: a Config, or the flat dict a checkpoint stores, converts
    without a renaming table; keys the dict lacks take Config's defaults."""
    names = [f.name for f in dataclasses.fields(DecodingSettings)]
    config = Config(beam_size=4, decode_max_tokens=99, decode_parallel_batches=2)
    assert DecodingSettings.from_config(config) == DecodingSettings(**{name: getattr(config, name) for name in names})
    assert DecodingSettings.from_config(config.to_dict(grouped=False)) == DecodingSettings.from_config(config)
    assert DecodingSettings.from_config({"beam_size": 2}) == DecodingSettings(beam_size=2)
    assert all(getattr(DecodingSettings(), name) == getattr(Config(), name) for name in names)
    assert DecodingSettings(max_len_b=4.0).max_len_b == 4 and isinstance(DecodingSettings(max_len_a=2).max_len_a, float)
    with pytest.raises(ConfigError, match="beam_size: must be >= 1, got 0"):
        DecodingSettings(beam_size=0)
    with pytest.raises(ConfigError, match="amp: 'fp8' is not one of"):
        Translator(random_model(0), None, None, amp="fp8")


def test_the_long_source_warning_names_the_line_of_the_file(torchlingo_logs):
    """The CLI translates only the non-empty lines: the warning still counts the empty ones (line 4 of the file)."""
    from torchlingo.cli import translate_nbest_lines

    vocab = Vocab(["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(26)])
    model = random_model(5, src_vocab=30, tgt_vocab=30, max_positions=12)
    translator = Translator(model, vocab, vocab, beam_size=1, max_len_b=4, amp="none")
    long = " ".join(f"w{i % 26}" for i in range(25))
    out = translate_nbest_lines(translator, ["w1 w2", "", "  ", long, "w3"])
    assert [nbest[0][0] for nbest in out][1:3] == ["", ""] and all(nbest[0][0] for nbest in out[:1] + out[3:])
    warnings = [r.getMessage() for r in torchlingo_logs.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("input line 4 has 25 tokens"), warnings
    translator.decode_ids([vocab.encode(long)], lines=[17])
    assert torchlingo_logs.records[-1].getMessage().startswith("input line 17 has 25 tokens")


@pytest.mark.parametrize("beam", [1, 3])
def test_a_source_longer_than_the_positions_is_translated_in_pieces(torchlingo_logs, beam):
    """A source over max_positions - 2 tokens is not cut: it is split into the fewest near-equal pieces that fit,
    whose translations are joined, and a warning names its line (1-based, in the list passed in)."""
    model = random_model(5, max_positions=12)  # 10 source tokens besides <s> </s>
    long = torch.randint(4, 30, (25,), generator=torch.Generator().manual_seed(0)).tolist()
    translator = Translator(model, None, None, beam_size=beam, max_len_b=4, amp="none", n_best=2)
    out = translator.decode_ids([[5, 6, 7], long, [8, 9]])
    warnings = [r for r in torchlingo_logs.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warnings] == [
        "input line 2 has 25 tokens, more than the 10 the model's positions allow (max_positions - 2): "
        "translated in 3 pieces of at most 9 tokens, joined"
    ]
    for i, short in ((0, [5, 6, 7]), (2, [8, 9])):  # the other sources as ever (scores: other batch, other sums)
        alone = translator.decode_ids([short])[0]
        assert [ids for ids, _ in out[i]] == [ids for ids, _ in alone]
        assert [s for _, s in out[i]] == pytest.approx([s for _, s in alone], abs=1e-12)
    pieces = [translator.decode_ids([ids])[0] for ids in (long[:8], long[8:16], long[16:])]  # 25 = 8 + 8 + 9
    assert len(out[1]) == min(len(p) for p in pieces)
    best = [p[0] for p in pieces]
    assert out[1][0][0] == [token for ids, _ in best for token in ids]
    logprob = sum(score * gnmt_penalty(len(ids) + 1, 0.6) for ids, score in best)  # each piece's </s> included
    length = sum(len(ids) + 1 for ids, _ in best)
    assert max(s for _, s in out[1]) == out[1][0][1]
    assert logprob / gnmt_penalty(length, 0.6) in [pytest.approx(s, abs=1e-9) for _, s in out[1]]


def test_score_corpus_values_and_signatures():
    refs = ["The cat sat on the mat.", "A dog runs in the park."]
    perfect = score_corpus(refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert perfect["ter"] == pytest.approx(0.0)
    assert perfect["bleu_signature"].startswith("nrefs:1|") and "nc:6|nw:0" in perfect["chrf_signature"]
    hyps = ["The cat sat on a mat.", "A dog ran in the park."]
    import sacrebleu

    assert score_corpus(hyps, refs)["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert set(score_corpus(hyps, refs, metrics=("bleu",))) == {"bleu", "bleu_signature"}
    two = score_corpus(hyps, [refs, hyps], metrics=("bleu",))
    assert two["bleu"] == pytest.approx(100.0) and "nrefs:2" in two["bleu_signature"]
    with pytest.raises(DataError, match="2 hypotheses but 1 references"):
        score_corpus(hyps, refs[:1])
    with pytest.raises(DataError, match="unknown metric 'meteor'"):
        score_corpus(hyps, refs, metrics=("meteor",))


def test_kv_cache_grows_past_its_capacity_and_selects_rows():
    """Self-attention keys/values are written into buffers with room to spare; outliving the room doubles it without
    losing what was cached, and selecting rows copies the filled positions in the new row order."""
    from torchlingo.models.transformer import KVCache

    cache, steps = KVCache(num_layers=2, capacity=2), []
    for _ in range(5):
        k, v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
        steps.append((k, v))
        all_k, all_v = cache.append(0, k, v)
        cache.append(1, k, v)
        cache.length += 1
        torch.testing.assert_close(all_k, torch.cat([s[0] for s in steps], dim=2), rtol=0, atol=0)
        torch.testing.assert_close(all_v, torch.cat([s[1] for s in steps], dim=2), rtol=0, atol=0)
    assert [kv[0].size(2) for kv in cache.self_kv] == [8, 8]  # 2 -> 4 -> 8, each layer on its own
    rows = torch.tensor([2, 0, 0])
    cache.reorder(rows)
    k, v = cache.append(0, torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))
    torch.testing.assert_close(k[:, :, :5], torch.cat([s[0] for s in steps], dim=2)[rows], rtol=0, atol=0)
    assert k.shape == (3, 2, 6, 4) and not k[:, :, 5].any()


def test_kv_cache_reorder_frees_each_old_buffer_before_copying_the_next(monkeypatch):
    """Beam search reorders the cache at every step: holding the whole old cache until the new one is complete would
    double the decoder's largest memory (beam 5 on Multi30k: +0.8 GB at the test set). Each copy may see only the
    buffers not yet reordered alive: 6, 5, ..., 1 of the 6 old ones (3 layers x keys, values)."""
    import weakref

    from torchlingo.models.transformer import KVCache

    cache = KVCache(num_layers=3, capacity=4)
    for layer in range(3):
        cache.append(layer, torch.randn(4, 2, 1, 8), torch.randn(4, 2, 1, 8))
    cache.length = 1
    old = [weakref.ref(t) for kv in cache.self_kv for t in kv]
    expected = [kv[0][:, :, :1].clone() for kv in cache.self_kv]
    alive, index_select = [], torch.index_select

    def counting_index_select(*args, **kwargs):
        alive.append(sum(ref() is not None for ref in old))
        return index_select(*args, **kwargs)

    monkeypatch.setattr(torch, "index_select", counting_index_select)
    cache.reorder(torch.tensor([3, 1, 1]))
    assert alive == [6, 5, 4, 3, 2, 1]
    for kv, before in zip(cache.self_kv, expected):
        torch.testing.assert_close(kv[0][:, :, :1], before[[3, 1, 1]], rtol=0, atol=0)
        assert kv[0].shape == kv[1].shape == (3, 2, 4, 8)


def test_cached_greedy_with_a_small_cache_capacity_matches_the_reference(monkeypatch):
    """Decoders size the cache for their longest sentence; a cache that has to grow gives the same tokens."""
    model, src = random_model(8), random_batch(308, 6)
    small = lambda capacity=64: SimpleTransformer.new_cache(model, 1)  # noqa: E731
    monkeypatch.setattr(model, "new_cache", small)
    out = greedy_decode(model, src, max_len_a=1.5, max_len_b=4)
    assert out == [reference_greedy(model, src[i], max_len_a=1.5, max_len_b=4) for i in range(6)]
    beams = beam_search(model, src, beam_size=3, length_penalty=0.6, max_len_a=1.5, max_len_b=4)
    assert [b[0][0] for b in beams] == [reference_beam(model, src[i], 3, 0.6, 1.5, 4)[0][0] for i in range(6)]


@pytest.mark.parametrize("n,k", [(8000, 10), (8003, 10), (70, 4), (1000, 1)])
def test_blockwise_topk_per_row_equals_topk(n, k):
    from torchlingo.search import _topk_per_row

    g = torch.Generator().manual_seed(n)
    x = torch.randn(33, n, generator=g, dtype=torch.float64) * 3
    x[0, :-1] = -math.inf  # a row forced to one token, as at the length limit
    x[1, 5:9] = 100.0  # the largest values of a row inside one block
    values, idx = _topk_per_row(x, k)
    ref = x.topk(k, dim=1)
    assert torch.equal(values, ref.values)
    assert torch.equal(x.gather(1, idx), ref.values) and (idx[2:] == ref.indices[2:]).all()


@pytest.mark.parametrize("rows,n", [(33, 8000), (33, 8003), (40, 70), (5, 8000), (12, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blockwise_max_per_row_equals_max_with_its_first_index(rows, n, dtype):
    from torchlingo.search import _max_per_row

    g = torch.Generator().manual_seed(rows * n)
    x = (torch.randn(rows, n, generator=g, dtype=torch.float64) * 3).to(dtype)
    x[0, :-1] = -math.inf  # a row forced to one token (the last column: in the tail when n % 64)
    x[1, [7, n // 2, n - 3]] = 50.0  # ties in different blocks: the first one counts
    x[2, [3, 4]] = 50.0  # ties within a block
    x[3, [n - 1, 10]] = 50.0  # a tie between the tail and a block
    x[4] = -math.inf
    x[4, [2, n - 2]] = 0.0
    values, index = _max_per_row(x)
    ref = x.max(dim=1)
    assert torch.equal(values, ref.values) and torch.equal(index, ref.indices)
    assert index[1] == 7 and index[2] == 3 and index[3] == 10 and index[4] == 2


def bf16_model(seed: int) -> SimpleTransformer:
    model = random_model(seed).to(torch.bfloat16)
    if not can_pack(model):
        pytest.skip("needs a CPU with native bf16 matmuls and oneDNN's packed linear")
    return model


def test_packed_linears_equal_the_linear_layers_bitwise():
    model = bf16_model(0)
    packed = pack_linears_(copy.deepcopy(model))
    assert not any(isinstance(m, nn.Linear) for m in packed.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == 2 * 4 + 2 * 7 + 1  # qkv/out, q/kv/out, ffn
    for name, value in model.state_dict().items():  # same parameters under the same names
        assert torch.equal(packed.state_dict()[name], value), name
    with torch.inference_mode():
        for rows in (1, 7, 64, 300):  # the layout is tuned for 64 rows; other row counts must give the same values
            for plain, fast in [
                (model.output_proj, packed.output_proj),
                (model.decoder_layers[0].ff.fc2, packed.decoder_layers[0].ff.fc2),
            ]:
                x = torch.randn(rows, 3, plain.in_features).to(torch.bfloat16)
                assert torch.equal(fast(x), plain(x))


def test_translator_decodes_with_a_packed_copy_and_leaves_the_model_alone():
    model = bf16_model(1)
    src = random_batch(1, 9)
    greedy = greedy_decode(model, src, 1.5, 5, return_scores=True)
    beam = beam_search(model, src, 3, 0.6, 1.5, 5, n_best=2)
    for size, expected in ((1, [[hyp] for hyp in greedy]), (3, beam)):
        translator = Translator(
            model,
            None,
            None,
            beam_size=size,
            length_penalty=0.0 if size == 1 else 0.6,
            max_len_b=5,
            amp="bf16",
            n_best=2,
        )
        assert any(isinstance(m, PackedLinear) for m in translator.model.modules())
        assert not any(isinstance(m, PackedLinear) for m in model.modules())
        out = translator.decode_ids([row[(row != 0)][1:-1].tolist() for row in src])  # pad_batch adds <s> </s> again
        assert [[ids for ids, _ in n] for n in out] == [[ids for ids, _ in n] for n in expected]
        assert [s for n in out for _, s in n] == pytest.approx([s for n in expected for _, s in n], rel=1e-6)


@pytest.mark.parametrize("beam", [1, 3])
def test_parallel_batches_decode_the_same_and_restore_torch_threads(monkeypatch, beam):
    """Batches decoded side by side on worker threads, each with its share of torch's threads, give the serial
    output; afterwards torch has its thread count back."""
    model = random_model(8)  # float64 with amp none: the same tokens, scores equal up to summation order
    src_ids = [random_batch(seed, 1, max_len=seed % 7 + 2)[0, 1:-1].tolist() for seed in range(23)]
    serial = Translator(
        model, None, None, beam_size=beam, max_len_b=5, amp="none", decode_max_tokens=30, decode_parallel_batches=1
    ).decode_ids(src_ids)
    threads, seen = torch.get_num_threads(), []
    torch.set_num_threads(4)
    try:
        translator = Translator(
            model, None, None, beam_size=beam, max_len_b=5, amp="none", decode_max_tokens=30, decode_parallel_batches=2
        )
        decode_batch = translator._decode_batch

        def recording(src):
            seen.append((threading.get_ident(), torch.get_num_threads()))
            time.sleep(0.02)  # long enough that both workers take batches
            return decode_batch(src)

        monkeypatch.setattr(translator, "_decode_batch", recording)
        parallel = translator.decode_ids(src_ids)
        assert [[ids for ids, _ in n] for n in parallel] == [[ids for ids, _ in n] for n in serial]
        # Another thread count changes the order of a matmul's sums (float64: ~1e-15 relative).
        assert [s for n in parallel for _, s in n] == pytest.approx([s for n in serial for _, s in n], rel=1e-12)
        assert len(translator.batches([len(s) for s in src_ids])) == len(seen) > 2
        assert len({ident for ident, _ in seen}) == 2 and threading.get_ident() not in {i for i, _ in seen}
        assert {n for _, n in seen} == {2}  # 4 threads shared by 2 workers
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(threads)


def test_an_error_in_a_parallel_batch_reaches_the_caller(monkeypatch):
    translator = Translator(
        random_model(9),
        None,
        None,
        beam_size=1,
        max_len_b=5,
        amp="none",
        decode_max_tokens=20,
        decode_parallel_batches=2,
    )

    def failing(src):
        raise RuntimeError(f"batch of {src.size(0)} failed")

    monkeypatch.setattr(translator, "_decode_batch", failing)
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="batch of"):
        translator.decode_ids([[5, 6, 7]] * 12)
    assert torch.get_num_threads() == threads
    with pytest.raises(ConfigError, match="decode_parallel_batches: must be >= 1, got 0"):
        Translator(random_model(9), None, None, decode_parallel_batches=0)
