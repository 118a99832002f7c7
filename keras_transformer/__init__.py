"""keras-transformer: the Transformer of Vaswani et al. (2017) in Keras 3.

Public API:
    TransformerConfig, PRESETS           hyperparameters and the presets
    build_transformer(config)            the functional seq2seq model
    layers.*                             one Keras layer per paper component
    masks.*                              padding / causal mask helpers

Shape glossary: B batch, S source length, T target length, D d_model,
H heads, K head size, F d_ff, V vocabulary.
"""

from keras_transformer import layers, masks
from keras_transformer.config import PRESETS, TransformerConfig
from keras_transformer.layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    MultiHeadAttention,
    PositionwiseFeedForward,
    ResidualNorm,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    scaled_dot_product_attention,
)
from keras_transformer.model import (
    build_transformer,
    cross_attention_weights,
    encode,
    make_step_fn,
)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "ResidualNorm",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "TransformerConfig",
    "build_transformer",
    "cross_attention_weights",
    "encode",
    "layers",
    "make_step_fn",
    "masks",
    "scaled_dot_product_attention",
]
