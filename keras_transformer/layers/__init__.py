"""The Transformer's components, one Keras layer per paper section.

`PointerGenerator` is See et al.'s (2017) copy attention, the model's
output layer with `TransformerConfig.copy_attention`;
`PreviousTokenProjection` gives each source position its predecessor's
embedding (`TransformerConfig.previous_source_token`), so that copying
continues a span. `OutputBias` is the fixed logits bias of imported
Marian models (`TransformerConfig.output_bias`).

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
from keras_transformer.layers.output_bias import OutputBias
from keras_transformer.layers.pointer_generator import (
    PointerGenerator,
    copy_distribution,
)
from keras_transformer.layers.positional import SinusoidalPositionalEncoding
from keras_transformer.layers.previous_token import PreviousTokenProjection
from keras_transformer.layers.residual import ResidualNorm

__all__ = [
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "MultiHeadAttention",
    "OutputBias",
    "PointerGenerator",
    "PositionwiseFeedForward",
    "PreviousTokenProjection",
    "ResidualNorm",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "copy_distribution",
    "scaled_dot_product_attention",
]
