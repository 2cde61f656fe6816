"""`Translator`: text in, text out. Tokenize, sort by length, batch by a source-token budget, decode, detokenize.

    translator = Translator.from_checkpoint("runs/de_en/checkpoints/best.pt", beam_size=5)
    translator.translate(["Ein Hund läuft."])  # -> ["A dog is running."]

How it decodes is a `DecodingSettings`: the decoding keys of a run's config under the same names, read from the
checkpoint unless given. The search itself is in `search.py` (and, to read first, `reference.py`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from .config import Config
from .data_processing.batching import pad_batch
from .data_processing.vocab import SentencePieceVocab, Vocab
from .search import Ensemble, Hypothesis, Sampling, beam_search, gnmt_penalty, greedy_decode

if TYPE_CHECKING:
    from .models import SimpleTransformer

log = logging.getLogger("torchlingo")
_Module = TypeVar("_Module", bound=torch.nn.Module)


def _config_key(name: str) -> Any:
    """A field that is the config key `name`: Config's default and doc, declared there once."""
    f = next(f for f in dataclasses.fields(Config) if f.name == name)
    return dataclasses.field(default=f.default, metadata=f.metadata)


@dataclass
class DecodingSettings:
    """How a `Translator` decodes: the decoding keys of the config, same names, defaults and checks (see
    docs/configuration.md)."""

    beam_size: int = _config_key("beam_size")
    length_penalty: float = _config_key("length_penalty")
    max_len_a: float = _config_key("max_len_a")
    max_len_b: int = _config_key("max_len_b")
    decode_max_tokens: int = _config_key("decode_max_tokens")
    decode_max_sentences: int | None = _config_key("decode_max_sentences")
    amp: str = _config_key("amp")
    quantize: str = _config_key("quantize")
    decode_parallel_batches: int | None = _config_key("decode_parallel_batches")

    def __post_init__(self) -> None:
        checked = Config(**dataclasses.asdict(self))  # Config's type and range checks (a ConfigError names the key)
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(checked, f.name))

    def source_budget(self, beams: int | None = None) -> int:
        """Padded source tokens a decoding batch may hold: decode_max_tokens over the rows each sentence decodes
        (`beams`, default beam_size; greedy and sampling decode one). Beam 5 in 4,000-token batches ran at 0.67x
        the speed of 800-2,000-token ones (Multi30k, 2-core CPU) and held 5x the cache of a greedy batch."""
        return max(1, self.decode_max_tokens // (self.beam_size if beams is None else beams))

    @classmethod
    def from_config(cls, config: Config | dict) -> DecodingSettings:
        """The settings of a `Config`, or of the flat config dict a checkpoint stores (keys it lacks: the defaults)."""
        values = config.to_dict(grouped=False) if isinstance(config, Config) else config
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def length_batches(lengths: Sequence[int], max_tokens: int | None, max_sentences: int | None) -> list[list[int]]:
    """Indices longest first, grouped so that each padded batch (with <s> </s>) holds at most `max_tokens` tokens and
    `max_sentences` sentences (None: no cap); a sentence over the budget is a batch of its own."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        group = groups[-1] if groups else []
        tokens = (len(group) + 1) * (lengths[group[0]] + 2) if group else 0
        full = (
            not group
            or (max_tokens is not None and tokens > max_tokens)
            or (max_sentences is not None and len(group) >= max_sentences)
        )
        if full:
            groups.append([i])
        else:
            group.append(i)
    return groups


def even_batches(lengths: Sequence[int], max_tokens: int, max_sentences: int | None, workers: int) -> list[list[int]]:
    """`length_batches`, spread evenly over `workers` decoding side by side: the fewest batches that are a multiple
    of `workers`, each within the smallest budget that gives that many, so that no worker is left with the tail.

    A 4,000-token budget cut the Multi30k test set into five full batches and one of 17 sentences: on two workers one
    decoded three full batches while the other idled (greedy 1.16x with six even ones, 150 sentences 1.57x: one
    batch becomes two). With many batches the tail is a small share, and the search is skipped."""
    groups = length_batches(lengths, max_tokens, max_sentences)
    if workers <= 1 or len(groups) >= 32 * workers or len(lengths) < workers:
        return groups
    want = -(-len(groups) // workers) * workers  # rounded up to a multiple of workers
    lo, hi = 1, max_tokens  # the smallest budget that needs at most `want` batches
    while lo < hi:
        mid = (lo + hi) // 2
        if len(length_batches(lengths, mid, max_sentences)) <= want:
            hi = mid
        else:
            lo = mid + 1
    even = length_batches(lengths, lo, max_sentences)
    return even if len(even) % workers == 0 else groups


class Translator:
    """Text in, text out: tokenize, sort by length, batch by a source-token budget, decode, restore the order.

    `settings` (default: `DecodingSettings()`) with `overrides` (its fields, e.g. `beam_size=1`) say how to decode.
    On CPU it decodes `decode_parallel_batches` batches at once, and in bf16 with a copy of the model whose linear
    layers are prepacked (`fastpath.py`), or with `quantize: int8` a copy whose linear layers are int8; the model
    passed in is left as it is.
    """

    def __init__(
        self,
        model: torch.nn.Module | Ensemble,
        src_vocab: Vocab | SentencePieceVocab,
        tgt_vocab: Vocab | SentencePieceVocab,
        settings: DecodingSettings | None = None,
        *,
        device: str | torch.device = "cpu",
        n_best: int = 1,
        max_sentences: int | None = None,
        progress: bool = True,
        sampling: Sampling | None = None,
        **overrides: Any,
    ) -> None:
        from .runtime import resolve_device

        self.settings = dataclasses.replace(settings or DecodingSettings(), **overrides)
        self.device = resolve_device(str(device))
        s = self.settings
        self.model: SimpleTransformer | Ensemble  # what the decoders take (search.py)
        if isinstance(model, Ensemble):  # each member in the decoding precision
            self.model = Ensemble([_decoding_model(m, self.device, s.amp, s.quantize) for m in model.models])
        else:  # a SimpleTransformer, or a module with its interface (encode, decode_hidden, ...)
            self.model = cast("SimpleTransformer", _decoding_model(model, self.device, s.amp, s.quantize))
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.n_best, self.max_sentences, self.progress = n_best, max_sentences, progress
        self.sampling = sampling

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | Sequence[str | Path], settings: DecodingSettings | None = None, **overrides: Any
    ) -> Translator:
        """Model and vocabularies from a training checkpoint; decoding settings from its config unless `settings`
        is given, then `overrides` (settings fields, or the keywords of `Translator`: device, n_best, ...).

        Several paths make an `Ensemble` (the mean of the models' log-probabilities); they must share their
        vocabularies, and the decoding settings come from the first one's config."""
        from .checkpoint import load_model
        from .errors import CheckpointError
        from .runtime import resolve_device

        paths = [path] if isinstance(path, (str, Path)) else list(path)
        device = resolve_device(str(overrides.pop("device", "cpu")))
        models, vocabs, first_state = [], None, None
        model: SimpleTransformer | Ensemble  # each checkpoint's model, then the one to translate with
        for p in paths:
            model, src_vocab, tgt_vocab, state = load_model(p, map_location=device)
            if src_vocab is None or tgt_vocab is None:
                raise CheckpointError(f"{p}: checkpoint holds no vocabularies; it cannot translate text")
            if vocabs is None:
                vocabs, first_state = (src_vocab, tgt_vocab), state
            else:
                _check_same_vocabs(paths[0], vocabs, p, (src_vocab, tgt_vocab))
            models.append(model)
        assert vocabs is not None and first_state is not None  # set by the first path (there is one at least)
        if settings is None:
            settings = DecodingSettings.from_config(first_state.get("config") or {})
        model = models[0] if len(models) == 1 else Ensemble(models)
        return cls(model, *vocabs, settings, device=device, **overrides)

    def translate(self, sentences: Sequence[str], prefixes: Sequence[str] | None = None) -> list[str]:
        """The best translation of each sentence, in input order (each starting with its prefix, if given)."""
        return [nbest[0][0] for nbest in self.translate_nbest(sentences, prefixes)]

    def translate_nbest(
        self, sentences: Sequence[str], prefixes: Sequence[str] | None = None, *, lines: Sequence[int] | None = None
    ) -> list[list[tuple[str, float]]]:
        """Per sentence, its n_best (translation, score) pairs, best first. `prefixes`: per sentence, target text
        every hypothesis starts with ("" for none). `lines`: each sentence's 1-based line in its file, for warnings
        (default 1, 2, ...)."""
        prefix_ids = None
        if prefixes is not None:
            if len(prefixes) != len(sentences):
                raise ValueError(f"{len(prefixes)} prefixes for {len(sentences)} sentences")
            prefix_ids = [self.tgt_vocab.encode(p) if p.strip() else [] for p in prefixes]
        ids = self.decode_ids(self.src_vocab.encode_many(list(sentences)) if sentences else [], prefix_ids, lines=lines)
        return [[(self.tgt_vocab.decode(hyp), score) for hyp, score in nbest] for nbest in ids]

    def decode_ids(
        self,
        src_ids: Sequence[Sequence[int]],
        prefixes: Sequence[Sequence[int]] | None = None,
        *,
        lines: Sequence[int] | None = None,
    ) -> list[list[Hypothesis]]:
        """Token ids in, n-best (token ids, score) lists out, in input order; `prefixes`: target ids per sentence
        that its hypotheses start with.

        A source longer than the model's positions is translated in pieces, joined (and a warning names its line:
        `lines[i]`, or i + 1; a prefix is forced on its first piece).
        """
        limit = self.model.positions.size(0) - 2  # room for <s> and </s>
        pieces, spans = _split_long_sources(src_ids, limit, lines or range(1, len(src_ids) + 1))
        piece_prefixes: list[list[int]] | None = None
        if prefixes is not None and any(prefixes):
            piece_prefixes = [[] for _ in pieces]
            for (a, _), prefix in zip(spans, prefixes):
                piece_prefixes[a] = list(prefix)
        nbests = self._decode_all(pieces, piece_prefixes)
        alpha = self.settings.length_penalty
        return [nbests[a] if b - a == 1 else _join_pieces(nbests[a:b], alpha) for a, b in spans]

    def sentence_limit(self) -> int | None:
        """Sentences per batch at most: the `max_sentences` keyword, else decode_max_sentences (None: no limit)."""
        return self.max_sentences if self.max_sentences is not None else self.settings.decode_max_sentences

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped longest first so that each padded batch (with <s> </s>) stays within the source-token
        budget (`DecodingSettings.source_budget`) and `sentence_limit`, evened out over the parallel workers."""
        beams = 1 if self.sampling is not None else self.settings.beam_size
        workers = self.parallelism(len(lengths))[0]  # at most one batch a sentence
        return even_batches(lengths, self.settings.source_budget(beams), self.sentence_limit(), workers)

    def parallelism(self, n_batches: int) -> tuple[int, int]:
        """(batches decoded at once, torch threads each) for `n_batches` batches: on CPU, `decode_parallel_batches`
        (default one per torch thread, at most 4) share the threads; elsewhere one batch at a time."""
        total, wanted = torch.get_num_threads(), self.settings.decode_parallel_batches
        workers = 1 if self.device.type != "cpu" else max(1, min(n_batches, wanted or min(total, 4)))
        return workers, total if workers == 1 else max(1, total // workers)

    def _decode_all(self, src_ids: list[list[int]], prefixes: list[list[int]] | None = None) -> list[list[Hypothesis]]:
        """Batch, decode (several batches at once where `parallelism` says so) and restore the input order."""
        results: list[list[Hypothesis] | None] = [None] * len(src_ids)
        bar = None
        if self.progress and sys.stderr.isatty() and src_ids:
            from tqdm import tqdm

            bar = tqdm(total=len(src_ids), unit="sent", desc="translating", leave=False, dynamic_ncols=True)
        groups = self.batches([len(s) for s in src_ids])

        def decode(group: list[int]) -> list[list[Hypothesis]]:
            src = pad_batch([torch.tensor(src_ids[i], dtype=torch.long) for i in group], self.model.pad_idx)
            batch_prefixes = [prefixes[i] for i in group] if prefixes is not None else None
            if batch_prefixes is None and self.sampling is None:
                return self._decode_batch(src.to(self.device))
            return self._decode_batch(src.to(self.device), batch_prefixes, group[0])

        try:
            with self._batch_map(len(groups)) as batch_map:
                for group, nbests in zip(groups, batch_map(decode, groups)):
                    for i, nbest in zip(group, nbests):
                        results[i] = nbest
                    if bar is not None:
                        bar.update(len(group))
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]  # no None left: the groups cover every sentence

    @contextlib.contextmanager
    def _batch_map(self, n_batches: int) -> Iterator[Callable[..., Iterator[list[list[Hypothesis]]]]]:
        """`map` over batches, several at once on worker threads where `parallelism` says so: a decoding step is
        hundreds of small ops, which run faster side by side on a core each than one after another split over all
        cores (2 cores, Multi30k: greedy 1.3x, beam 1.3x)."""
        workers, threads = self.parallelism(n_batches)
        if workers == 1:
            yield map
            return
        total = torch.get_num_threads()
        pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(threads,))
        try:
            yield pool.map
        finally:
            pool.shutdown(cancel_futures=True)
            torch.set_num_threads(total)  # the workers' setting is also torch's default for new threads

    def _decode_batch(
        self, src: torch.Tensor, prefixes: list[list[int]] | None = None, key: int = 0
    ) -> list[list[Hypothesis]]:
        """Greedy for beam size 1 (its score length-normalized as beam search's are) or sampling, else beam search.

        Sampling draws from a generator seeded by (sampling.seed, `key`: the batch's first sentence), so the
        result does not depend on the order in which parallel batches run."""
        s = self.settings
        if s.beam_size == 1 or self.sampling is not None:
            generator = None
            if self.sampling is not None:
                generator = torch.Generator(src.device).manual_seed(self.sampling.seed * 1_000_003 + key)
            out = cast(  # return_scores=True: (ids, log-probability) pairs
                list[Hypothesis],
                greedy_decode(self.model, src, s.max_len_a, s.max_len_b, True, prefixes, self.sampling, generator),
            )
            return [[(ids, lp / gnmt_penalty(len(ids) + 1, s.length_penalty))] for ids, lp in out]
        return beam_search(
            self.model, src, s.beam_size, s.length_penalty, s.max_len_a, s.max_len_b, self.n_best, prefixes
        )


def _check_same_vocabs(
    first: str | Path,
    vocabs: Sequence[Vocab | SentencePieceVocab],
    path: str | Path,
    other: Sequence[Vocab | SentencePieceVocab],
) -> None:
    """An ensemble's checkpoints read and write the same tokens; otherwise one line naming the checkpoint."""
    from .errors import CheckpointError

    for side, a, b in zip(("source", "target"), vocabs, other):
        if a.to_state() != b.to_state():
            raise CheckpointError(
                f"{path}: its {side} vocabulary differs from that of {first}; an ensemble needs checkpoints "
                "with the same vocabularies (models trained with one tokenizer)"
            )


def _decoding_model(model: _Module, device: torch.device, amp: str, quantize: str = "none") -> _Module:
    """The model to decode with, in eval mode on `device`: a copy in the decoding precision where that is not the
    model's, with prepacked linear layers for bf16 on CPU, or int8 ones (`quantize`); `model` itself only moves to
    `device`."""
    from .fastpath import can_pack, pack_linears_
    from .runtime import resolve_amp_dtype

    out = model.to(device).eval()
    if quantize == "int8":
        return _int8_model(out, device)
    # Precision as in training (amp: auto is bf16 where the hardware runs it fast): an fp32 model decodes as a copy
    # in that dtype, not under autocast, which would cast every weight again at every step.
    dtype = resolve_amp_dtype(amp, device)
    if dtype is not None and next(out.parameters()).dtype == torch.float32:
        out = copy.deepcopy(out).to(dtype)
    if can_pack(out):  # bf16 on CPU: prepacked weights, in the translator's own copy
        if out is model:
            out = copy.deepcopy(model)
        pack_linears_(out)
    return out


def _int8_model(model: _Module, device: torch.device) -> _Module:
    """A copy of `model` in fp32 whose linear layers are int8 (CPU only: PyTorch's dynamic quantization)."""
    from .errors import ConfigError
    from .fastpath import quantize_linears_

    if device.type != "cpu":
        raise ConfigError(f"quantize: int8 decodes on CPU only (this translator is on {device.type}); use none")
    return cast(_Module, quantize_linears_(copy.deepcopy(model).float()))  # in place: the copy itself


def _split_long_sources(
    src_ids: Sequence[Sequence[int]], limit: int, lines: Iterable[int]
) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Sources as pieces of at most `limit` tokens: (pieces, per source the range of its pieces in that list).

    A longer source is cut into the fewest pieces of near-equal length, and a warning names its line (`lines`).
    """
    pieces: list[list[int]] = []
    spans: list[tuple[int, int]] = []
    for line, ids in zip(lines, src_ids, strict=True):
        ids, start = list(ids), len(pieces)
        n = max(1, -(-len(ids) // limit))
        bounds = [len(ids) * i // n for i in range(n + 1)]
        pieces += [ids[a:b] for a, b in zip(bounds, bounds[1:])]
        spans.append((start, len(pieces)))
        if n > 1:
            log.warning(
                "input line %d has %d tokens, more than the %d the model's positions allow (max_positions - 2): "
                "translated in %d pieces of at most %d tokens, joined",
                line,
                len(ids),
                limit,
                n,
                -(-len(ids) // n),
            )
    return pieces, spans


def _join_pieces(nbests: Sequence[list[Hypothesis]], length_penalty: float) -> list[Hypothesis]:
    """One n-best list for a source translated in pieces: the i-th hypothesis joins the pieces' i-th ones, scored as
    any hypothesis is (its summed log-probability, each piece's </s> included, over the length penalty)."""
    joined = []
    for hyps in zip(*nbests):
        ids = [token for piece, _ in hyps for token in piece]
        logprob = sum(score * gnmt_penalty(len(piece) + 1, length_penalty) for piece, score in hyps)
        joined.append((ids, logprob / gnmt_penalty(sum(len(piece) + 1 for piece, _ in hyps), length_penalty)))
    return sorted(joined, key=lambda h: -h[1])
