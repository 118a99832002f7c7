"""Masked, label-smoothed cross-entropy and masked token accuracy.

Both read the padding from the labels: positions whose label is `pad_id`
(0) count neither in the loss nor in the accuracy.

How the loss reaches the token average. A Keras `Loss` normally returns a
per-replica mean that Keras divides by the number of replicas before the
gradients of the replicas are summed, which averages the replicas' means:
two replicas with 90 and 10 real tokens would weigh each token of the
second nine times as much. `MaskedSparseCategoricalCrossentropy` instead
divides this replica's sum of token losses by the number of real tokens in
the whole global batch (summed over the replicas in sync), so that the
summed gradient is exactly that of the token average of the global batch.
Without a distribution strategy this is plainly
`sum(token losses) / number of real tokens`. A `sample_weight` of shape
(B,) or (B, T) weighs each token, and the division is then by the sum of
the weights of the real tokens (a weighted token average).

Keras' own `loss` log is a running mean of these per-batch token averages,
weighted by the number of sequences in each batch; `MaskedAccuracy`
accumulates correct and real tokens over the whole epoch.
"""

import keras
import tensorflow as tf

from keras_transformer.checks import check_int, check_rate
from keras_transformer.text.special_tokens import PAD_ID
from keras_transformer.training.distribute import global_sum


def _check_pad_id(pad_id):
    check_int("pad_id", pad_id, 0, optional=True)


def _check_shapes(y_true, y_pred):
    """Checks y_true (B, T) against y_pred (B, T, V) where shapes are known."""
    if len(y_pred.shape) != 3:
        raise ValueError(
            "`y_pred` must be logits of shape (batch, time, vocabulary). "
            f"Received: y_pred.shape={tuple(y_pred.shape)}")
    if len(y_true.shape) != 2:
        raise ValueError(
            "`y_true` must be token ids of shape (batch, time). "
            f"Received: y_true.shape={tuple(y_true.shape)}")
    for axis in (0, 1):
        a, b = y_true.shape[axis], y_pred.shape[axis]
        if a is not None and b is not None and a != b:
            raise ValueError(
                "`y_true` and `y_pred` must agree on batch and time. "
                f"Received: y_true.shape={tuple(y_true.shape)}, "
                f"y_pred.shape={tuple(y_pred.shape)}")


def _token_weights(y_true, pad_id, sample_weight):
    """Returns float32 (B, T): 0 at padding, else 1 or the sample weight."""
    if pad_id is None:
        weights = keras.ops.ones(keras.ops.shape(y_true), "float32")
    else:
        weights = keras.ops.cast(keras.ops.not_equal(y_true, pad_id),
                                 "float32")
    if sample_weight is not None:
        sample_weight = keras.ops.cast(
            keras.ops.convert_to_tensor(sample_weight), "float32")
        rank = len(sample_weight.shape)
        if rank == 2 and sample_weight.shape[-1] == 1:
            sample_weight = keras.ops.squeeze(sample_weight, -1)
            rank = 1
        if rank == 1:
            sample_weight = keras.ops.expand_dims(sample_weight, -1)
        elif rank != 2:
            raise ValueError(
                "`sample_weight` must have shape (batch,) or (batch, time). "
                f"Received: sample_weight.shape={tuple(sample_weight.shape)}")
        weights = weights * sample_weight
    return weights


def _sparse_nll(labels, logits):
    """-log softmax(logits)[label]: (B, T) int32, (B, T, V) -> (B, T)."""
    if keras.backend.backend() == "tensorflow":
        # TF's fused kernel computes the softmax and its gradient in one
        # op; with the argmax accuracy below it trained ~10% faster than
        # log_softmax + gather in the benchmark configuration. Same value.
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    picked = keras.ops.take_along_axis(
        logits, keras.ops.expand_dims(labels, -1), axis=-1)[..., 0]
    return keras.ops.logsumexp(logits, axis=-1) - picked


def _fused_smoothed_nll(labels, logits, eps):
    """`label_smoothed_crossentropy` on TensorFlow, in one softmax pass.

    With n = -log p(y) and logsumexp(z) = n + z_y, the smoothed loss
    (1 - eps) n + eps (logsumexp(z) - mean(z)) is n + eps (z_y - mean(z)),
    and its gradient is (p - onehot(y)) + eps (onehot(y) - 1/V). TF's fused
    kernel returns n and p - onehot(y) together, so neither the loss nor
    its gradient needs a second logsumexp over the (B, T, V) logits (the
    separate form cost a fifth of a training step at the benchmark size).
    """
    shape = tf.shape(labels)
    vocabulary = tf.shape(logits)[-1]
    flat_labels = tf.reshape(labels, [-1])

    @tf.custom_gradient
    def smoothed(flat_logits):
        nll, backprop = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=flat_logits, labels=flat_labels)
        picked = tf.gather(flat_logits, flat_labels, batch_dims=1)
        loss = nll + eps * (picked - tf.reduce_mean(flat_logits, axis=-1))

        def gradient(upstream):
            upstream = upstream[:, None]
            dense = upstream * (backprop - eps / tf.cast(vocabulary,
                                                         tf.float32))
            rows = tf.range(tf.shape(flat_labels)[0])
            return tf.tensor_scatter_nd_add(
                dense, tf.stack([rows, flat_labels], axis=1),
                eps * upstream[:, 0])

        return loss, gradient

    return tf.reshape(smoothed(tf.reshape(logits, [-1, vocabulary])), shape)


def _argmax(logits):
    """int32 (B, T): the predicted token of (B, T, V) logits."""
    if keras.backend.backend() == "tensorflow":
        # keras.ops.argmax adds four passes over the (B, T, V) logits to
        # tell -0.0 from 0.0, which a token accuracy does not need (~4% of
        # a training step at the benchmark size).
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    return keras.ops.cast(keras.ops.argmax(logits, axis=-1), "int32")


def label_smoothed_crossentropy(y_true, logits, label_smoothing=0.1):
    """Per-token cross-entropy against label-smoothed targets (section 5.4).

    The target distribution is `(1 - eps) * one_hot(y) + eps / V` (label
    smoothing as in Szegedy et al., 2016, which the paper cites: the mass
    `eps` is spread uniformly over all V classes, the true one included),
    so the loss is `-(1 - eps) * log p(y) - eps * mean_k log p(k)`. It is
    computed in float32 from logits of any float dtype.

    Args:
        y_true: int tensor (B, T), target ids in [0, V).
        logits: float tensor (B, T, V), unnormalized scores.
        label_smoothing: float, eps in [0, 1). Defaults to 0.1.

    Returns:
        float32 tensor (B, T), the loss of every position, padding included.
    """
    logits = keras.ops.cast(logits, "float32")
    labels = keras.ops.cast(y_true, "int32")
    if label_smoothing and keras.backend.backend() == "tensorflow":
        return _fused_smoothed_nll(labels, logits, float(label_smoothing))
    nll = _sparse_nll(labels, logits)  # (B, T)
    if not label_smoothing:
        return nll
    # -mean_k log p(k) = logsumexp(z) - mean(z), without materializing the
    # (B, T, V) log-probabilities.
    uniform = (keras.ops.logsumexp(logits, axis=-1)
               - keras.ops.mean(logits, axis=-1))  # (B, T)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


@keras.saving.register_keras_serializable(package="keras_transformer")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Label-smoothed cross-entropy averaged over real (non-pad) tokens.

    Section 5.4 of the paper trains with label smoothing eps_ls = 0.1. The
    loss of a batch is the sum of `label_smoothed_crossentropy` over the
    positions whose label is not `pad_id`, divided by the number of those
    positions in the global batch (see the module docstring for how this
    stays the token average under `tf.distribute`, and for
    `sample_weight`). A batch with no real token has loss 0. Any Keras
    mask on `y_pred` is ignored: the padding is read from `y_true`.

    Args:
        label_smoothing: float, eps_ls in [0, 1). Defaults to 0.1.
        pad_id: int or None, the label id to ignore; None counts every
            position. Defaults to 0.
        name: str, name of the loss.

    Call arguments:
        y_true: int tensor (B, T), target ids.
        y_pred: float tensor (B, T, V), logits (any float dtype; the loss is
            computed in float32).
        sample_weight: optional float tensor (B,) or (B, T).

    Returns:
        float32 scalar.

    Example:
    >>> loss = MaskedSparseCategoricalCrossentropy(label_smoothing=0.1)
    >>> value = loss(np.array([[5, 2, 0]]), np.zeros((1, 3, 8)))

    References:
        Vaswani et al., 2017, "Attention Is All You Need", section 5.4.
        Szegedy et al., 2016, "Rethinking the Inception Architecture for
        Computer Vision", section 7.
    """

    def __init__(
        self,
        label_smoothing: float = 0.1,
        pad_id: int | None = PAD_ID,
        name: str = "masked_sparse_categorical_crossentropy",
    ):
        check_rate("label_smoothing", label_smoothing)
        _check_pad_id(pad_id)
        super().__init__(name=name, reduction="sum", dtype="float32")
        self.label_smoothing = float(label_smoothing)
        self.pad_id = pad_id

    def call(self, y_true, y_pred):
        return label_smoothed_crossentropy(y_true, y_pred,
                                           self.label_smoothing)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.convert_to_tensor(y_true)
        y_pred = keras.ops.convert_to_tensor(y_pred)
        _check_shapes(y_true, y_pred)
        weights = _token_weights(y_true, self.pad_id, sample_weight)
        total = keras.ops.sum(self.call(y_true, y_pred) * weights)
        # The tokens of the whole global batch, not of this replica alone.
        count = keras.ops.stop_gradient(global_sum(keras.ops.sum(weights)))
        return keras.ops.divide_no_nan(total, count)

    def get_config(self) -> dict:
        return {
            "label_smoothing": self.label_smoothing,
            "pad_id": self.pad_id,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="keras_transformer")
class MaskedAccuracy(keras.metrics.Metric):
    """Fraction of real (non-pad) target tokens predicted by the argmax.

    Accumulates the number of correct real tokens and of real tokens over
    every batch until `reset_state()`; `result()` is their ratio (0 before
    any real token). Both counters are summed over replicas under
    `tf.distribute`.

    Args:
        pad_id: int or None, the label id to ignore; None counts every
            position. Defaults to 0.
        name: str, name of the metric.
        dtype: dtype of the result. Defaults to float32.

    Call arguments (`update_state`):
        y_true: int tensor (B, T), target ids.
        y_pred: float tensor (B, T, V), logits or probabilities.
        sample_weight: optional float tensor (B,) or (B, T) weighing tokens.

    Example:
    >>> metric = MaskedAccuracy()
    >>> metric.update_state(np.array([[1, 2, 0]]), np.eye(3)[None, [1, 0, 0]])
    >>> float(metric.result())  # one of two real tokens
    0.5
    """

    def __init__(
        self,
        pad_id: int | None = PAD_ID,
        name: str = "masked_accuracy",
        dtype=None,
    ):
        _check_pad_id(pad_id)
        super().__init__(name=name, dtype=dtype or "float32")
        self.pad_id = pad_id
        self.correct = self.add_variable(
            shape=(), initializer="zeros", dtype="float32",
            aggregation="sum", name="correct")
        self.count = self.add_variable(
            shape=(), initializer="zeros", dtype="float32",
            aggregation="sum", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.convert_to_tensor(y_true)
        y_pred = keras.ops.convert_to_tensor(y_pred)
        _check_shapes(y_true, y_pred)
        weights = _token_weights(y_true, self.pad_id, sample_weight)
        predicted = _argmax(y_pred)
        hits = keras.ops.cast(
            keras.ops.equal(predicted, keras.ops.cast(y_true, "int32")),
            "float32")
        self.correct.assign_add(keras.ops.sum(hits * weights))
        self.count.assign_add(keras.ops.sum(weights))

    def result(self):
        return keras.ops.cast(
            keras.ops.divide_no_nan(self.correct, self.count), self.dtype)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict:
        return {"pad_id": self.pad_id, "name": self.name,
                "dtype": self.dtype}
