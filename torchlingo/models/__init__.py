"""Models: the encoder-decoder Transformer."""

from .transformer import KVCache, SimpleTransformer

__all__ = ["SimpleTransformer", "KVCache"]
