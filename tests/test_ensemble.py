"""Ensembles: the batched cached decoders over several models against the full-prefix references (float64)."""

import pytest
import torch
from test_decoding import random_batch, random_model

from torchlingo.reference import reference_beam, reference_greedy
from torchlingo.search import Ensemble, beam_search, greedy_decode


def test_an_ensemble_of_one_is_that_model():
    model, src = random_model(0), random_batch(10, 8)
    one = Ensemble([model])
    assert greedy_decode(one, src, max_len_b=4, return_scores=True) == greedy_decode(
        model, src, max_len_b=4, return_scores=True
    )
    assert beam_search(one, src, beam_size=3, max_len_b=5, n_best=3) == beam_search(
        model, src, beam_size=3, max_len_b=5, n_best=3
    )


@pytest.mark.parametrize("seed,batch", [(1, 1), (2, 6), (3, 13)])
def test_greedy_ensemble_matches_the_reference_mean_of_log_probs(seed, batch):
    ensemble, src = Ensemble([random_model(seed), random_model(seed + 50)]), random_batch(seed + 100, batch)
    out = greedy_decode(ensemble, src, max_len_a=1.5, max_len_b=4)
    assert out == [reference_greedy(ensemble, src[i], max_len_a=1.5, max_len_b=4) for i in range(batch)]
    single = greedy_decode(ensemble.models[0], src, max_len_a=1.5, max_len_b=4)
    assert out != single or batch == 1  # the second model changes the outputs: the mean is really taken


@pytest.mark.parametrize("seed,batch,beam", [(1, 1, 2), (2, 5, 3), (4, 9, 4)])
def test_beam_ensemble_matches_the_reference_mean_of_log_probs(seed, batch, beam):
    models = [random_model(seed), random_model(seed + 50), random_model(seed + 60)]
    ensemble, src = Ensemble(models), random_batch(seed + 200, batch)
    out = beam_search(ensemble, src, beam_size=beam, length_penalty=0.6, max_len_a=1.2, max_len_b=5, n_best=beam)
    for i in range(batch):
        ref = reference_beam(
            ensemble, src[i], beam_size=beam, length_penalty=0.6, max_len_a=1.2, max_len_b=5, n_best=beam
        )
        assert [ids for ids, _ in out[i]] == [ids for ids, _ in ref]
        assert [s for _, s in out[i]] == pytest.approx([s for _, s in ref], abs=1e-9)


def test_reference_mean_is_the_mean_of_the_models_log_probs():
    a, b = random_model(7), random_model(8)
    src, prefix = random_batch(1, 1), torch.tensor([[2, 5, 6]])
    mean = Ensemble([a, b]).prefix_log_probs(src, prefix)
    la = torch.log_softmax(a(src, prefix)[:, -1].index_fill(-1, torch.tensor([0, 2]), -torch.inf), -1)
    lb = torch.log_softmax(b(src, prefix)[:, -1].index_fill(-1, torch.tensor([0, 2]), -torch.inf), -1)
    torch.testing.assert_close(mean, (la + lb) / 2)


def test_models_with_other_target_vocabularies_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        Ensemble([random_model(0), random_model(1, tgt_vocab=26)])
