"""Encoder layer and encoder stack (paper section 3.1, Figure 1 left)."""

import keras

from keras_transformer.layers.stack import Block, Stack, key_padding_mask


@keras.saving.register_keras_serializable(package="keras_transformer")
class EncoderLayer(Block):
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
        activation: str, "relu" (the paper), "gelu" or "swish".
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


@keras.saving.register_keras_serializable(package="keras_transformer")
class Encoder(Stack):
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
        return self.finish(outputs)
