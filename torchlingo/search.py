"""Greedy and beam search over whole batches with a KV cache: the fast versions of the decoders in `reference.py`.

Read `reference.py` first: it decodes one sentence by recomputing the whole prefix at every step, and the functions
here must return exactly what it returns (tests/test_decoding.py checks it). What they add is speed:

- each batch is encoded once; the cross-attention keys/values are computed at the first step and the self-attention
  ones grow by one position a step (`SimpleTransformer.new_cache()`);
- beam search runs batch x beam rows at once and drops every sentence that is done from the active batch, so the
  last long sentence does not drag the others along;
- rows are picked with `index_select`, about 5x faster than advanced indexing (`x[rows]`) on CPU for these shapes.

Conventions: `src` is a (batch, len) LongTensor as `pad_batch` makes it (`<s> ids </s>`, right-padded). A sentence
may produce at most `max_len_a * src_len + max_len_b` tokens before its `</s>` (src_len counts its non-pad source
tokens); at that length `</s>` is forced. Scores are summed log-probabilities divided by the GNMT length penalty
((5 + len) / 6) ** alpha, where len counts the generated tokens including `</s>`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .data_processing.vocab import BOS_IDX, EOS_IDX

if TYPE_CHECKING:
    from .models import KVCache, SimpleTransformer

Hypothesis = tuple[list[int], float]  # (token ids without <s>/</s>, length-normalized score)


def gnmt_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha 0 ranks by the raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src: torch.Tensor, pad_idx: int, a: float, b: int, limit: int) -> list[int]:
    """Per sentence: how many tokens it may generate before </s>, a * src_len + b, capped by the model's positions."""
    return [min(int(a * n + b), limit) for n in (src != pad_idx).sum(1).tolist()]


def position_limit(model: SimpleTransformer | Ensemble) -> int:
    """The most tokens a sentence can generate before </s>: <s> takes position 0, </s> is fed at no position."""
    return model.positions.size(0) - 1


def log_probs(logits: torch.Tensor, pad_idx: int) -> torch.Tensor:
    """Next-token log-probabilities in fp32 at least (fp64 is kept, for exact tests); never <pad> or <s>."""
    logits[..., pad_idx] = -math.inf
    logits[..., BOS_IDX] = -math.inf
    return logits.log_softmax(-1, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)


def _next_log_probs(
    model: SimpleTransformer | Ensemble,
    tokens: torch.Tensor,
    memory: torch.Tensor | _Memories | None,
    src_mask: torch.Tensor,
    cache: KVCache | _EnsembleCache,
) -> torch.Tensor:
    """One decoder step through the cache: (rows, vocab) log-probabilities of the token after `tokens`."""
    # `memory` and `cache` come from this model's own encode() and new_cache(): an Ensemble's are its members'.
    if isinstance(model, Ensemble):
        return model.next_log_probs(tokens, memory, src_mask, cache)  # type: ignore[arg-type]
    hidden = model.decode_hidden(tokens, memory, src_mask, cache)  # type: ignore[arg-type]
    return log_probs(model.project(hidden[:, -1]), model.pad_idx)


# -- ensembles ------------------------------------------------------------------------------------------------


class Ensemble:
    """Several models with one target vocabulary decoded as one: the next-token log-probabilities are the mean of
    the members' log-probabilities. It offers what the decoders use of a model (`encode`, `new_cache`, `pad_idx`,
    `positions`), each member keeping its own KV cache; `greedy_decode` and `beam_search` take it as a model, and
    so do the reference decoders (`reference.py`, through `prefix_log_probs`).

    The members read the same source ids (one source vocabulary) and share the padding mask.
    """

    def __init__(self, models: Iterable[SimpleTransformer]) -> None:
        self.models = list(models)
        if not self.models:
            raise ValueError("Ensemble: no models given")
        sizes = {m.args["tgt_vocab_size"] for m in self.models}
        if len(sizes) > 1:
            raise ValueError(f"Ensemble: the models have target vocabularies of different sizes {sorted(sizes)}")
        self.pad_idx = self.models[0].pad_idx
        self.positions = min((m.positions for m in self.models), key=lambda p: p.size(0))

    def encode(self, src: torch.Tensor) -> tuple[_Memories, torch.Tensor]:
        encoded = [m.encode(src) for m in self.models]
        return _Memories(memory for memory, _ in encoded), encoded[0][1]  # the same mask: src != pad

    def new_cache(self, capacity: int = 64) -> _EnsembleCache:
        return _EnsembleCache([m.new_cache(capacity) for m in self.models])

    def next_log_probs(
        self, tokens: torch.Tensor, memory: _Memories | None, src_mask: torch.Tensor, cache: _EnsembleCache
    ) -> torch.Tensor:
        """The mean of the members' next-token log-probabilities, each through its own cache."""
        out = [
            _next_log_probs(m, tokens, memory[i] if memory is not None else None, src_mask, cache.caches[i])
            for i, m in enumerate(self.models)
        ]
        return out[0] if len(out) == 1 else torch.stack(out).mean(0)

    def prefix_log_probs(self, src: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Full recomputation (reference decoders): the mean of the members' log-probabilities after `prefix`."""
        out = [log_probs(m(src, prefix)[:, -1], m.pad_idx) for m in self.models]
        return out[0] if len(out) == 1 else torch.stack(out).mean(0)


class _Memories(list):
    """The members' encoder outputs; `dtype` is the first one's (beam search picks its score precision from it)."""

    @property
    def dtype(self) -> torch.dtype:
        return self[0].dtype


class _EnsembleCache:
    """One KV cache per member, selected and reordered together."""

    def __init__(self, caches: list[KVCache]) -> None:
        self.caches = caches

    def select(self, rows: torch.Tensor) -> None:
        for c in self.caches:
            c.select(rows)

    def reorder(self, rows: torch.Tensor) -> None:
        for c in self.caches:
            c.reorder(rows)

    def select_source(self, rows: torch.Tensor) -> None:
        for c in self.caches:
            c.select_source(rows)


def _strip(ids: list[int]) -> list[int]:
    """Generated ids up to (without) the first </s>."""
    return ids[: ids.index(EOS_IDX)] if EOS_IDX in ids else ids


# -- greedy ---------------------------------------------------------------------------------------------------


@torch.inference_mode()
def greedy_decode(
    model: SimpleTransformer | Ensemble,
    src: torch.Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_scores: bool = False,
    prefixes: list[list[int]] | None = None,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]] | list[tuple[list[int], float]]:
    """The most probable next token at each step, for every sentence of `src` at once.

    Returns token ids per sentence (without <s>/</s>); with `return_scores`, (ids, summed log-probability) pairs.
    `prefixes`: per sentence, target ids its output starts with (forced; see `force_prefix`). `sampling`: draw each
    token from the model's (filtered, tempered) distribution with `generator` instead of taking the most probable;
    the score stays the model's own log-probability of the tokens drawn.
    """
    device, n = src.device, src.size(0)
    limits = _prefix_limits(src, model, max_len_a, max_len_b, prefixes)
    forced = _forced_tokens(prefixes, n, device)
    memory: torch.Tensor | _Memories | None  # None once the cache holds the source keys/values
    memory, src_mask = model.encode(src)
    cache = model.new_cache(max(limits) + 1)
    rows = torch.arange(n, device=device)  # the sentence each active row decodes
    active_limits = torch.tensor(limits, device=device)
    out = torch.full((n, max(limits) + 1), model.pad_idx, dtype=torch.long, device=device)
    logprob = torch.zeros(n, dtype=torch.float64, device=device)
    tokens = torch.full((n, 1), BOS_IDX, dtype=torch.long, device=device)
    for t in range(max(limits) + 1):
        logp = _next_log_probs(model, tokens, memory, src_mask, cache)
        memory = None  # the cache holds the cross-attention keys/values from now on
        if forced is not None and t < forced.size(1):
            logp = force_prefix(logp, forced[:, t].index_select(0, rows))
        if sampling is None:
            best_lp, best = _max_per_row(logp)  # logp.max(-1), faster
        else:
            best = sampling.draw(logp, generator)
            best_lp = logp.gather(1, best.unsqueeze(1)).squeeze(1)
        at_limit = active_limits <= t
        best = best.masked_fill(at_limit, EOS_IDX)
        logprob[rows] += torch.where(at_limit, logp[:, EOS_IDX], best_lp).double()
        out[rows, t] = best
        done = best == EOS_IDX
        n_done = int(done.sum())  # the one host sync of a step: which sentences leave the batch
        if n_done == rows.numel():
            break
        if n_done:
            keep = (~done).nonzero().squeeze(1)
            rows, active_limits, src_mask, best = (
                x.index_select(0, keep) for x in (rows, active_limits, src_mask, best)
            )
            cache.select(keep)
        tokens = best.unsqueeze(1)
    ids = [_strip(row) for row in out.tolist()]
    return list(zip(ids, logprob.tolist())) if return_scores else ids


# -- target prefixes and sampling -----------------------------------------------------------------------------


def _prefix_limits(
    src: torch.Tensor,
    model: SimpleTransformer | Ensemble,
    max_len_a: float,
    max_len_b: int,
    prefixes: list[list[int]] | None,
) -> list[int]:
    """max_lengths, raised where a sentence's forced prefix is longer (still within the model's positions)."""
    limit = position_limit(model)
    limits = max_lengths(src, model.pad_idx, max_len_a, max_len_b, limit)
    if prefixes is None:
        return limits
    return [min(max(n, len(p)), limit) for n, p in zip(limits, prefixes)]


def _forced_tokens(prefixes: list[list[int]] | None, n: int, device: torch.device) -> torch.Tensor | None:
    """(n, longest prefix) forced ids, -1 past a sentence's prefix; None without prefixes."""
    if not prefixes or not any(prefixes):
        return None
    width = max(len(p) for p in prefixes)
    return torch.tensor([list(p) + [-1] * (width - len(p)) for p in prefixes], dtype=torch.long, device=device)


def force_prefix(logp: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """`logp` (rows, vocab) where each row with `want` >= 0 keeps only that token's log-probability (the others
    -inf): the decoders then follow the prefix, scoring it as the model does."""
    has = want >= 0
    index = want.clamp(min=0).unsqueeze(1)
    only = torch.full_like(logp, -math.inf).scatter_(1, index, logp.gather(1, index))
    return torch.where(has.unsqueeze(1), only, logp)


@dataclass(frozen=True)
class Sampling:
    """How `greedy_decode` samples: `topk` keeps the `top_k` most probable tokens (0: all), `topp` the smallest set
    whose probability reaches `top_p` (nucleus); the logits are divided by `temperature` first. `seed` seeds the
    generator the Translator makes per batch, so a run is reproducible. top_k 1 is greedy decoding."""

    method: str = "topk"
    top_k: int = 0
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("topk", "topp"):
            raise ValueError(f"sampling: {self.method!r} is not topk or topp")
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0 or self.temperature <= 0.0:
            raise ValueError("sampling: top_k >= 0, 0 < top_p <= 1 and temperature > 0 are needed")

    def draw(self, logp: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One token per row of `logp` (rows, vocab)."""
        scores = logp.float() / self.temperature
        if self.method == "topk" and 0 < self.top_k < scores.size(-1):
            kth = scores.topk(self.top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        elif self.method == "topp" and self.top_p < 1.0:
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            probs = sorted_scores.softmax(-1)
            drop = probs.cumsum(-1) - probs >= self.top_p  # the tokens after the nucleus is complete
            scores = scores.scatter(1, order, sorted_scores.masked_fill(drop, -math.inf))
        return torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)


# -- beam search ----------------------------------------------------------------------------------------------


@torch.inference_mode()
def beam_search(
    model: SimpleTransformer | Ensemble,
    src: torch.Tensor,
    beam_size: int = 5,
    length_penalty: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    n_best: int = 1,
    prefixes: list[list[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Beam search for every sentence of `src` at once; per sentence its `n_best` hypotheses, best first.
    `prefixes`: per sentence, target ids every hypothesis starts with (forced, scored as the model scores them).

    Each step takes the 2K best continuations of a sentence's K beams: those ending in </s> among the first K are
    finished (scored with the length penalty), the first K others are the new beams. A sentence is done when it has
    K finished hypotheses or reaches its maximum length; it then leaves the active batch. The first step decodes one
    row a sentence (its K beams would all be <s>), as CTranslate2 does on CPU; the cache then grows to K rows.
    """
    k, device, n = beam_size, src.device, src.size(0)
    limits = _prefix_limits(src, model, max_len_a, max_len_b, prefixes)
    forced = _forced_tokens(prefixes, n, device)
    penalties = [gnmt_penalty(length, length_penalty) for length in range(max(limits) + 2)]
    memory: torch.Tensor | _Memories | None  # None once the cache holds the source keys/values
    memory, src_mask = model.encode(src)  # one row a sentence: its beams share it (see Attention)
    cache = model.new_cache(max(limits) + 1)
    beams = _Beams.start(n, torch.float64 if memory.dtype == torch.float64 else torch.float32, device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]  # (score, ids) per sentence
    for t in range(max(limits) + 1):
        logp = _next_log_probs(model, beams.tokens, memory, src_mask, cache)
        memory = None
        if forced is not None and t < forced.size(1):
            want = forced[:, t].index_select(0, torch.tensor(beams.sentences, device=device))
            logp = force_prefix(logp, want.repeat_interleave(beams.width))
        at_limit = [limits[s] <= t for s in beams.sentences]
        if any(at_limit):  # known on the host: no sync
            logp = _only_eos(logp, at_limit, beams.width)
        top_scores, top_beam, top_tok = _expand(logp, beams.scores, k)
        is_eos = top_tok == EOS_IDX
        _collect_finished(finished, beams, top_scores[:, :k], top_beam[:, :k], is_eos[:, :k], penalties[t + 1])
        scores, origin, new_tokens = _next_beams(top_scores, top_beam, top_tok, is_eos, k, beams.width)
        alive = [i for i, s in enumerate(beams.sentences) if len(finished[s]) < k and not at_limit[i]]
        if not alive:
            break
        if len(alive) < len(beams.sentences):
            keep = torch.tensor(alive, device=device)
            scores, origin, new_tokens = _drop_done(keep, scores, origin, new_tokens)
            beams.sentences = [beams.sentences[i] for i in alive]
            # The source side has a row per sentence, not per beam: it only loses the finished sentences.
            src_mask = src_mask.index_select(0, keep)
            cache.select_source(keep)
        beams.advance(scores, origin, new_tokens)
        cache.reorder(origin)
    n_best = max(1, min(n_best, k))
    return [[(ids, score) for score, ids in sorted(bucket, key=lambda h: -h[0])[:n_best]] for bucket in finished]


class _Beams:
    """The beams of the active sentences: m sentences of w rows each, the rows of sentence i at i * w ... i * w + w - 1
    (w = `width`: 1 before the first step, the beam size k after it).

    sentences: the original index of each active sentence; scores: (m, w) summed log-probabilities; history: (m * w,
    t) generated tokens of each row; tokens: (m * w, 1) the tokens fed at the next step.
    """

    def __init__(self, sentences: list[int], scores: torch.Tensor, history: torch.Tensor, tokens: torch.Tensor):
        self.sentences, self.scores, self.history, self.tokens = sentences, scores, history, tokens

    @property
    def width(self) -> int:
        """Rows a sentence decodes at the next step."""
        return self.scores.size(1)

    @classmethod
    def start(cls, n: int, dtype: torch.dtype, device: torch.device) -> _Beams:
        """One beam per sentence, <s> only: its k beams would be identical, so they branch at the first step."""
        scores = torch.zeros((n, 1), dtype=dtype, device=device)
        history = torch.empty((n, 0), dtype=torch.long, device=device)
        tokens = torch.full((n, 1), BOS_IDX, dtype=torch.long, device=device)
        return cls(list(range(n)), scores, history, tokens)

    def advance(self, scores: torch.Tensor, origin: torch.Tensor, new_tokens: torch.Tensor) -> None:
        """The new beams: row r continues row `origin[r]` with `new_tokens[r]`."""
        self.scores = scores
        self.history = torch.cat([self.history.index_select(0, origin), new_tokens.unsqueeze(1)], dim=1)
        self.tokens = new_tokens.unsqueeze(1)


def _only_eos(logp: torch.Tensor, at_limit: list[bool], width: int) -> torch.Tensor:
    """`logp` with every token but </s> at -inf in the rows of sentences at their length limit."""
    not_eos = torch.ones(logp.size(-1), dtype=torch.bool, device=logp.device)
    not_eos[EOS_IDX] = False
    force = torch.tensor(at_limit, device=logp.device).repeat_interleave(width)
    return logp.masked_fill(force[:, None] & not_eos, -math.inf)


def _expand(logp: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sentence's 2k best continuations of its w beams (`scores` (m, w)), best first: (scores, beam, token),
    each (m, 2k).

    They are among each beam's 2k best tokens: a top-k per beam first, then one over the w * 2k survivors, instead
    of a top-k over w * vocab candidates and a pass adding the beam scores to all of them.
    """
    (m, w), vocab = scores.shape, logp.size(-1)
    beam_lp, beam_tok = _topk_per_row(logp, min(2 * k, vocab))
    width = beam_lp.size(1)
    candidates = (beam_lp.view(m, w, width) + scores.unsqueeze(-1)).view(m, w * width)
    top_scores, top_idx = candidates.topk(min(2 * k, w * width), dim=1)
    return top_scores, top_idx // width, beam_tok.view(m, w * width).gather(1, top_idx)


def _collect_finished(
    finished: list[list[tuple[float, list[int]]]],
    beams: _Beams,
    scores: torch.Tensor,
    beam: torch.Tensor,
    is_eos: torch.Tensor,
    penalty: float,
) -> None:
    """Add the candidates among the first k that end in </s> to their sentence's finished hypotheses (k at most).

    `scores`, `beam`, `is_eos`: the first k continuations of each active sentence, as `_expand` ranks them.
    """
    finals = (is_eos & (scores > -math.inf)).nonzero().tolist()  # the one host sync of a step
    if not finals:
        return
    fin_scores, fin_beams = scores.tolist(), beam.tolist()
    fin_rows = [i * beams.width + fin_beams[i][j] for i, j in finals]
    k = scores.size(1)  # the beam size
    for (i, j), ids in zip(finals, beams.history[fin_rows].tolist()):
        bucket = finished[beams.sentences[i]]
        if len(bucket) < k:
            bucket.append((fin_scores[i][j] / penalty, ids))


def _next_beams(
    top_scores: torch.Tensor, top_beam: torch.Tensor, top_tok: torch.Tensor, is_eos: torch.Tensor, k: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first k candidates that do not end the sentence become the beams (a stable sort keeps the score order).

    Returns their scores (m, k), the row each continues (m * k,: an index into the m * `width` rows decoded now) and
    the token it adds (m * k,).
    """
    m = top_scores.size(0)
    pick = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :k]
    scores = top_scores.gather(1, pick)
    origin = (top_beam.gather(1, pick) + torch.arange(m, device=pick.device).unsqueeze(1) * width).view(-1)
    return scores, origin, top_tok.gather(1, pick).view(-1)


def _drop_done(
    keep: torch.Tensor, scores: torch.Tensor, origin: torch.Tensor, new_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The new beams (as `_next_beams` returns them) of the sentences `keep` only: the others are done."""
    k = scores.size(1)
    rows = (keep.unsqueeze(1) * k + torch.arange(k, device=keep.device)).view(-1)
    return scores.index_select(0, keep), origin.index_select(0, rows), new_tokens.index_select(0, rows)


def _max_per_row(x: torch.Tensor, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """`x.max(dim=1)` for wide rows (log-probabilities over the vocabulary), 3-7x faster on CPU at 64-250 rows:
    PyTorch's max with indices is not vectorized there, `amax` is. The first block of `block` columns holding the
    row's maximum is searched, so the index is the first maximal one, as max returns it."""
    rows, n = x.shape
    n_blocks = n // block
    if rows < 8 or n_blocks < 4:  # a few rows: the plain call is faster
        return x.max(dim=1)
    maxima = x[:, : n_blocks * block].view(rows, n_blocks, block).amax(-1)  # (rows, blocks, block) -> (rows, blocks)
    cols = maxima.argmax(1, keepdim=True) * block + torch.arange(block, device=x.device)  # (rows, block)
    values, at = x.gather(1, cols).max(dim=1)
    index = cols.gather(1, at.unsqueeze(1)).squeeze(1)
    if n_blocks * block < n:  # the columns after the last whole block win only when strictly greater
        tail_values, tail_at = x[:, n_blocks * block :].max(dim=1)
        later = tail_values > values
        values, index = torch.where(later, tail_values, values), torch.where(later, tail_at + n_blocks * block, index)
    return values, index


def _topk_per_row(x: torch.Tensor, k: int, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """`x.topk(k, dim=1)` for wide rows (a beam's log-probabilities over the vocabulary), about 2x faster on CPU: a
    row's k largest values lie in the k blocks of `block` columns with the largest maxima (a value outside them is
    beaten by those k maxima), so only those blocks, and the columns after the last whole block, are searched."""
    rows, n = x.shape
    n_blocks = n // block
    if n_blocks <= 4 * k:
        return x.topk(k, dim=1)
    maxima = x[:, : n_blocks * block].view(rows, n_blocks, block).amax(-1)
    best = maxima.topk(k, dim=1).indices
    cols = (best.unsqueeze(-1) * block + torch.arange(block, device=x.device)).view(rows, -1)
    if n_blocks * block < n:
        cols = torch.cat([cols, torch.arange(n_blocks * block, n, device=x.device).expand(rows, -1)], dim=1)
    values, picked = x.gather(1, cols).topk(k, dim=1)
    return values, cols.gather(1, picked)
