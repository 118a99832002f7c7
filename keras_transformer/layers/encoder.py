"""Encoder layer and encoder stack (paper section 3.1, Figure 1 left)."""

import keras
from keras import ops

from keras_transformer.checks import (
    check_choice,
    check_divisible,
    check_positive_int,
    check_rate,
)
from keras_transformer.layers.attention import MultiHeadAttention
from keras_transformer.layers.feed_forward import (
    ACTIVATIONS,
    PositionwiseFeedForward,
)
from keras_transformer.layers.residual import ResidualNorm


def check_block_arguments(num_heads, d_ff, dropout_rate,
                          attention_dropout_rate, activation):
    check_positive_int("num_heads", num_heads)
    check_positive_int("d_ff", d_ff)
    check_rate("dropout_rate", dropout_rate)
    check_rate("attention_dropout_rate", attention_dropout_rate)
    check_choice("activation", activation, ACTIVATIONS)


def key_padding_mask(padding_mask):
    """(B, S) padding mask -> (B, 1, S) attention mask (None stays None)."""
    if padding_mask is None:
        return None
    return ops.expand_dims(ops.cast(padding_mask, "bool"), 1)


class _Block(keras.layers.Layer):
    """Shared constructor, sub-layer factories and config of one layer."""

    def __init__(self, num_heads=8, d_ff=2048, dropout_rate=0.1,
                 attention_dropout_rate=0.0, activation="relu",
                 norm_first=False, layer_norm_epsilon=1e-6, **kwargs):
        check_block_arguments(num_heads, d_ff, dropout_rate,
                              attention_dropout_rate, activation)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.activation = activation
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon

    def _attention(self, d_model, name):
        check_divisible(d_model, self.num_heads)
        return MultiHeadAttention(
            num_heads=self.num_heads, key_dim=d_model // self.num_heads,
            dropout_rate=self.attention_dropout_rate,
            dtype=self.dtype_policy, name=name)

    def _residual(self, name):
        return ResidualNorm(
            dropout_rate=self.dropout_rate, norm_first=self.norm_first,
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
            name=name)

    def _feed_forward(self):
        return PositionwiseFeedForward(
            d_ff=self.d_ff, activation=self.activation,
            dtype=self.dtype_policy, name="feed_forward")

    def compute_output_shape(self, inputs_shape, *args, **kwargs):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "activation": self.activation,
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_transformer")
class EncoderLayer(_Block):
    """Self-attention then feed-forward, each in a ResidualNorm (§3.1).

    Masks are explicit: `padding_mask` (B, S), True at real tokens, keeps
    every position from attending to padding. Keras implicit masks are not
    used.

    Args:
        num_heads: int, h. Defaults to 8.
        d_ff: int, inner width of the feed-forward network. Defaults to 2048.
        dropout_rate: float, P_drop on each sub-layer output. Defaults to 0.1.
        attention_dropout_rate: float, dropout on attention weights (not in
            the paper). Defaults to 0.0.
        activation: str, "relu" (the paper) or "gelu".
        norm_first: bool, pre-norm instead of the paper's post-norm.
        layer_norm_epsilon: float. Defaults to 1e-6.

    Call arguments:
        inputs: (B, S, D). padding_mask: optional bool (B, S).
        training: bool.

    Returns:
        (B, S, D).

    Example:
    >>> layer = EncoderLayer(num_heads=2, d_ff=16)
    >>> tuple(layer(keras.ops.zeros((2, 5, 8))).shape)
    (2, 5, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.1.
    """

    def build(self, inputs_shape, padding_mask_shape=None):
        d_model = inputs_shape[-1]
        self.self_attention = self._attention(d_model, "self_attention")
        self.self_attention.build(inputs_shape, inputs_shape)
        self.self_attention_residual = self._residual(
            "self_attention_residual")
        self.self_attention_residual.build(inputs_shape)
        self.feed_forward = self._feed_forward()
        self.feed_forward.build(inputs_shape)
        self.feed_forward_residual = self._residual("feed_forward_residual")
        self.feed_forward_residual.build(inputs_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, training=None):
        mask = key_padding_mask(padding_mask)  # (B, 1, S)
        hidden = self.self_attention_residual.normalize_input(inputs)
        hidden = self.self_attention(hidden, hidden, attention_mask=mask,
                                     training=training)
        inputs = self.self_attention_residual(inputs, hidden,
                                              training=training)
        hidden = self.feed_forward_residual.normalize_input(inputs)
        hidden = self.feed_forward(hidden, training=training)
        return self.feed_forward_residual(inputs, hidden, training=training)


class _Stack(keras.layers.Layer):
    """N identical layers; in pre-norm a final LayerNorm closes the stack."""

    def __init__(self, num_layers=6, num_heads=8, d_ff=2048,
                 dropout_rate=0.1, attention_dropout_rate=0.0,
                 activation="relu", norm_first=False,
                 layer_norm_epsilon=1e-6, **kwargs):
        check_positive_int("num_layers", num_layers)
        check_block_arguments(num_heads, d_ff, dropout_rate,
                              attention_dropout_rate, activation)
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.d_ff = d_ff
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.activation = activation
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon

    def _build_stack(self, layer_class, prefix, build_args):
        self.blocks = []
        for index in range(self.num_layers):
            layer = layer_class(
                num_heads=self.num_heads, d_ff=self.d_ff,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                activation=self.activation, norm_first=self.norm_first,
                layer_norm_epsilon=self.layer_norm_epsilon,
                dtype=self.dtype_policy, name=f"{prefix}_layer_{index}")
            layer.build(*build_args)
            self.blocks.append(layer)
        self.final_norm = None
        if self.norm_first:
            self.final_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy,
                name="final_layer_norm")
            self.final_norm.build(build_args[0])

    def _finish(self, outputs):
        return outputs if self.final_norm is None else self.final_norm(
            outputs)

    def compute_output_shape(self, inputs_shape, *args, **kwargs):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "d_ff": self.d_ff,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "activation": self.activation,
            "norm_first": self.norm_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config


@keras.saving.register_keras_serializable(package="keras_transformer")
class Encoder(_Stack):
    """A stack of N EncoderLayers over embedded sources (§3.1).

    Embedding, positional encoding and their dropout happen before the
    stack (see `build_transformer`), so the same stack serves any input
    representation.

    Args:
        num_layers: int, N. Defaults to 6.
        num_heads, d_ff, dropout_rate, attention_dropout_rate, activation,
        norm_first, layer_norm_epsilon: as in `EncoderLayer`.

    Call arguments:
        inputs: (B, S, D). padding_mask: optional bool (B, S).
        training: bool.

    Returns:
        (B, S, D), the memory the decoder attends to.

    Example:
    >>> encoder = Encoder(num_layers=2, num_heads=2, d_ff=16)
    >>> tuple(encoder(keras.ops.zeros((2, 5, 8))).shape)
    (2, 5, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.1.
    """

    def build(self, inputs_shape, padding_mask_shape=None):
        self._build_stack(EncoderLayer, "encoder", (inputs_shape,))
        self.built = True

    def call(self, inputs, padding_mask=None, training=None):
        outputs = inputs
        for layer in self.blocks:
            outputs = layer(outputs, padding_mask=padding_mask,
                            training=training)
        return self._finish(outputs)
