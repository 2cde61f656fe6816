"""Models: the encoder-decoder Transformer and the KV cache its decoding steps use."""

from .kv_cache import KVCache
from .transformer import SimpleTransformer

__all__ = ["SimpleTransformer", "KVCache"]
