"""Models: the encoder-decoder Transformer, its arguments, and the KV cache its decoding steps use."""

from .kv_cache import KVCache
from .transformer import ModelArgs, SimpleTransformer

__all__ = ["SimpleTransformer", "ModelArgs", "KVCache"]
