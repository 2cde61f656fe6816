"""SimpleTransformer: a pre-norm encoder-decoder Transformer (Vaswani et al. 2017), read top to bottom.

         source ids (B, S)                                       target ids (B, T): <s> y1 y2 ...
                 |                                                       |
    embed * sqrt(D) + positions                             embed * sqrt(D) + positions
                 |                                                       |
  +--------------v----------------+                  +-------------------v-------------------+
  | x += SelfAttention(norm1(x))  |                  | x += SelfAttention(norm1(x)), causal  |
  | x += FeedForward(norm2(x))    |           +----->| x += CrossAttention(norm2(x), memory) |
  +--------------|----------------+           |      | x += FeedForward(norm3(x))            |
                 |  x num_encoder_layers      |      +-------------------|-------------------+
                 |                            |                          |  x num_decoder_layers
           encoder_norm                       |                    decoder_norm
                 |                            |                          |
         memory (B, S, D) --------------------+              decoder states (B, T, D)
                                                                         |
                                                          output_proj -> logits (B, T, V)

B batch, S source and T target length, D d_model, H heads, V target vocabulary. Dropout follows the embeddings and
every block (each `x += ...` adds the block's output after dropout); `output_proj` may share its weight with the target
embedding (`tie_embeddings`).

The file goes bottom-up: the position table, attention (what self- and cross-attention share, then each), the
feed-forward block, an encoder layer, a decoder layer, the model. Decoding may go one token at a time with a
`KVCache` (kv_cache.py): the cross-attention keys/values are computed once per batch and shared by a sentence's
beams, the self-attention ones grow by one position a step. CPU fast paths from fastpath.py appear here: its
`Dropout`, attention in fp32 under bf16 on CPU (`attention_in_fp32`), and the choice of where attention runs as the
formula and where as PyTorch's fused kernel (`use_fused_attention`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Config
from ..fastpath import Dropout, attention_in_fp32, use_fused_attention
from .kv_cache import KVCache

# -- positions --------------------------------------------------------------------------------------------------------


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) table: sin on even, cos on odd dimensions, wavelengths from 2pi to 10000*2pi."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (length,) -> (length, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)  # (length, 1) * (D/2,) -> (length, D/2)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


# -- attention --------------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """What self- and cross-attention share: splitting into heads, softmax(q k^T / sqrt(d)) v, merging the heads.

    The subclasses hold the projections: queries, keys and values in, `out_proj` out."""

    def __init__(self, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout

    def split_heads(self, x: torch.Tensor, fp32: bool) -> torch.Tensor:
        """One row of D features -> H heads of D/H (in fp32 when `fp32`: see `attention_in_fp32`)."""
        x = x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # (B, T, D) -> (B, T, H, D/H) -> (B, H, T, D/H)
        return x.float() if fp32 else x

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, causal: bool, fp32: bool
    ) -> torch.Tensor:
        """Each query's average of the values, weighted by softmax(q . k / sqrt(D/H)): (B, H, T, D/H).

        `mask` (True = attend) hides padded keys, `causal` later positions (query i sees keys up to i + S - T: its
        own position and the past, also when the keys hold cached positions before the queries')."""
        t, s = q.size(-2), k.size(-2)
        later = torch.ones(t, s, dtype=torch.bool, device=q.device).triu_(s - t + 1) if causal else None  # to hide
        with torch.autocast("cpu", enabled=False) if fp32 else contextlib.nullcontext():
            if use_fused_attention(q):  # GPUs: PyTorch's fused kernels compute the same in one call
                if later is not None and t != s:  # its is_causal counts from the first key; ours from the cached past
                    mask, causal = ~later if mask is None else mask & ~later, False
                return F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
                )
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.size(-1) ** -0.5  # (B,H,T,D/H) @ (B,H,D/H,S) -> (B,H,T,S)
            if mask is not None:
                scores = scores.masked_fill(~mask, -math.inf)
            if later is not None:
                scores = scores.masked_fill(later, -math.inf)
            weights = scores.softmax(-1)
            if self.training and self.dropout > 0:
                weights = F.dropout(weights, self.dropout)
            return torch.matmul(weights, v)  # (B, H, T, S) @ (B, H, S, D/H) -> (B, H, T, D/H)

    def merge_heads(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The heads side by side again, in the shape and dtype of the attention's input `x`."""
        return out.transpose(1, 2).reshape(x.shape).to(x.dtype)  # (B, H, T, D/H) -> (B, T, H, D/H) -> (B, T, D)


class SelfAttention(Attention):
    """Every position attends to the positions of its own sequence (with `causal`, only to itself and earlier ones).

    q, k and v come from one fused projection. With a cache, `x` holds only the new positions: their keys/values are
    appended to the cached ones and the queries attend to all of them."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__(n_heads, dropout)
        self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); `mask` (B, 1, 1, T) hides padded positions."""
        fp32 = attention_in_fp32(x)
        qkv = self.qkv_proj(x).chunk(3, dim=-1)  # (B, T, 3D) -> 3 x (B, T, D)
        q, k, v = (self.split_heads(t, fp32) for t in qkv)  # 3 x (B, H, T, D/H)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, H, past + T, D/H)
            causal = causal and q.size(2) > 1  # one new query may see the whole cache; a longer first chunk may not
        out = self.attend(q, k, v, mask, causal=causal, fp32=fp32)  # (B, H, T, D/H)
        return self.out_proj(self.merge_heads(out, x))


class CrossAttention(Attention):
    """Every target position attends to the encoder's memory of the source.

    Queries come from the decoder, keys and values from the memory; with a cache those are computed at the first
    step only. Beam search folds the beams: its rows are sentences x beams, but the source keys/values have one row
    per sentence, so a sentence's K beams become K queries against that single copy (never repeated per beam)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__(n_heads, dropout)
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def source_kv(
        self, memory: torch.Tensor | None, fp32: bool, cache: KVCache | None, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the memory (B, S, D), each (B, H, S, D/H); kept in (and later read from) the cache.

        They are cached already converted (fp32) and contiguous, so no decoding step converts or copies them again."""
        cached = cache.cross_kv[layer] if cache is not None else None
        if cached is not None:
            return cached
        kv = self.kv_proj(memory).chunk(2, dim=-1)  # (B, S, 2D) -> 2 x (B, S, D)
        k, v = (self.split_heads(t, fp32) for t in kv)  # 2 x (B, H, S, D/H)
        if cache is not None:
            k, v = k.contiguous(), v.contiguous()
            cache.cross_kv[layer] = (k, v)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None,
        mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, T, D), memory (B, S, D) -> (B, T, D); `mask` (B, 1, 1, S) hides source padding. Once the cache
        holds the source keys/values, `memory` may be None."""
        fp32 = attention_in_fp32(x)
        k, v = self.source_kv(memory, fp32, cache, layer)
        q = self.q_proj(x)
        if cache is not None and k.size(0) != q.size(0):  # beam search, N sentences of K beams: fold the beams
            q = q.view(k.size(0), -1, q.size(-1))  # (N*K, 1, D) -> (N, K, D)
        q = self.split_heads(q, fp32)  # (B, T, D) -> (B, H, T, D/H); folded: (N, K, D) -> (N, H, K, D/H)
        out = self.attend(q, k, v, mask, causal=False, fp32=fp32)
        return self.out_proj(self.merge_heads(out, x))  # folded: (N, H, K, D/H) -> (N, K, H, D/H) -> (N*K, 1, D)


# -- feed-forward -----------------------------------------------------------------------------------------------------


class FeedForward(nn.Module):
    """Position-wise: D -> d_ff -> ReLU -> D, the same two linear layers at every position."""

    def __init__(self, d_model: int, d_ff: int, activation_dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


# -- encoder and decoder layers ---------------------------------------------------------------------------------------


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward block; each on the normed input, added back."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        d = a.d_model
        self.norm1, self.attn = nn.LayerNorm(d), SelfAttention(d, a.n_heads, a.attention_dropout)
        self.norm2, self.ff = nn.LayerNorm(d), FeedForward(d, a.d_ff, a.activation_dropout)
        self.dropout = Dropout(a.dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask=src_mask))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention over the target prefix, cross-attention to the source, the feed-forward block."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        d = a.d_model
        self.norm1, self.self_attn = nn.LayerNorm(d), SelfAttention(d, a.n_heads, a.attention_dropout)
        self.norm2, self.cross_attn = nn.LayerNorm(d), CrossAttention(d, a.n_heads, a.attention_dropout)
        self.norm3, self.ff = nn.LayerNorm(d), FeedForward(d, a.d_ff, a.activation_dropout)
        self.dropout = Dropout(a.dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x), causal=True, cache=cache, layer=layer))
        x = x + self.dropout(self.cross_attn(self.norm2(x), memory, src_mask, cache, layer))
        return x + self.dropout(self.ff(self.norm3(x)))


# -- the model's arguments --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelArgs:
    """Everything that defines a SimpleTransformer's shape: the vocabulary sizes and the config's model group.

    Checkpoints store it as a plain dict (`model.args`, its `dataclasses.asdict`) so that they load with
    weights_only; `SimpleTransformer.from_args` rebuilds the model from that dict."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int
    n_heads: int
    num_encoder_layers: int
    num_decoder_layers: int
    d_ff: int
    dropout: float
    attention_dropout: float
    activation_dropout: float
    tie_embeddings: bool
    share_all_embeddings: bool
    max_positions: int
    pad_idx: int

    @classmethod
    def from_config(cls, src_vocab_size: int, tgt_vocab_size: int, config: Config) -> ModelArgs:
        """The vocabulary sizes, and every other field read from the config field of the same name."""
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("src_vocab_size", "tgt_vocab_size")]
        return cls(src_vocab_size, tgt_vocab_size, **{name: getattr(config, name) for name in names})


# -- the model --------------------------------------------------------------------------------------------------------


class SimpleTransformer(nn.Module):
    """Encoder-decoder Transformer for translation. `model(src, tgt_input)` -> logits (batch, tgt_len, tgt_vocab)."""

    positions: torch.Tensor  # (max_positions, D), a buffer: registered in __init__

    def __init__(
        self, src_vocab_size: int, tgt_vocab_size: int, config: Config | None = None, **overrides: Any
    ) -> None:
        super().__init__()
        config = config or Config()
        a = ModelArgs.from_config(src_vocab_size, tgt_vocab_size, config.replace(**overrides) if overrides else config)
        self.args = dataclasses.asdict(a)  # plain values, as checkpoints store them (see from_args)
        self.d_model, self.pad_idx = a.d_model, a.pad_idx
        self.src_embed = nn.Embedding(a.src_vocab_size, a.d_model, padding_idx=a.pad_idx)
        self.tgt_embed = nn.Embedding(a.tgt_vocab_size, a.d_model, padding_idx=a.pad_idx)
        self.register_buffer("positions", sinusoidal_positions(a.max_positions, a.d_model), persistent=False)
        self.embed_dropout = Dropout(a.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(a) for _ in range(a.num_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(a) for _ in range(a.num_decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(a.d_model), nn.LayerNorm(a.d_model)
        self.output_proj = nn.Linear(a.d_model, a.tgt_vocab_size, bias=False)
        self._init_weights()
        if a.tie_embeddings:
            self.output_proj.weight = self.tgt_embed.weight
        if a.share_all_embeddings:  # one joint vocabulary: a German and an English piece share their row
            if a.src_vocab_size != a.tgt_vocab_size:
                raise ValueError(
                    f"share_all_embeddings needs one vocabulary: source has {a.src_vocab_size} entries, "
                    f"target {a.tgt_vocab_size}"
                )
            self.src_embed.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        """Xavier-uniform matrices, zero biases; embeddings N(0, 1/D) (times sqrt(D) in `_embed`), padding row 0."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        for emb in (self.src_embed, self.tgt_embed):
            nn.init.normal_(emb.weight, mean=0.0, std=self.d_model**-0.5)
            with torch.no_grad():
                emb.weight[self.pad_idx].zero_()

    @classmethod
    def from_args(cls, args: dict) -> SimpleTransformer:
        """Rebuild from `model.args` (as stored in checkpoints); the values are validated as a Config's."""
        args = dict(args)
        src, tgt = args.pop("src_vocab_size"), args.pop("tgt_vocab_size")
        return cls(src, tgt, Config(**args))

    def _embed(self, embedding: nn.Embedding, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """ids (B, T) at positions start.. -> (B, T, D): scaled embeddings plus the position table, dropped out."""
        if start + ids.size(1) > self.positions.size(0):
            raise ValueError(
                f"sequence of {start + ids.size(1)} tokens is longer than max_positions={self.positions.size(0)}"
            )
        x = embedding(ids) * math.sqrt(self.d_model) + self.positions[start : start + ids.size(1)]
        return self.embed_dropout(x)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, D) and the attention mask (B, 1, 1, S) that hides source padding."""
        src_mask = (src != self.pad_idx)[:, None, None, :]  # (B, S) -> (B, 1, 1, S): every head, every query
        x = self._embed(self.src_embed, src)
        for layer in self.encoder_layers:
            x = layer(x, src_mask)
        return self.encoder_norm(x), src_mask

    def decode_hidden(
        self, tgt: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Decoder states (B, T, D) for target ids (B, T); with a cache, `tgt` holds only the new positions."""
        start = cache.length if cache is not None else 0
        x = self._embed(self.tgt_embed, tgt, start)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory, src_mask, cache, i)
        if cache is not None:
            cache.length += tgt.size(1)
        return self.decoder_norm(x)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder states (..., D) -> logits over the target vocabulary (..., V)."""
        return self.output_proj(hidden)

    def decode(
        self, tgt: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Target ids -> logits (B, T, V), reusing an encoded source."""
        return self.project(self.decode_hidden(tgt, memory, src_mask, cache))

    def new_cache(self, capacity: int = 64) -> KVCache:
        """An empty cache; `capacity` is the number of target positions to make room for at once."""
        return KVCache(len(self.decoder_layers), capacity)

    def forward(self, src: torch.Tensor, tgt_input: torch.Tensor, hidden_only: bool = False) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every target position given the gold prefix (with `hidden_only`,
        the decoder states (B, T, D) before the projection: the training loss projects only non-pad positions)."""
        hidden = self.decode_hidden(tgt_input, *self.encode(src))
        return hidden if hidden_only else self.project(hidden)
