"""SimpleTransformer: a pre-norm encoder-decoder Transformer, readable top to bottom.

    src ids -> embed * sqrt(d) + sinusoidal positions -> N x [self-attention, feed-forward] -> norm = memory
    tgt ids -> embed * sqrt(d) + sinusoidal positions -> N x [causal self-attention, cross-attention, feed-forward]
            -> norm -> linear to the target vocabulary (optionally tied to the target embedding)

Attention runs through `F.scaled_dot_product_attention`. Decoding can go one token at a time with a `KVCache`:
the cross-attention keys/values are computed once per batch (and shared by a sentence's beams), the self-attention
ones grow by one position a step.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Config
from ..fastpath import Dropout, attention_in_fp32
from .kv_cache import KVCache


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """(length, d_model) table: sin on even, cos on odd dimensions, wavelengths from 2pi to 10000*2pi."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


class Attention(nn.Module):
    """Multi-head attention. Self-attention projects q, k, v with one fused matmul; cross-attention q alone and k, v
    from the encoder memory (once per batch when a cache is used)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, cross: bool = False):
        super().__init__()
        self.n_heads, self.dropout, self.cross = n_heads, dropout, cross
        if cross:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, D/H)
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def _attend(self, q, k, v, mask, causal: bool, decoding: bool) -> torch.Tensor:
        if decoding:
            # One new query a row (or K, one per beam): two small matmuls, 1.3-2x faster than the fused CPU kernel
            # at these shapes. Never causal: the cache holds only earlier positions.
            scores = torch.matmul(q, k.transpose(-1, -2)) * q.size(-1) ** -0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, -math.inf)
            return torch.matmul(scores.softmax(-1), v)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        upcast = attention_in_fp32(x)
        # Keys and values are converted before they are cached, so a decoding step does not convert the cache again.
        heads = (lambda t: self._heads(t).float()) if upcast else self._heads
        if self.cross:
            if cache is not None and cache.cross_kv[layer] is not None:
                k, v = cache.cross_kv[layer]
            else:
                k, v = map(heads, self.kv_proj(memory).chunk(2, dim=-1))
                if cache is not None:  # contiguous once, so that every step's matmuls read them without a copy
                    k, v = k.contiguous(), v.contiguous()
                    cache.cross_kv[layer] = (k, v)
            q = self.q_proj(x)
            if cache is not None and k.size(0) != q.size(0):
                # Beam search: the K beams of a sentence (rows of x, one new token each) are K queries against its
                # single copy of the source keys/values, which are never repeated per beam.
                q = q.view(k.size(0), -1, q.size(-1))
            q = heads(q)
        else:
            q, k, v = map(heads, self.qkv_proj(x).chunk(3, dim=-1))
            if cache is not None:
                k, v = cache.append(layer, k, v)
                # One new query attends to every cached position; a longer first chunk still needs the causal mask.
                causal = causal and q.size(2) > 1
        decoding = cache is not None and x.size(1) == 1
        with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():
            out = self._attend(q, k, v, mask, causal, decoding)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape).to(x.dtype))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation_dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d_model), Attention(d_model, n_heads, attention_dropout)
        self.norm2, self.ff = nn.LayerNorm(d_model), FeedForward(d_model, d_ff, activation_dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), mask=src_mask))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(d_model), Attention(d_model, n_heads, attention_dropout)
        self.norm2, self.cross_attn = nn.LayerNorm(d_model), Attention(d_model, n_heads, attention_dropout, cross=True)
        self.norm3, self.ff = nn.LayerNorm(d_model), FeedForward(d_model, d_ff, activation_dropout)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x), causal=True, cache=cache, layer=layer))
        x = x + self.dropout(self.cross_attn(self.norm2(x), memory, mask=src_mask, cache=cache, layer=layer))
        return x + self.dropout(self.ff(self.norm3(x)))


class SimpleTransformer(nn.Module):
    """Encoder-decoder Transformer for translation. `model(src, tgt_input)` -> logits (batch, tgt_len, tgt_vocab)."""

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, config: Config | None = None, **overrides):
        super().__init__()
        c = (config or Config()).replace(**overrides) if overrides else (config or Config())
        # Everything needed to rebuild the model from a checkpoint, as plain values.
        self.args = {
            "src_vocab_size": src_vocab_size,
            "tgt_vocab_size": tgt_vocab_size,
            "d_model": c.d_model,
            "n_heads": c.n_heads,
            "num_encoder_layers": c.num_encoder_layers,
            "num_decoder_layers": c.num_decoder_layers,
            "d_ff": c.d_ff,
            "dropout": c.dropout,
            "attention_dropout": c.attention_dropout,
            "activation_dropout": c.activation_dropout,
            "tie_embeddings": c.tie_embeddings,
            "max_positions": c.max_positions,
            "pad_idx": c.pad_idx,
        }
        d = c.d_model
        self.d_model, self.pad_idx = d, c.pad_idx
        self.src_embed = nn.Embedding(src_vocab_size, d, padding_idx=c.pad_idx)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, d, padding_idx=c.pad_idx)
        self.register_buffer("positions", sinusoidal_positions(c.max_positions, d), persistent=False)
        self.embed_dropout = Dropout(c.dropout)
        layer_args = (d, c.n_heads, c.d_ff, c.dropout, c.attention_dropout, c.activation_dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(*layer_args) for _ in range(c.num_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(*layer_args) for _ in range(c.num_decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.output_proj = nn.Linear(d, tgt_vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings:
            self.output_proj.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
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
        """Rebuild from `model.args` (as stored in checkpoints)."""
        args = dict(args)
        src, tgt = args.pop("src_vocab_size"), args.pop("tgt_vocab_size")
        return cls(src, tgt, Config(**args))

    def _embed(self, embedding: nn.Embedding, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        if start + ids.size(1) > self.positions.size(0):
            raise ValueError(
                f"sequence of {start + ids.size(1)} tokens is longer than max_positions={self.positions.size(0)}"
            )
        x = embedding(ids) * math.sqrt(self.d_model) + self.positions[start : start + ids.size(1)]
        return self.embed_dropout(x)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, D) and the attention mask (B, 1, 1, S) that hides source padding."""
        src_mask = (src != self.pad_idx)[:, None, None, :]
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
        """Decoder states -> logits over the target vocabulary."""
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
