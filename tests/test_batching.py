"""TokenBudgetBatchSampler over numpy arrays: the vectorised cut gives exactly the batches of the plain loop
(`cut_batches_reference`), the epoch is sorted by (target, source) length with shuffled ties, and the batches depend
on (seed, epoch) alone, whatever container the lengths come in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchlingo.data_processing import TokenBudgetBatchSampler
from torchlingo.data_processing.batching import cut_batches, cut_batches_reference, length_order

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def fast_cut(order, src, tgt, max_tokens, max_sentences) -> list[list[int]]:
    """cut_batches on the same input as cut_batches_reference, as lists."""
    order, src, tgt = (np.asarray(a, dtype=np.int64) for a in (order, src, tgt))
    offsets = cut_batches(np.maximum(src[order], tgt[order]), max_tokens, max_sentences)
    assert offsets[0] == 0 and offsets[-1] == len(order) and np.all(np.diff(offsets) > 0)
    return [order[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


@FUZZ
@given(
    st.lists(st.tuples(st.integers(2, 60), st.integers(2, 60)), max_size=80),
    st.integers(1, 300),
    st.one_of(st.none(), st.integers(0, 12)),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_vectorised_cut_equals_the_plain_loop(pairs, max_tokens, max_sentences, rng, sort):
    """Random lengths (some longer than the budget: a batch of their own), budgets and sentence caps, in a random
    order or sorted as the sampler sorts (target, then source)."""
    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    order = list(range(len(pairs)))
    rng.shuffle(order)
    if sort:
        order.sort(key=lambda i: (tgt[i], src[i]))
    expected = cut_batches_reference(order, src, tgt, max_tokens, max_sentences)
    assert fast_cut(order, src, tgt, max_tokens, max_sentences) == expected


def test_only_sentence_caps_and_overlong_sentences():
    src, tgt = [3, 50, 4, 4, 4, 4, 4], [3, 2, 4, 4, 4, 4, 99]
    order = list(range(7))
    for max_tokens, cap in ((2**62, 3), (40, None), (40, 2), (8, 1)):
        assert fast_cut(order, src, tgt, max_tokens, cap) == cut_batches_reference(order, src, tgt, max_tokens, cap)
    assert fast_cut(order, src, tgt, 40, None) == [[0], [1], [2, 3, 4, 5], [6]]  # 50 and 99 alone


@pytest.mark.parametrize("top", [40, 300, 70_000])  # one 16-bit key, two 16-bit passes, lexsort itself
def test_the_length_order_is_lexsorts(top):
    rng = np.random.default_rng(top)
    src, tgt = rng.integers(0, top, 5000, dtype=np.int32), rng.integers(0, top, 5000, dtype=np.int32)
    assert np.array_equal(length_order(src, tgt), np.lexsort((src, tgt)))
    assert np.array_equal(length_order(src[:0], tgt[:0]), np.zeros(0, dtype=np.int64))


def lengths(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 40, n, dtype=np.int32), rng.integers(1, 40, n, dtype=np.int32)


def test_an_epoch_is_sorted_by_target_then_source_with_shuffled_ties_and_cut_by_the_reference():
    src, tgt = lengths(3000)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens=400, seed=5)
    order, offsets, numbers = sampler._epoch()
    assert sorted(order.tolist()) == list(range(3000))
    keys = list(zip(tgt[order].tolist(), src[order].tolist()))
    assert keys == sorted(keys)
    assert order[:50].tolist() != sorted(order[:50].tolist())  # ties (same lengths) are not in index order
    expected = cut_batches_reference(order.tolist(), (src + 2).tolist(), (tgt + 2).tolist(), 400, None)
    batches = sampler.global_batches()
    assert sorted(batches) == sorted(expected) and batches != expected  # the same batches, shuffled
    assert list(sampler) == batches and len(sampler) == len(expected)
    assert {a.dtype.kind for a in (order, offsets, numbers)} == {"i"}  # arrays, no list per sentence


def test_without_shuffle_the_batches_are_the_sorted_order_cut_in_sequence():
    src, tgt = lengths(500, seed=2)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens=300, shuffle=False, seed=9)
    by_length = sorted(range(500), key=lambda i: (int(tgt[i]), int(src[i])))  # stable: ties in index order
    assert sampler.batches() == cut_batches_reference(by_length, (src + 2).tolist(), (tgt + 2).tolist(), 300, None)


def test_the_batches_depend_on_seed_and_epoch_only_whatever_holds_the_lengths(tmp_path):
    src, tgt = lengths(800, seed=3)
    np.save(tmp_path / "src.npy", src)
    np.save(tmp_path / "tgt.npy", tgt)
    inputs = [
        (src, tgt),
        (src.tolist(), tgt.tolist()),
        (torch.from_numpy(src.astype(np.int64)), torch.from_numpy(tgt.astype(np.int64))),
        (np.load(tmp_path / "src.npy", mmap_mode="r"), np.load(tmp_path / "tgt.npy", mmap_mode="r")),
    ]
    runs = []
    for s, t in inputs:
        sampler = TokenBudgetBatchSampler(s, t, max_tokens=500, seed=4, max_sentences=20)
        epochs = []
        for epoch in (0, 1, 0):
            sampler.set_epoch(epoch)
            epochs.append(list(sampler))
        assert epochs[0] == epochs[2] != epochs[1]
        runs.append(epochs)
    assert all(run == runs[0] for run in runs)
    other = TokenBudgetBatchSampler(src, tgt, max_tokens=500, seed=5, max_sentences=20)
    assert list(other) != runs[0][0]
    assert all(len(b) <= 20 for b in runs[0][0])


def test_an_int32_array_is_kept_without_a_copy_and_bad_lengths_are_refused():
    src, tgt = lengths(10)
    sampler = TokenBudgetBatchSampler(src, tgt, max_tokens=100)
    assert sampler.src_lengths is src and sampler.tgt_lengths is tgt
    with pytest.raises(ValueError, match="10 source lengths but 9 target"):
        TokenBudgetBatchSampler(src, tgt[:9], max_tokens=100)
    with pytest.raises(ValueError, match="one-dimensional integers"):
        TokenBudgetBatchSampler(src.astype(float), tgt, max_tokens=100)
    assert list(TokenBudgetBatchSampler([], [], max_tokens=100)) == []


def test_resuming_from_a_checkpoint_of_the_old_batch_order_warns(caplog):
    """Checkpoints before the numpy sampler recorded no 'order': resuming one says the resume is not exact."""
    from torch.utils.data import DataLoader

    from torchlingo.training import _warn_if_batch_order_changed

    sampler = TokenBudgetBatchSampler([3, 4, 5], [3, 4, 5], max_tokens=10)
    loader = DataLoader(list(range(3)), batch_sampler=sampler)
    assert sampler.state_dict()["order"] == TokenBudgetBatchSampler.ORDER == 2
    with caplog.at_level("WARNING", logger="torchlingo"):
        _warn_if_batch_order_changed(sampler.state_dict(), loader, "last.pt")
        assert caplog.records == []
        _warn_if_batch_order_changed({"seed": 0, "epoch": 1}, loader, "last.pt")
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith("last.pt: written by a torchlingo")
