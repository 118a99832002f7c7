"""What the encoder and decoder share: `Block` (one layer), `Stack` (N).

`EncoderLayer` and `DecoderLayer` are `Block`s: one constructor, the
factories of their sub-layers (attention, residual, feed-forward) and one
config. `Encoder` and `Decoder` are `Stack`s of N such layers, closed by
a final LayerNorm in pre-norm (`Stack.finish`). Neither base is exported
by `keras_transformer.layers`: they are not used on their own.
"""

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
    """Checks the arguments a `Block` and a `Stack` share."""
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


class Block(keras.layers.Layer):
    """Shared constructor, sub-layer factories and config of one layer.

    The base of `EncoderLayer` and `DecoderLayer`, whose docstrings
    describe the arguments; a subclass builds its sub-layers with
    `_attention`, `_residual` and `_feed_forward`.
    """

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


class Stack(keras.layers.Layer):
    """N identical layers; in pre-norm a final LayerNorm closes the stack.

    The base of `Encoder` and `Decoder`: `num_layers` is N, the other
    arguments are those of each `Block`. A subclass's `build` calls
    `_build_stack` and its `call` ends with `finish`.

    Attributes:
        blocks: the N layers, first to last (after `build`).
        final_norm: the closing `keras.layers.LayerNormalization` in
            pre-norm, None in post-norm (after `build`).
    """

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

    def finish(self, outputs):
        """The stack's output from its last layer's: `final_norm` applied
        in pre-norm (`norm_first`), `outputs` unchanged in post-norm.

        Args:
            outputs: (B, T, D) or (B, D), the last layer's outputs.

        Returns:
            A tensor of the shape of `outputs`.
        """
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
