"""Scaled dot-product attention and multi-head attention (paper section 3.2).

`scaled_dot_product_attention` takes heads on axis 2, as
`keras.layers.MultiHeadAttention` does: queries (B, T, H, K), keys and values
(B, S, H, K). Inside `MultiHeadAttention` keys and values are head-major,
(B, H, S, K), the layout of the decoder's cache. Masks are boolean,
True meaning "may attend"; a (B, T, S) or (T, S) mask is broadcast over the
heads.
"""

import math

import keras
from keras import ops

from keras_transformer.checks import check_positive_int, check_rate
from keras_transformer.masks import attention_bias, causal_mask, combine_masks


def scaled_dot_product_attention(query, key, value, attention_mask=None,
                                 dropout=None, training=None):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V (paper eq. 1).

    The softmax runs in float32 whatever the compute dtype, and masked
    scores get the float32 minimum added (`masks.attention_bias`, never a
    -1e9 constant), so float16 and bfloat16 inputs neither overflow nor
    give weight to masked keys.

    Args:
        query: tensor (B, T, H, K).
        key: tensor (B, S, H, K).
        value: tensor (B, S, H, K).
        attention_mask: optional bool tensor (B, T, S) or (T, S); True where
            a query may attend to a key. A float32 tensor is taken as an
            additive bias made by `masks.attention_bias`.
        dropout: optional callable applied to the attention weights.
        training: bool, passed to `dropout`.

    Returns:
        `(outputs, weights)`: outputs (B, T, H, K) in the query's dtype and
        attention weights (B, H, T, S).

    Example:
    >>> q = keras.random.normal((2, 3, 4, 8))
    >>> out, w = scaled_dot_product_attention(q, q, q)
    >>> tuple(out.shape), tuple(w.shape)
    ((2, 3, 4, 8), (2, 4, 3, 3))
    """
    outputs, weights = _attention_heads_first(
        _heads_first(query), _heads_first(key), _heads_first(value),
        attention_mask, dropout, training)
    return _heads_first(outputs), weights


def _heads_first(x):
    """(B, T, H, K) <-> (B, H, T, K)."""
    return ops.transpose(x, (0, 2, 1, 3))


def _attention_heads_first(query, key, value, attention_mask=None,
                           dropout=None, training=None):
    """`scaled_dot_product_attention` on (B, H, T, K) / (B, H, S, K) heads.

    `MultiHeadAttention`'s one layout: both products are plain batched
    matmuls over (B, H), with no transpose of the keys or values (which,
    for a decoder cache, would copy all of it at every step).

    Returns:
        `(outputs (B, H, T, K), weights (B, H, T, S))`.
    """
    # Scaling the queries before the product keeps float16 scores small.
    query = ops.multiply(query, ops.cast(
        1.0 / math.sqrt(query.shape[-1]), query.dtype))
    scores = ops.einsum("bhtk,bhsk->bhts", query, key)
    scores = ops.cast(scores, "float32")
    if attention_mask is not None:
        bias = attention_mask
        if keras.backend.standardize_dtype(bias.dtype) != "float32":
            bias = attention_bias(bias)
        while len(bias.shape) < 4:
            bias = ops.expand_dims(bias, -3)  # broadcast over H (and B)
        scores = ops.add(scores, bias)
    weights = ops.softmax(scores, axis=-1)
    weights = ops.cast(weights, value.dtype)
    if dropout is not None:
        weights = dropout(weights, training=training)
    outputs = ops.einsum("bhts,bhsk->bhtk", weights, value)
    return outputs, weights


@keras.saving.register_keras_serializable(package="keras_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention: h scaled dot-product heads in parallel (§3.2.2).

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V). The projections are
    einsum kernels shaped as in `keras.layers.MultiHeadAttention`
    (query/key/value (D, H, K), output (H, K, D)), so weights copy across.

    Masks are explicit: this layer ignores Keras implicit masks
    (`supports_masking` is False) and takes a boolean `attention_mask`.

    Args:
        num_heads: int, h.
        key_dim: int, d_k = d_v, the size of each head.
        dropout_rate: float, dropout on the attention weights. The paper
            uses none. Defaults to 0.0.
        use_bias: bool, whether the projections have biases.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the biases.

    Call arguments:
        query: (B, T, D). value: (B, S, D). key: (B, S, D), defaults to
        `value`. attention_mask: bool (B, T, S) or (T, S).
        use_causal_mask: bool, also forbid attending to later positions.
        return_attention_scores: bool, also return weights (B, H, T, S).
        training: bool.

    Returns:
        (B, T, D), or `(outputs, weights)` with `return_attention_scores`.

    Example:
    >>> layer = MultiHeadAttention(num_heads=2, key_dim=4)
    >>> x = keras.random.normal((1, 5, 8))
    >>> tuple(layer(x, x, use_causal_mask=True).shape)
    (1, 5, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.2.
    """

    def __init__(self, num_heads, key_dim, dropout_rate=0.0, use_bias=True,
                 kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        check_positive_int("num_heads", num_heads)
        check_positive_int("key_dim", key_dim)
        check_rate("dropout_rate", dropout_rate)
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout_rate = dropout_rate
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = False

    def _dense(self, equation, output_shape, bias_axes, name):
        return keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=self.kernel_initializer.__class__.from_config(
                self.kernel_initializer.get_config()),
            bias_initializer=self.bias_initializer.__class__.from_config(
                self.bias_initializer.get_config()),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        heads = (None, self.num_heads, self.key_dim)
        self.query_dense = self._dense("btd,dhk->bthk", heads, "hk", "query")
        self.key_dense = self._dense("bsd,dhk->bshk", heads, "hk", "key")
        self.value_dense = self._dense("bsd,dhk->bshk", heads, "hk", "value")
        self.output_dense = self._dense(
            "bthk,hkd->btd", (None, query_shape[-1]), "d", "attention_output")
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense.build(
            (query_shape[0], query_shape[1], self.num_heads, self.key_dim))
        self.dropout = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.built = True

    def call(self, query, value, key=None, attention_mask=None,
             use_causal_mask=False, return_attention_scores=False,
             training=None):
        key_heads, value_heads = self.compute_key_value(value, key)
        if use_causal_mask:
            causal = causal_mask(ops.shape(query)[1], ops.shape(value)[1])
            attention_mask = combine_masks(attention_mask, causal)
        outputs, weights = self.attend(query, key_heads, value_heads,
                                       attention_mask, training=training)
        if return_attention_scores:
            return outputs, weights
        return outputs

    def compute_key_value(self, value, key=None):
        """Projects keys and values once, head-major: each (B, H, S, K).

        Head-major is the one layout this layer attends in: both attention
        products are then plain batched matmuls over (B, H), and a decoder
        cache in this layout is never transposed.
        """
        key = value if key is None else key
        return (_heads_first(self.key_dense(key)),
                _heads_first(self.value_dense(value)))

    def attend(self, query, key_heads, value_heads, attention_mask=None,
               training=None):
        """Attends query (B, T, D) to projected keys/values (B, H, S, K).

        Args:
            query: (B, T, D).
            key_heads: (B, H, S, K). value_heads: (B, H, S, K).
            attention_mask: optional bool, (B, T, S) or (T, S) (broadcast
                over the heads) or already (B, H|1, T|1, S); or the float32
                additive bias of such a mask (`masks.attention_bias`).
            training: bool.

        Returns:
            `(outputs (B, T, D), weights (B, H, T, S))`.
        """
        query_heads = _heads_first(self.query_dense(query))  # (B, H, T, K)
        outputs, weights = _attention_heads_first(
            query_heads, key_heads, value_heads, attention_mask,
            dropout=self.dropout, training=training)
        return self.output_dense(_heads_first(outputs)), weights

    def initial_cache(self, batch_size, max_length):
        """An empty self-attention cache: zeros "key"/"value" (B, H, L, K)."""
        empty = ops.zeros((batch_size, self.num_heads, max_length,
                           self.key_dim), dtype=self.compute_dtype)
        return {"key": empty, "value": empty}

    @staticmethod
    def step_inputs(cache, index):
        """What a decode step at `index` needs besides its cache.

        The same for every layer whose cache has this shape, so a decoder
        computes it once per step and passes it to each layer's
        `decode_step`.

        Args:
            cache: {"key": (B, H, L, K), ...}, a cache of `initial_cache`.
            index: int32 scalar, the position being decoded.

        Returns:
            {"rows": int32 (B * H, 3), the [b, h, index] coordinates of the
            cache rows to write; "bias": float32 (1, 1, 1, L), the additive
            bias hiding positions after `index`}.
        """
        index = ops.cast(index, "int32")
        shape = ops.shape(cache["key"])
        batch, heads, length = shape[0], shape[1], shape[2]
        # Keras' JAX and PyTorch scatters take only 2-D (N, 3) indices.
        rows = ops.reshape(ops.stack(ops.meshgrid(
            ops.arange(batch, dtype="int32"),
            ops.arange(heads, dtype="int32"), indexing="ij"), axis=-1),
            (-1, 2))
        rows = ops.concatenate(
            [rows, ops.broadcast_to(index, (batch * heads, 1))], axis=-1)
        visible = ops.less_equal(ops.arange(length, dtype="int32"), index)
        return {"rows": rows,
                "bias": ops.reshape(attention_bias(visible), (1, 1, 1, -1))}

    def decode_step(self, query, index, cache, step=None):
        """Self-attention for one new position with a fixed-size cache.

        Writes this step's key and value at `index` of the cache with a
        scatter of B x H rows (no concatenation and no pass over the whole
        cache: the cache keeps its shape, so the step compiles once) and
        attends to positions 0..index.

        Args:
            query: (B, 1, D), the input at position `index`.
            index: int32 scalar, the position being decoded.
            cache: {"key": (B, H, L, K), "value": (B, H, L, K)}, as made
                by `initial_cache`.
            step: optional `step_inputs(cache, index)`, computed here when
                None.

        Returns:
            `(outputs (B, 1, D), cache)`, the cache holding this position.
        """
        if step is None:
            step = self.step_inputs(cache, index)
        # Projections (B, 1, H, K) -> rows (B * H, K).
        key = ops.reshape(self.key_dense(query), (-1, self.key_dim))
        value = ops.reshape(self.value_dense(query), (-1, self.key_dim))
        cache = {"key": ops.scatter_update(cache["key"], step["rows"], key),
                 "value": ops.scatter_update(cache["value"], step["rows"],
                                             value)}
        outputs, _ = self.attend(query, cache["key"], cache["value"],
                                 step["bias"])
        return outputs, cache

    def compute_output_shape(self, query_shape, value_shape=None,
                             key_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "dropout_rate": self.dropout_rate,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer),
        })
        return config
