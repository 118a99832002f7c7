"""Position-wise feed-forward network (paper section 3.3, eq. 2)."""

import keras

from keras_transformer.checks import (
    check_choice,
    check_positive_int,
    check_rate,
)

# "swish" is SiLU, x * sigmoid(x): the activation of Hugging Face's Marian
# models ("swish"/"silu" there), for imported checkpoints.
ACTIVATIONS = ("relu", "gelu", "swish")


@keras.saving.register_keras_serializable(package="keras_transformer")
class PositionwiseFeedForward(keras.layers.Layer):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, applied at every position (§3.3).

    Two Dense layers, d_model -> d_ff -> d_model, with ReLU as in the
    paper (GELU or swish as options). Keras masks pass through unchanged.

    Args:
        d_ff: int, the inner width. Defaults to 2048.
        activation: str, "relu" (the paper; the default), "gelu" (exact,
            erf-based) or "swish" (SiLU, x * sigmoid(x), as Marian).
        dropout_rate: float, dropout on the inner activations. The paper
            applies dropout only to the sub-layer output (see ResidualNorm);
            defaults to 0.0.
        kernel_initializer: initializer of both kernels.

    Call arguments:
        inputs: (B, T, D). training: bool.

    Returns:
        (B, T, D).

    Example:
    >>> ffn = PositionwiseFeedForward(d_ff=32)
    >>> tuple(ffn(keras.ops.zeros((2, 3, 8))).shape)
    (2, 3, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.3.
    """

    def __init__(self, d_ff=2048, activation="relu", dropout_rate=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        check_positive_int("d_ff", d_ff)
        check_choice("activation", activation, ACTIVATIONS)
        check_rate("dropout_rate", dropout_rate)
        super().__init__(**kwargs)
        self.d_ff = d_ff
        self.activation = activation
        self.dropout_rate = dropout_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _initializer(self):
        return self.kernel_initializer.__class__.from_config(
            self.kernel_initializer.get_config())

    def build(self, inputs_shape):
        self.inner_dense = keras.layers.Dense(
            self.d_ff, activation=self.activation,
            kernel_initializer=self._initializer(),
            dtype=self.dtype_policy, name="inner_dense")
        self.inner_dropout = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="inner_dropout")
        self.output_dense = keras.layers.Dense(
            inputs_shape[-1], kernel_initializer=self._initializer(),
            dtype=self.dtype_policy, name="output_dense")
        self.inner_dense.build(inputs_shape)
        self.output_dense.build((*inputs_shape[:-1], self.d_ff))
        self.built = True

    def call(self, inputs, training=None):
        hidden = self.inner_dense(inputs)  # (B, T, F)
        hidden = self.inner_dropout(hidden, training=training)
        return self.output_dense(hidden)  # (B, T, D)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "d_ff": self.d_ff,
            "activation": self.activation,
            "dropout_rate": self.dropout_rate,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer),
        })
        return config
