"""Decoder layer and decoder stack (paper section 3.1, Figure 1 right).

Besides teacher-forced `call`, both classes decode one position at a time
with a cache: `initial_cache` computes the cross-attention keys and values
of the memory once and allocates fixed-size self-attention caches;
`decode_step` writes each new position into them in place.
"""

import keras
from keras import ops

from keras_transformer.layers.encoder import _Block, _Stack, key_padding_mask
from keras_transformer.masks import cast_mask, causal_mask, combine_masks


@keras.saving.register_keras_serializable(package="keras_transformer")
class DecoderLayer(_Block):
    """Masked self-attention, cross-attention and feed-forward (§3.1).

    Each sub-layer sits in a ResidualNorm. Self-attention is always causal
    ("masking ... ensures that the predictions for position i can depend
    only on the known outputs at positions less than i"); `padding_mask`
    also hides padded target keys. `memory_mask` (B, S) hides padded
    source positions from cross-attention. Keras implicit masks are not
    used.

    Args:
        num_heads, d_ff, dropout_rate, attention_dropout_rate, activation,
        norm_first, layer_norm_epsilon: as in `EncoderLayer`.

    Call arguments:
        inputs: (B, T, D). memory: (B, S, D), the encoder output.
        padding_mask: optional bool (B, T). memory_mask: optional bool
        (B, S). return_attention_scores: bool, also return the
        cross-attention weights (B, H, T, S). training: bool.

    Returns:
        (B, T, D), or `(outputs, cross_attention_weights)`.

    Example:
    >>> layer = DecoderLayer(num_heads=2, d_ff=16)
    >>> x, memory = keras.ops.zeros((2, 4, 8)), keras.ops.zeros((2, 5, 8))
    >>> tuple(layer(x, memory).shape)
    (2, 4, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.1.
    """

    def build(self, inputs_shape, memory_shape, padding_mask_shape=None,
              memory_mask_shape=None):
        d_model = inputs_shape[-1]
        self.self_attention = self._attention(d_model, "self_attention")
        self.self_attention.build(inputs_shape, inputs_shape)
        self.self_attention_residual = self._residual(
            "self_attention_residual")
        self.self_attention_residual.build(inputs_shape)
        self.cross_attention = self._attention(d_model, "cross_attention")
        self.cross_attention.build(inputs_shape, memory_shape)
        self.cross_attention_residual = self._residual(
            "cross_attention_residual")
        self.cross_attention_residual.build(inputs_shape)
        self.feed_forward = self._feed_forward()
        self.feed_forward.build(inputs_shape)
        self.feed_forward_residual = self._residual("feed_forward_residual")
        self.feed_forward_residual.build(inputs_shape)
        self.built = True

    def call(self, inputs, memory, padding_mask=None, memory_mask=None,
             return_attention_scores=False, training=None):
        length = ops.shape(inputs)[1]
        self_mask = combine_masks(key_padding_mask(padding_mask),
                                  causal_mask(length))  # (B, T, T)
        hidden = self.self_attention_residual.normalize_input(inputs)
        hidden = self.self_attention(hidden, hidden, attention_mask=self_mask,
                                     training=training)
        inputs = self.self_attention_residual(inputs, hidden,
                                              training=training)
        key, value = self.cross_attention.compute_key_value(memory)
        cross_mask = key_padding_mask(memory_mask)
        inputs, weights = self._cross_and_feed_forward(
            inputs, lambda hidden: self.cross_attention.attend(
                hidden, key, value, cross_mask,
                return_attention_scores=True, training=training),
            training)
        return (inputs, weights) if return_attention_scores else inputs

    def _cross_and_feed_forward(self, inputs, cross_attend, training=None):
        """Cross-attention and feed-forward blocks, both with residuals.

        `cross_attend(hidden) -> (outputs, weights)` attends to the memory
        (its keys and values in either layout).
        """
        hidden = self.cross_attention_residual.normalize_input(inputs)
        hidden, weights = cross_attend(hidden)
        inputs = self.cross_attention_residual(inputs, hidden,
                                               training=training)
        hidden = self.feed_forward_residual.normalize_input(inputs)
        hidden = self.feed_forward(hidden, training=training)
        outputs = self.feed_forward_residual(inputs, hidden,
                                             training=training)
        return outputs, weights

    def initial_cache(self, memory, max_length):
        """Cache for `decode_step`: cross keys/values once, empty self-cache.

        Returns a dict of (B, H, L, K) "self_key"/"self_value" zeros with
        L = `max_length`, and (B, H, S, K) "cross_key"/"cross_value": the
        head-major layout `MultiHeadAttention.decode_step` reads without
        transposing.
        """
        cross_key, cross_value = (
            self.cross_attention.compute_key_value_heads_first(memory))
        heads = ops.shape(cross_key)
        empty = ops.zeros((heads[0], heads[1], max_length, heads[3]),
                          dtype=cross_key.dtype)
        return {"self_key": empty, "self_value": empty,
                "cross_key": cross_key, "cross_value": cross_value}

    def decode_step(self, inputs, cache, index, memory_mask=None):
        """Decodes position `index` from its input (B, 1, D) and the cache.

        Returns `(outputs (B, 1, D), cache, cross_attention_weights)`;
        the returned cache holds this position's keys and values.
        """
        hidden = self.self_attention_residual.normalize_input(inputs)
        hidden, self_key, self_value = self.self_attention.decode_step(
            hidden, cache["self_key"], cache["self_value"], index)
        inputs = self.self_attention_residual(inputs, hidden)
        if memory_mask is not None:  # (B, S) -> (B, 1, 1, S)
            memory_mask = ops.expand_dims(
                ops.expand_dims(cast_mask(memory_mask), 1), 1)
        outputs, weights = self._cross_and_feed_forward(
            inputs, lambda hidden: self.cross_attention.attend_heads_first(
                hidden, cache["cross_key"], cache["cross_value"],
                memory_mask))
        cache = dict(cache, self_key=self_key, self_value=self_value)
        return outputs, cache, weights


@keras.saving.register_keras_serializable(package="keras_transformer")
class Decoder(_Stack):
    """A stack of N DecoderLayers over embedded, shifted targets (§3.1).

    Args:
        num_layers: int, N. Defaults to 6.
        num_heads, d_ff, dropout_rate, attention_dropout_rate, activation,
        norm_first, layer_norm_epsilon: as in `EncoderLayer`.

    Call arguments:
        inputs: (B, T, D). memory: (B, S, D). padding_mask: optional bool
        (B, T). memory_mask: optional bool (B, S).
        return_attention_scores: bool, also return the last layer's
        cross-attention weights (B, H, T, S). training: bool.

    Returns:
        (B, T, D), or `(outputs, cross_attention_weights)`.

    Example:
    >>> decoder = Decoder(num_layers=2, num_heads=2, d_ff=16)
    >>> x, memory = keras.ops.zeros((2, 4, 8)), keras.ops.zeros((2, 5, 8))
    >>> tuple(decoder(x, memory).shape)
    (2, 4, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.1.
    """

    def build(self, inputs_shape, memory_shape, padding_mask_shape=None,
              memory_mask_shape=None):
        self._build_stack(DecoderLayer, "decoder",
                          (inputs_shape, memory_shape))
        self.built = True

    def call(self, inputs, memory, padding_mask=None, memory_mask=None,
             return_attention_scores=False, training=None):
        outputs = inputs
        for layer in self.blocks:
            outputs, weights = layer(
                outputs, memory, padding_mask=padding_mask,
                memory_mask=memory_mask, return_attention_scores=True,
                training=training)
        outputs = self._finish(outputs)
        return (outputs, weights) if return_attention_scores else outputs

    def initial_cache(self, memory, max_length):
        """Per-layer caches {"layer_0": {...}, ...} for `decode_step`."""
        return {f"layer_{index}": layer.initial_cache(memory, max_length)
                for index, layer in enumerate(self.blocks)}

    def decode_step(self, inputs, cache, index, memory_mask=None):
        """Decodes position `index`: (B, 1, D) -> (B, 1, D), new cache and
        the last layer's cross-attention weights (B, H, 1, S)."""
        outputs, new_cache = inputs, {}
        for position, layer in enumerate(self.blocks):
            name = f"layer_{position}"
            outputs, new_cache[name], weights = layer.decode_step(
                outputs, cache[name], index, memory_mask)
        return self._finish(outputs), new_cache, weights
