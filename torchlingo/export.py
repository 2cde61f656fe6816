"""Export a checkpoint to CTranslate2 (the optional extra `pip install torchlingo[ctranslate2]`).

    torchlingo export --checkpoint runs/base/checkpoints/best.pt --format ctranslate2 --output base_ct2

SimpleTransformer is a pre-norm Transformer with ReLU, so it maps onto `ctranslate2.specs.TransformerSpec` weight
for weight: the fused q/k/v and k/v projections keep their layout, LayerNorm epsilon 1e-5. Two things differ from
CTranslate2's defaults and are set explicitly: the position table (ours interleaves sin and cos, CTranslate2's
concatenates them, so ours is stored as the model's position encodings), and the source side, which carries <s> and
</s> as in training (`add_source_bos` / `add_source_eos`). The vocabularies are written as CTranslate2 expects
(token strings in id order) and the tokenizer files are copied beside them, so the folder is self-contained:

    translator = ctranslate2.Translator("base_ct2")
    translator.translate_batch([["ein", "hund"]], beam_size=1)

CTranslate2 does not forbid <pad> and <s> in its outputs as torchlingo's decoders do; a trained model does not
predict them, so the translations agree (tests/test_export.py checks it on a small trained model in fp32).
`CTranslate2Translator` runs an exported folder with torchlingo's tokenizers and decoding settings, text in and out;
`load_ctranslate2(folder)` builds one from the folder alone, with what the export wrote in `torchlingo.json` (the
checkpoint's decoding settings as defaults, its position count and tokenizer files). That is what
`torchlingo translate / evaluate --engine ctranslate2 --model DIR` run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from .errors import TorchlingoError
from .files import write_json

if TYPE_CHECKING:
    from types import ModuleType

    import numpy as np
    from ctranslate2.specs.attention_spec import MultiHeadAttentionSpec
    from ctranslate2.specs.common_spec import LayerNormSpec, LinearSpec
    from ctranslate2.specs.transformer_spec import FeedForwardSpec, TransformerSpec

    from .data_processing.vocab import SentencePieceVocab, Vocab
    from .models import SimpleTransformer
    from .models.transformer import CrossAttention, DecoderLayer, EncoderLayer, FeedForward, SelfAttention
    from .translator import DecodingSettings, Translator

METADATA, FORMAT_VERSION = "torchlingo.json", 1  # what load_ctranslate2 reads; a newer version is refused
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")


def _ctranslate2() -> ModuleType:
    try:
        import ctranslate2
    except ImportError:
        raise TorchlingoError(
            "the ctranslate2 package is not installed; export --format ctranslate2 and --engine ctranslate2 need it "
            "(pip install 'torchlingo[ctranslate2]' or pip install ctranslate2)"
        ) from None
    return ctranslate2


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().contiguous().numpy()


def _linear(spec: LinearSpec, layer: torch.nn.Linear) -> None:
    spec.weight = _np(layer.weight)
    if layer.bias is not None:
        spec.bias = _np(layer.bias)


def _norm(spec: LayerNormSpec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _np(norm.weight), _np(norm.bias)


def _attention(spec: MultiHeadAttentionSpec, attn: SelfAttention | CrossAttention, cross: bool) -> None:
    # `cross`: attn is a CrossAttention, else a SelfAttention (the ignores: mypy cannot tie the two together)
    if cross:  # linear[0] the queries, linear[1] keys and values fused (k then v, as kv_proj)
        _linear(spec.linear[0], attn.q_proj)  # type: ignore[arg-type]
        _linear(spec.linear[1], attn.kv_proj)  # type: ignore[arg-type]
    else:  # linear[0] q, k, v fused, as qkv_proj
        _linear(spec.linear[0], attn.qkv_proj)  # type: ignore[arg-type]
    _linear(spec.linear[-1], attn.out_proj)


def _ffn(spec: FeedForwardSpec, norm: torch.nn.LayerNorm, ff: FeedForward) -> None:
    _norm(spec.layer_norm, norm)
    _linear(spec.linear_0, ff.fc1)
    _linear(spec.linear_1, ff.fc2)


def build_spec(model: SimpleTransformer, src_tokens: list[str], tgt_tokens: list[str]) -> TransformerSpec:
    """The `TransformerSpec` of a SimpleTransformer, weights set, vocabularies registered."""
    _ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    a = model.args
    spec = transformer_spec.TransformerSpec.from_config(
        (a["num_encoder_layers"], a["num_decoder_layers"]),
        a["n_heads"],
        pre_norm=True,
        activation=common_spec.Activation.RELU,
    )
    positions = _np(model.positions)
    for side, embed in ((spec.encoder, model.src_embed), (spec.decoder, model.tgt_embed)):
        embeddings = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings
        embeddings.weight = _np(embed.weight)
        side.scale_embeddings = True
        side.position_encodings.encodings = positions
    _norm(spec.encoder.layer_norm, model.encoder_norm)
    layer: torch.nn.Module  # an EncoderLayer, then a DecoderLayer (the ModuleLists hold them)
    for layer_spec, layer in zip(spec.encoder.layer, cast("Iterable[EncoderLayer]", model.encoder_layers)):
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _attention(layer_spec.self_attention, layer.attn, cross=False)
        _ffn(layer_spec.ffn, layer.norm2, layer.ff)
    _norm(spec.decoder.layer_norm, model.decoder_norm)
    for layer_spec, layer in zip(spec.decoder.layer, cast("Iterable[DecoderLayer]", model.decoder_layers)):
        _norm(layer_spec.self_attention.layer_norm, layer.norm1)
        _attention(layer_spec.self_attention, layer.self_attn, cross=False)
        _norm(layer_spec.attention.layer_norm, layer.norm2)
        _attention(layer_spec.attention, layer.cross_attn, cross=True)
        _ffn(layer_spec.ffn, layer.norm3, layer.ff)
    _linear(spec.decoder.projection, model.output_proj)
    spec.config.layer_norm_epsilon = model.encoder_norm.eps
    spec.config.add_source_bos = True
    spec.config.add_source_eos = True
    spec.register_source_vocabulary(src_tokens)
    spec.register_target_vocabulary(tgt_tokens)
    return spec


def vocab_tokens(vocab: Vocab | SentencePieceVocab) -> list[str]:
    """The token strings of a vocabulary in id order (SentencePiece: its pieces)."""
    if hasattr(vocab, "itos"):
        return list(vocab.itos)
    return [vocab.sp.id_to_piece(i) for i in range(len(vocab))]


def export_ctranslate2(checkpoint: str | Path, output: str | Path, quantization: str | None = None) -> Path:
    """Write the CTranslate2 model of `checkpoint` to the folder `output` (created; it must not exist or be empty)."""
    from .checkpoint import load_model

    _ctranslate2()
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise TorchlingoError(f"--quantization {quantization!r}: one of {', '.join(QUANTIZATIONS)}")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TorchlingoError(f"{output}: exists and is not an empty folder; choose a new --output")
    model, src_vocab, tgt_vocab, state = load_model(checkpoint)
    if src_vocab is None or tgt_vocab is None:
        raise TorchlingoError(f"{checkpoint}: checkpoint holds no vocabularies; it cannot be exported")
    spec = build_spec(model.float(), vocab_tokens(src_vocab), vocab_tokens(tgt_vocab))
    spec.validate()
    spec.optimize(quantization=quantization)
    output.mkdir(parents=True, exist_ok=True)
    spec.save(str(output))
    suffix = ".model" if src_vocab.kind == "sentencepiece" else ".txt"
    src_vocab.save(output / f"source_tokenizer{suffix}")
    tgt_vocab.save(output / f"target_tokenizer{suffix}")
    write_json(output / METADATA, _metadata(model, src_vocab.kind, suffix, state, quantization))
    return output


def _metadata(model: SimpleTransformer, kind: str, suffix: str, state: dict, quantization: str | None) -> dict:
    """What `load_ctranslate2` needs beside the model: positions, tokenizer files, the checkpoint's decoding settings.

    The tokenizers are the only preprocessing torchlingo applies at translation time (no lowercasing or other
    normalization beyond the SentencePiece model's own), so they are all the folder needs to read text."""
    from .translator import DecodingSettings

    settings = DecodingSettings.from_config(state.get("config") or {})
    return {
        "format_version": FORMAT_VERSION,
        "max_positions": int(model.positions.size(0)),
        "tokenizer": {
            "kind": kind,
            "source": f"source_tokenizer{suffix}",
            "target": f"target_tokenizer{suffix}",
        },
        "quantization": quantization,
        "decoding": dataclasses.asdict(settings),
    }


def load_ctranslate2(folder: str | Path, max_sentences: int = 64, **options: Any) -> CTranslate2Translator:
    """A `CTranslate2Translator` for a folder `export_ctranslate2` wrote: its tokenizers and, as defaults, the
    decoding settings of the exported checkpoint. `options`: DecodingSettings fields (beam_size, max_len_a, ...)
    override those; the rest (compute_type, inter_threads, intra_threads) go to `ctranslate2.Translator`."""
    from .data_processing.vocab import load_vocab
    from .translator import DecodingSettings

    folder = Path(folder)
    meta = _read_metadata(folder)
    fields = {f.name for f in dataclasses.fields(DecodingSettings)}
    decoding = {k: v for k, v in meta.get("decoding", {}).items() if k in fields}
    decoding.update({k: options.pop(k) for k in list(options) if k in fields})
    try:
        tok = meta["tokenizer"]
        src_vocab, tgt_vocab = load_vocab(folder / tok["source"]), load_vocab(folder / tok["target"])
        positions = int(meta["max_positions"])
    except (KeyError, TypeError, ValueError) as e:
        raise TorchlingoError(f"{folder / METADATA}: damaged ({e!r}); export the model again") from None
    settings = DecodingSettings(**decoding)
    translator = CTranslate2Translator(folder, src_vocab, tgt_vocab, settings, positions, max_sentences, **options)
    translator.max_tokens = settings.source_budget()  # batches as Translator makes them (and <= max_sentences)
    return translator


def _read_metadata(folder: Path) -> dict:
    """torchlingo.json of an export folder; one-line errors when the folder is not one (or a newer one)."""
    _ctranslate2()
    if not folder.is_dir():
        raise TorchlingoError(f"--model {folder}: not a folder; give the folder `torchlingo export` wrote")
    for name in ("model.bin", METADATA):
        if not (folder / name).is_file():
            raise TorchlingoError(
                f"--model {folder}: not a torchlingo CTranslate2 export (no {name}); "
                "write one with torchlingo export --format ctranslate2"
            )
    try:
        meta = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TorchlingoError(f"{folder / METADATA}: cannot read ({e}); export the model again") from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise TorchlingoError(f"{folder / METADATA}: no format_version; export the model again") from None
    if version > FORMAT_VERSION:
        raise TorchlingoError(
            f"{folder / METADATA}: format version {version} is newer than this torchlingo reads ({FORMAT_VERSION}); "
            "upgrade torchlingo"
        )
    return meta


# As torchlingo decodes: <pad> and <s> are never generated, and </s> may come first (an empty translation).
AS_TORCHLINGO = {"suppress_sequences": [["<pad>"], ["<s>"]], "min_decoding_length": 0}


class CTranslate2Translator:
    """An exported folder run by CTranslate2 on CPU, text in and out with torchlingo's tokenizers and decoding
    settings (`settings`: a `DecodingSettings`): sources sorted by length in batches of `max_sentences`,
    submitted at once (so `inter_threads` workers decode batches side by side), each hypothesis cut at its own
    max_len_a * (source length + 2) + max_len_b tokens (CTranslate2 takes one limit per batch).

    `n_best`, `max_tokens` and `with_scores` (attributes) are what `translate_nbest` returns, the batches' token
    budget and torchlingo's scores; `load_ctranslate2` sets them from an export folder.

    `options` go to `ctranslate2.Translator` (compute_type, inter_threads, intra_threads). Beam search and its
    length penalty are CTranslate2's (an exponent, where torchlingo's is GNMT's, with the same alpha). Sources
    longer than the position table are truncated (`Translator` translates them in pieces), and an empty source
    gives an empty translation (CTranslate2 skips it; `Translator` decodes <s> </s>).
    """

    def __init__(
        self,
        folder: str | Path,
        src_vocab: Vocab | SentencePieceVocab,
        tgt_vocab: Vocab | SentencePieceVocab,
        settings: DecodingSettings,
        max_positions: int,
        max_sentences: int = 64,
        **options: Any,
    ):
        self.model = _ctranslate2().Translator(str(folder), device="cpu", **options)
        self.src_vocab, self.tgt_vocab, self.settings = src_vocab, tgt_vocab, settings
        self.max_positions, self.max_sentences = max_positions, max_sentences
        self.max_tokens: int | None = None  # also cap a batch's padded source tokens (<s> </s> included) at this
        self.with_scores = False  # translate_nbest's scores: 0.0 unless set (scoring is one more forward pass)
        self.n_best = 1  # hypotheses a sentence (CTranslate2's num_hypotheses; needs beam_size >= n_best)
        self.src_tokens = vocab_tokens(src_vocab)
        self.tgt_ids = {token: i for i, token in enumerate(vocab_tokens(tgt_vocab))}

    @classmethod
    def like(cls, translator: Translator, folder: str | Path, **options: Any) -> CTranslate2Translator:
        """The CTranslate2 counterpart of a torchlingo `Translator`: its vocabularies, settings and batch size."""
        positions = translator.model.positions.size(0)
        return cls(
            folder,
            translator.src_vocab,
            translator.tgt_vocab,
            translator.settings,
            positions,
            translator.max_sentences or 64,
            **options,
        )

    def translate(self, sentences: Sequence[str]) -> list[str]:
        """The best translation of each sentence, in input order."""
        ids = self.decode_ids(self.src_vocab.encode_many(list(sentences)) if sentences else [])
        return [self.tgt_vocab.decode(i) for i in ids]

    def translate_nbest(
        self, sentences: Sequence[str], prefixes: Sequence[str] | None = None, *, lines: Sequence[int] | None = None
    ) -> list[list]:
        """`Translator.translate_nbest`'s shape: per sentence its `n_best` (text, score) pairs, for the CLI. Scores
        are 0.0 (in CTranslate2's order) unless `with_scores` is set: then torchlingo's, best first (see
        `decode_nbest`). CTranslate2 runs no target prefixes here; `lines` is accepted for the same shape (no source
        is split here, so there is nothing to warn about)."""
        if prefixes is not None:
            raise ValueError("CTranslate2Translator: target prefixes are not supported")
        src_ids = self.src_vocab.encode_many(list(sentences)) if sentences else []
        nbests = self.decode_nbest(src_ids)
        if not self.with_scores:
            return [[(self.tgt_vocab.decode(ids), 0.0) for ids, _ in nbest] for nbest in nbests]
        cut = [(i, ids) for i, nbest in enumerate(nbests) for ids, score in nbest if score is None]
        rescored = iter(self.score_ids([src_ids[i] for i, _ in cut], [ids for _, ids in cut]))
        out = []
        for nbest in nbests:
            hyps = [(self.tgt_vocab.decode(ids), next(rescored) if score is None else score) for ids, score in nbest]
            out.append(sorted(hyps, key=lambda h: -h[1]))
        return out

    def decode_ids(self, src_ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """Source token ids in, the best hypothesis's target ids (without </s>) out, in input order."""
        return [nbest[0][0] for nbest in self.decode_nbest(src_ids)]

    def decode_nbest(self, src_ids: Sequence[Sequence[int]]) -> list[list[tuple[list[int], float | None]]]:
        """Per sentence its `n_best` hypotheses (CTranslate2's order), each with torchlingo's score if it ended with
        </s>: CTranslate2's log-probability (<pad> and <s> excluded, as ours) over the GNMT length penalty instead of
        its own. None for one that reached its length limit, where torchlingo scores the </s> it forces there."""
        from .search import gnmt_penalty

        s = self.settings
        limits = [min(int(s.max_len_a * (len(i) + 2) + s.max_len_b), self.max_positions - 1) for i in src_ids]
        groups = self._groups([len(i) for i in src_ids])
        pending = [self._submit([src_ids[i] for i in g], max(limits[i] for i in g)) for g in groups]
        out: list[list[tuple[list[int], float | None]]] = [[] for _ in src_ids]
        for group, results in zip(groups, pending):
            for i, result in zip(group, results):
                r = result.result()
                for tokens, score in zip(r.hypotheses, r.scores):
                    n = len(tokens) + 1  # CTranslate2 divides by n ** length_penalty
                    ours = score * n**s.length_penalty / gnmt_penalty(n, s.length_penalty) if n <= limits[i] else None
                    out[i].append(([self.tgt_ids[t] for t in tokens[: limits[i]]], ours))
        return out

    def score_ids(self, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]) -> list[float]:
        """The score of each target given its source by CTranslate2's `score_batch`: the summed log-probability of
        its tokens and </s> (over the whole vocabulary, <pad> and <s> included) over gnmt_penalty(len + 1)."""
        from .search import gnmt_penalty

        if not src_ids:
            return []
        itos = vocab_tokens(self.tgt_vocab)
        results = self.model.score_batch(
            [[self.src_tokens[t] for t in ids[: self.max_positions - 2]] for ids in src_ids],
            [[itos[t] for t in ids] for ids in tgt_ids],
            max_batch_size=self.max_sentences,
        )
        alpha = self.settings.length_penalty
        return [sum(r.log_probs) / gnmt_penalty(len(ids) + 1, alpha) for r, ids in zip(results, tgt_ids)]

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Indices longest first, in batches of at most `max_sentences` and (if set) `max_tokens` padded tokens."""
        from .translator import length_batches

        return length_batches(lengths, self.max_tokens, self.max_sentences)

    def _submit(self, batch: list[Sequence[int]], limit: int) -> list:
        """Start translating one batch on a free worker: its pending (asynchronous) results."""
        return self.model.translate_batch(
            [[self.src_tokens[t] for t in ids] for ids in batch],
            asynchronous=True,
            beam_size=self.settings.beam_size,
            length_penalty=self.settings.length_penalty,
            max_input_length=self.max_positions - 2,
            max_decoding_length=limit,
            return_scores=True,
            num_hypotheses=self.n_best,
            **AS_TORCHLINGO,
        )
