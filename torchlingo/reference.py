"""Reference decoders: the place to start reading how a trained model translates.

Each decodes one sentence and recomputes the whole target prefix with the model's ordinary forward pass at every
step: no KV cache, no batching, plain loops over the candidates. They are slow (the naive baseline of
benchmarks/decode_speed.py) and short enough to read in a few minutes, and they are the definition the fast
decoders follow: `search.greedy_decode` and `search.beam_search` must return the same tokens and scores for every
sentence of a batch (tests/test_decoding.py checks it). The conventions (length limit, length penalty, scores) are
in the `search` module's docstring; the helpers shared with it come from there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .data_processing.vocab import BOS_IDX, EOS_IDX
from .search import Ensemble, Hypothesis, gnmt_penalty, log_probs, max_lengths, position_limit

if TYPE_CHECKING:
    from .models import SimpleTransformer


def _one_sentence(model: SimpleTransformer | Ensemble, src: torch.Tensor) -> torch.Tensor:
    """A row of `src` as a (1, len) batch without its padding."""
    src = src.view(-1)
    return src[src != model.pad_idx].unsqueeze(0)


def next_log_probs(model: SimpleTransformer | Ensemble, src: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the token after each row of `prefix`, recomputing the whole prefix (an `Ensemble`: the
    mean of its models' log-probabilities)."""
    if isinstance(model, Ensemble):
        return model.prefix_log_probs(src, prefix)
    return log_probs(model(src, prefix)[:, -1], model.pad_idx)


@torch.inference_mode()
def reference_greedy(
    model: SimpleTransformer | Ensemble, src: torch.Tensor, max_len_a: float = 1.5, max_len_b: int = 10
) -> list[int]:
    """Greedy decoding of one sentence (a row of `src`, padding ignored): at each step the most probable next token."""
    src = _one_sentence(model, src)
    limit = max_lengths(src, model.pad_idx, max_len_a, max_len_b, position_limit(model))[0]
    prefix = [BOS_IDX]
    for t in range(limit + 1):
        logp = next_log_probs(model, src, torch.tensor([prefix], device=src.device))[0]
        token = EOS_IDX if t >= limit else int(logp.argmax())
        if token == EOS_IDX:
            break
        prefix.append(token)
    return prefix[1:]


@torch.inference_mode()
def reference_beam(
    model: SimpleTransformer | Ensemble,
    src: torch.Tensor,
    beam_size: int = 5,
    length_penalty: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    n_best: int = 1,
) -> list[Hypothesis]:
    """Beam search for one sentence; its `n_best` (ids, score) hypotheses, best first.

    Each step scores every one-token continuation of the beams and walks the 2 * beam_size best: one ending in </s>
    among the first beam_size is a finished hypothesis (scored with the length penalty), the first beam_size others
    are the next beams. The search stops with beam_size finished hypotheses or at the length limit.
    """
    src = _one_sentence(model, src)
    limit = max_lengths(src, model.pad_idx, max_len_a, max_len_b, position_limit(model))[0]
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    finished: list[tuple[float, list[int]]] = []
    for t in range(limit + 1):
        prefix = torch.tensor([[BOS_IDX] + ids for _, ids in beams], device=src.device)
        logp = next_log_probs(model, src.expand(len(beams), -1), prefix)
        if t >= limit:
            logp[:, :EOS_IDX], logp[:, EOS_IDX + 1 :] = -math.inf, -math.inf
        vocab = logp.size(-1)
        flat = torch.tensor([score for score, _ in beams], dtype=logp.dtype, device=src.device)[:, None] + logp
        flat = torch.cat([flat, flat.new_full((beam_size - len(beams), vocab), -math.inf)]).view(-1)
        top_scores, top_idx = flat.topk(min(2 * beam_size, flat.numel()))
        new_beams: list[tuple[float, list[int]]] = []
        for rank, (score, idx) in enumerate(zip(top_scores.tolist(), top_idx.tolist())):
            beam, token = divmod(idx, vocab)
            if token == EOS_IDX:
                if rank < beam_size and score > -math.inf and len(finished) < beam_size:
                    finished.append((score / gnmt_penalty(t + 1, length_penalty), beams[beam][1]))
            elif len(new_beams) < beam_size and score > -math.inf:
                new_beams.append((score, beams[beam][1] + [token]))
        if len(finished) >= beam_size or t >= limit:
            break
        beams = new_beams
    return [(ids, score) for score, ids in sorted(finished, key=lambda h: -h[0])[:n_best]]
