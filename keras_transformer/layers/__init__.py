"""The Transformer's components, one Keras layer per paper section.

The bases the encoder and decoder share, `Block` (one layer) and `Stack`
(N layers), live in `keras_transformer.layers.stack`.
"""

from keras_transformer.layers.attention import (
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from keras_transformer.layers.decoder import Decoder, DecoderLayer
from keras_transformer.layers.embedding import TokenEmbedding
from keras_transformer.layers.encoder import Encoder, EncoderLayer
from keras_transformer.layers.feed_forward import PositionwiseFeedForward
from keras_transformer.layers.positional import SinusoidalPositionalEncoding
from keras_transformer.layers.residual import ResidualNorm

__all__ = [
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "ResidualNorm",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "scaled_dot_product_attention",
]
