"""Sinusoidal positional encoding (paper section 3.5)."""

import keras
import numpy as np
from keras import ops

from keras_transformer.checks import check_positive_int


def sinusoidal_table(max_length: int, d_model: int) -> np.ndarray:
    """The paper's encoding as a float32 array (max_length, d_model).

    PE(pos, 2i) = sin(pos / 10000^(2i / d_model)) and
    PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model)): sine and cosine are
    interleaved along the feature axis, as in the paper (some code bases
    concatenate them instead; that is a different, permuted encoding).
    """
    positions = np.arange(max_length, dtype=np.float64)[:, None]
    even = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
    angles = positions / np.power(10000.0, even / d_model)
    table = np.zeros((max_length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table.astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_transformer")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Adds the fixed sinusoidal positional encoding to its inputs (§3.5).

    The encoding has no weights; it is a constant table of `max_length`
    rows computed once at build time. Keras masks pass through unchanged.

    Args:
        max_length: int, the number of positions covered. A sequence that
            reaches past it raises an error naming `max_length`.

    Call arguments:
        inputs: (B, T, D) embeddings; D must be even.
        start_index: int or int32 scalar tensor, the absolute position of
            the first step, for cached one-step-at-a-time decoding.
            Defaults to 0. Past the table is an error, except for a
            value traced under JAX, which XLA cannot check (its slice
            clamps the start instead).

    Returns:
        (B, T, D): inputs + PE[start_index : start_index + T].

    Example:
    >>> layer = SinusoidalPositionalEncoding(max_length=16)
    >>> tuple(layer(keras.ops.zeros((2, 5, 8))).shape)
    (2, 5, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.5.
    """

    def __init__(self, max_length=256, **kwargs):
        check_positive_int("max_length", max_length)
        super().__init__(**kwargs)
        self.max_length = max_length
        self.supports_masking = True

    def build(self, inputs_shape):
        d_model = inputs_shape[-1]
        if d_model is None or d_model % 2:
            raise ValueError(
                "The last dimension of the inputs (d_model) must be a known "
                f"even number. Received: d_model={d_model}")
        self.table = sinusoidal_table(self.max_length, d_model)
        self.built = True

    def call(self, inputs, start_index=0):
        length = ops.shape(inputs)[1]
        end = start_index + length
        if keras.backend.backend() == "tensorflow" and not isinstance(
                end, int):
            start_index = _checked_start(start_index, end, self.max_length)
        else:
            end = _concrete_int(end)
            if end is not None and end > self.max_length:
                raise ValueError(
                    f"The sequence reaches position {end}, past "
                    f"`max_length`. Received: max_length={self.max_length}")
        table = ops.convert_to_tensor(self.table, dtype=self.compute_dtype)
        encoding = ops.slice(table, (start_index, 0),
                             (length, self.table.shape[1]))
        return ops.add(inputs, ops.expand_dims(encoding, 0))

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({"max_length": self.max_length})
        return config


def _checked_start(start_index, end, max_length):
    """TensorFlow: `start_index`, checked at run time against `max_length`.
    """
    import tensorflow as tf

    check = tf.debugging.assert_less_equal(
        tf.cast(end, "int32"), max_length,
        message="The sequence reaches past `max_length` of "
                "SinusoidalPositionalEncoding")
    if check is not None:  # in a graph: check before slicing
        with tf.control_dependencies([check]):
            start_index = tf.identity(start_index)
    return start_index


def _concrete_int(value):
    """`value` as an int, or None when it is only known at run time.

    A JAX value traced by `jit` or `lax.while_loop` cannot be checked: an
    XLA slice clamps its start, so there a search must keep `max_length`
    within the table (as `Translator` does); eager values are checked.
    """
    if isinstance(value, int):
        return value
    try:
        return int(ops.convert_to_numpy(value))
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        return None
