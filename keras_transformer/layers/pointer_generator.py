"""Copy attention: the pointer-generator output (See et al., 2017, §2.2).

A pointer-generator decoder either generates a word from the vocabulary or
copies one from the source by pointing at it with its attention (See et
al., 2017, "Get To The Point: Summarization with Pointer-Generator
Networks", eqs. 8-9):

    P(w) = p_gen P_vocab(w) + (1 - p_gen) sum_{i: x_i = w} a_i
    p_gen = sigmoid(w . [h_t; e(y_{t-1})] + b)

On a Transformer, `a` is the last decoder layer's cross-attention averaged
over its H heads (each head's weights sum to 1 over the source, so their
mean does too), and the gate reads the decoder output h_t, which already
holds the cross-attention context that See et al. feed the gate
separately, and the embedded decoder input e(y_{t-1}).
"""

import keras
import numpy as np
from keras import ops

# The smallest normal float32: log P is clamped to log(MIN_PROBABILITY)
# (about -87.3) where P underflows to 0 (a word neither generated nor in
# the source), so the loss and the searches never see -inf or NaN.
MIN_PROBABILITY = float(np.finfo(np.float32).tiny)


def copy_distribution(attention, source_ids, vocabulary_size):
    """Attention over the source as a distribution over the vocabulary.

    Position i of the source votes with its weight a_i for its token x_i:
    copy(w) = sum_{i: x_i = w} a_i (See et al., 2017, eq. 9), a scatter
    that adds the weights of repeated tokens. A one-hot matmul would need
    a (B, S, V) tensor: 1 GB for 32 sources of 1,024 tokens and V = 8,000.

    Args:
        attention: float32 (B, T, S), attention weights over the source;
            padding positions weigh 0.
        source_ids: int (B, S), the source token ids, all in [0, V).
        vocabulary_size: int or int32 scalar, V.

    Returns:
        float32 (B, T, V).

    Example:
    >>> weights = keras.ops.array([[[0.5, 0.25, 0.25]]])
    >>> copy = copy_distribution(weights, keras.ops.array([[5, 6, 5]]), 8)
    >>> float(keras.ops.convert_to_numpy(copy)[0, 0, 5])
    0.75
    """
    shape = ops.shape(attention)
    batch, length, source_length = shape[0], shape[1], shape[2]
    ids = ops.cast(source_ids, "int32")
    # Coordinates (b, t, x_{b,i}) of every weight a_{b,t,i}: (B, T, S, 3).
    coordinates = [
        ops.reshape(ops.arange(batch, dtype="int32"), (-1, 1, 1)),
        ops.reshape(ops.arange(length, dtype="int32"), (1, -1, 1)),
        ops.expand_dims(ids, 1),
    ]
    coordinates = [ops.broadcast_to(c, (batch, length, source_length))
                   for c in coordinates]
    indices = ops.reshape(ops.stack(coordinates, axis=-1), (-1, 3))
    zeros = ops.zeros((batch, length, vocabulary_size), dtype="float32")
    # A scatter-add, not `ops.scatter`: both sum repeated coordinates, but
    # Keras' PyTorch `scatter` loops in Python over all B * T * S of them,
    # and tf2onnx turns TensorFlow's `ScatterNd` into an ONNX ScatterND
    # without reduction (repeated tokens would overwrite, not add), while
    # `TensorScatterAdd` becomes ScatterND with reduction="add".
    return ops.scatter_update(zeros, indices,
                              ops.reshape(attention, (-1,)), reduction="add")


@keras.saving.register_keras_serializable(package="keras_transformer")
class PointerGenerator(keras.layers.Layer):
    """Mixes generating and copying; returns log P in float32 (See §2.2).

    P(w) = p_gen softmax(logits)[w] + (1 - p_gen) sum_{i: x_i = w} a_i
    (See et al., 2017, eq. 9), with a the cross-attention weights averaged
    over the heads and p_gen = sigmoid(w . [h_t; e(y_{t-1})] + b) (eq. 8,
    a Dense(1) "gate" on the decoder output and the embedded decoder
    input). The layer returns log P, clamped at log(`MIN_PROBABILITY`),
    computed in float32 whatever the dtype policy.

    Why log P can stand in for the logits everywhere: log_softmax(z) =
    z - logsumexp(z), and logsumexp(log P) = log sum_w P(w) = log 1 = 0,
    so log_softmax(log P) = log P. The loss
    (`training.label_smoothed_crossentropy`: a softmax cross-entropy and
    logsumexp(z) - mean(z)) and the searches (`decoding.greedy_search` and
    `beam_search` take `log_softmax` of each step's logits) depend on
    their input only through log_softmax, and the argmax of log P is that
    of P, so all of them work on log P unchanged. Where sum_w P(w) strays
    from 1 (the clamp adds at most V * `MIN_PROBABILITY`; bfloat16
    attention weights; attention dropout in training), the same
    log_softmax renormalizes, in the loss and in the searches alike.

    Keras masks are not used (`supports_masking` is False): padded source
    positions carry attention weight exactly 0, so they copy nothing.

    Args:
        kernel_initializer: initializer of the gate's kernel (2D, 1).
            Defaults to "glorot_uniform".
        bias_initializer: initializer of the gate's bias. Defaults to
            "zeros" (p_gen = 1/2 for a zero input).

    Call arguments:
        logits: (B, T, V), the decoder's generation logits (any float
            dtype).
        hidden: (B, T, D), the decoder output h_t.
        embedded: (B, T, D), the embedded decoder inputs e(y_{t-1}): the
            scaled target embeddings, before the positional encoding.
        attention_weights: (B, H, T, S), the last decoder layer's
            cross-attention weights.
        source_ids: int (B, S), the source ids (pad id 0), all in [0, V):
            one vocabulary for source and target.

    Returns:
        float32 (B, T, V), log P.

    Example:
    >>> layer = PointerGenerator()
    >>> log_probs = layer(keras.ops.zeros((2, 3, 10)),
    ...                   keras.ops.zeros((2, 3, 8)),
    ...                   keras.ops.zeros((2, 3, 8)),
    ...                   keras.ops.full((2, 4, 3, 5), 0.2),
    ...                   keras.ops.ones((2, 5), dtype="int32"))
    >>> tuple(log_probs.shape)
    (2, 3, 10)

    References:
        See, Liu and Manning, "Get To The Point: Summarization with
        Pointer-Generator Networks", ACL 2017, section 2.2.
    """

    def __init__(self, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = False

    def build(self, logits_shape, hidden_shape, embedded_shape,
              attention_weights_shape=None, source_ids_shape=None):
        self.gate = keras.layers.Dense(
            1,
            kernel_initializer=self.kernel_initializer.__class__.from_config(
                self.kernel_initializer.get_config()),
            bias_initializer=self.bias_initializer.__class__.from_config(
                self.bias_initializer.get_config()),
            dtype=self.dtype_policy, name="gate")
        self.gate.build((*hidden_shape[:-1],
                         hidden_shape[-1] + embedded_shape[-1]))
        self.built = True

    def call(self, logits, hidden, embedded, attention_weights, source_ids):
        # Eq. 8: p_gen from [h_t; e(y_{t-1})] (B, T, 2D) -> (B, T, 1).
        gate = self.gate(ops.concatenate([hidden, embedded], axis=-1))
        p_gen = ops.sigmoid(ops.cast(gate, "float32"))
        generated = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        # One attention over the source: (B, H, T, S) -> (B, T, S).
        attention = ops.mean(ops.cast(attention_weights, "float32"), axis=1)
        copied = copy_distribution(attention, source_ids,
                                   ops.shape(logits)[-1])  # (B, T, V)
        # Eq. 9.
        probabilities = p_gen * generated + (1.0 - p_gen) * copied
        return ops.log(ops.maximum(probabilities, MIN_PROBABILITY))

    def compute_output_shape(self, logits_shape, *args, **kwargs):
        return logits_shape

    def compute_output_spec(self, logits, *args, **kwargs):
        # float32 under any policy, as the model's logits are.
        return keras.KerasTensor(logits.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer),
        })
        return config
