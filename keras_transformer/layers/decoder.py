"""Decoder layer and decoder stack (paper section 3.1, Figure 1 right).

Besides teacher-forced `call`, both classes decode one position at a time,
with one contract for the layer, the stack and the model:

    cache, context = initial_cache(memory, memory_mask, max_length)
    outputs, cache = decode_step(inputs, index, cache, context)

`context` is what stays constant for a source during a search (the
cross-attention keys and values, computed once, and the source mask);
`cache` is the fixed-size self-attention cache, the only state that changes
from step to step. A beam search tiles `context` once and carries only
`cache` through its loop.
"""

import keras
from keras import ops

from keras_transformer.layers.stack import Block, Stack, key_padding_mask
from keras_transformer.masks import (
    attention_bias,
    cast_mask,
    causal_mask,
    combine_masks,
)


@keras.saving.register_keras_serializable(package="keras_transformer")
class DecoderLayer(Block):
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
        inputs, weights = self.cross_and_feed_forward(
            inputs, key, value, cross_mask, training)
        return (inputs, weights) if return_attention_scores else inputs

    def cross_and_feed_forward(self, inputs, key, value, mask,
                               training=None):
        """The layer after self-attention: cross-attention, feed-forward.

        Each sub-layer with its residual connection and LayerNorm, as in
        `call`; for decoders that keep their own self-attention cache
        (the BeamSearch-op export).

        Args:
            inputs: (B, T, D), the self-attention sub-layer's output.
            key: (B, H, S, K), the cross-attention keys of the memory
                (`self.cross_attention.compute_key_value(memory)`).
            value: (B, H, S, K), its values.
            mask: optional, the cross-attention mask in any form
                `MultiHeadAttention.attend` takes: bool, True at the source
                positions to attend to, (B, T|1, S) or (B, H|1, T|1, S), or
                its additive float32 bias (`masks.attention_bias`).
            training: bool.

        Returns:
            `(outputs (B, T, D), cross_attention_weights (B, H, T, S))`.
        """
        inputs, weights = self._cross_attention_block(inputs, key, value,
                                                      mask, training)
        return self._feed_forward_block(inputs, training), weights

    def _cross_attention_block(self, inputs, key, value, mask,
                               training=None):
        """The cross-attention sub-layer with its residual and norm."""
        hidden = self.cross_attention_residual.normalize_input(inputs)
        hidden, weights = self.cross_attention.attend(hidden, key, value,
                                                      mask, training=training)
        return self.cross_attention_residual(inputs, hidden,
                                             training=training), weights

    def _feed_forward_block(self, inputs, training=None):
        hidden = self.feed_forward_residual.normalize_input(inputs)
        hidden = self.feed_forward(hidden, training=training)
        return self.feed_forward_residual(inputs, hidden, training=training)

    def initial_cache(self, memory, memory_mask, max_length):
        """The state `decode_step` needs, from the memory (B, S, D).

        Args:
            memory: (B, S, D), the encoder output.
            memory_mask: optional bool (B, S), True at real source tokens.
            max_length: int or int32 scalar L, the positions to cache.

        Returns:
            `(cache, context)`: `cache` {"key", "value"} zeros (B, H, L, K),
            the self-attention cache; `context` {"key", "value"} (B, H, S, K)
            the cross-attention keys and values and "mask" bool (B, 1, 1, S)
            (all True without `memory_mask`).
        """
        key, value = self.cross_attention.compute_key_value(memory)
        shape = ops.shape(memory)
        if memory_mask is None:
            memory_mask = ops.ones((shape[0], shape[1]), dtype="bool")
        mask = ops.expand_dims(ops.expand_dims(cast_mask(memory_mask), 1), 1)
        cache = self.self_attention.initial_cache(shape[0], max_length)
        return cache, {"key": key, "value": value, "mask": mask}

    def step_inputs(self, cache, context, index):
        """What a decode step at `index` needs besides cache and context.

        `MultiHeadAttention.step_inputs` of the self-attention (the cache
        rows to write, the causal bias) and "memory_bias", the additive
        bias of the source mask (`masks.attention_bias`). The same for
        every layer of a stack: `Decoder` computes it once per step.
        """
        step = dict(self.self_attention.step_inputs(cache, index))
        # Converted here, inside the step, not once in `initial_cache`: a
        # float bias captured by the search loop made TensorFlow's graph
        # optimizer (TF 2.21) return empty tensors from the whole search.
        step["memory_bias"] = attention_bias(context["mask"])
        return step

    def decode_step(self, inputs, index, cache, context, step=None,
                    return_attention_scores=False):
        """Decodes position `index`: (B, 1, D) -> `(outputs (B, 1, D), cache)`.

        `cache` and `context` are as made by `initial_cache`; the returned
        cache holds this position's keys and values. `step`: optional
        `step_inputs(cache, context, index)`, computed here when None.
        With `return_attention_scores`, returns `(outputs, cache,
        cross_attention_weights (B, H, 1, S))` (for copy attention).
        """
        if step is None:
            step = self.step_inputs(cache, context, index)
        hidden = self.self_attention_residual.normalize_input(inputs)
        hidden, cache = self.self_attention.decode_step(hidden, index, cache,
                                                        step)
        inputs = self.self_attention_residual(inputs, hidden)
        inputs, weights = self._cross_attention_block(
            inputs, context["key"], context["value"], step["memory_bias"])
        # Position-wise, so on (B, D) rows: each Dense is then one matmul
        # (on (B, 1, D) TensorFlow's Dense goes through tensordot, whose
        # shape arithmetic is a dozen more nodes per step in ONNX).
        width = inputs.shape[-1]
        rows = self._feed_forward_block(ops.reshape(inputs, (-1, width)))
        outputs = ops.reshape(rows, (-1, 1, width))
        if return_attention_scores:
            return outputs, cache, weights
        return outputs, cache

    def compute_output_spec(self, inputs, memory, padding_mask=None,
                            memory_mask=None, return_attention_scores=False,
                            training=None):
        return _output_spec(self, inputs, memory, return_attention_scores)


@keras.saving.register_keras_serializable(package="keras_transformer")
class Decoder(Stack):
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
        outputs = self.finish(outputs)
        return (outputs, weights) if return_attention_scores else outputs

    def initial_cache(self, memory, memory_mask, max_length):
        """`DecoderLayer.initial_cache` of every layer.

        Returns:
            `(cache, context)`, each a dict {"layer_0": ..., ...} of the
            layers' caches and contexts.
        """
        cache, context = {}, {}
        for index, layer in enumerate(self.blocks):
            name = f"layer_{index}"
            cache[name], context[name] = layer.initial_cache(
                memory, memory_mask, max_length)
        return cache, context

    def decode_step(self, inputs, index, cache, context,
                    return_attention_scores=False):
        """Decodes position `index`: (B, 1, D) -> `(outputs (B, 1, D), cache)`.

        With `return_attention_scores`, returns `(outputs, cache,
        cross_attention_weights (B, H, 1, S))`, the last layer's weights
        (for copy attention). Keys of `context` other than the layers'
        ("layer_0", ...) are not read here.
        """
        outputs, new_cache = inputs, {}
        # The write coordinates and both biases, once for every layer.
        step = self.blocks[0].step_inputs(cache["layer_0"],
                                          context["layer_0"], index)
        for position, layer in enumerate(self.blocks):
            name = f"layer_{position}"
            outputs, new_cache[name], weights = layer.decode_step(
                outputs, index, cache[name], context[name], step,
                return_attention_scores=True)
        outputs = self.finish(outputs)
        if return_attention_scores:
            return outputs, new_cache, weights
        return outputs, new_cache

    def compute_output_spec(self, inputs, memory, padding_mask=None,
                            memory_mask=None, return_attention_scores=False,
                            training=None):
        return _output_spec(self, inputs, memory, return_attention_scores)


def _output_spec(layer, inputs, memory, return_attention_scores):
    """Symbolic outputs of `call`, with the weights (B, H, T, S) if asked."""
    outputs = keras.KerasTensor(inputs.shape, dtype=layer.compute_dtype)
    if not return_attention_scores:
        return outputs
    # The weights are cast to the values' (compute) dtype by the attention.
    weights = keras.KerasTensor(
        (inputs.shape[0], layer.num_heads, inputs.shape[1], memory.shape[1]),
        dtype=layer.compute_dtype)
    return outputs, weights
