"""Sinusoidal positional encoding (paper section 3.5)."""

import keras
import numpy as np
from keras import ops

from keras_transformer.checks import check_choice, check_positive_int

LAYOUTS = ("interleaved", "split")


def sinusoidal_table(max_length: int, d_model: int,
                     layout: str = "interleaved") -> np.ndarray:
    """The paper's encoding as a float32 array (max_length, d_model).

    With angles a(pos, i) = pos / 10000^(2i / d_model), i < d_model / 2:
    "interleaved" (the paper) is PE(pos, 2i) = sin(a(pos, i)) and
    PE(pos, 2i + 1) = cos(a(pos, i)); "split" (Hugging Face's Marian
    models) puts the d_model / 2 sines first and the cosines after them,
    PE(pos, i) = sin(a(pos, i)) and PE(pos, d_model / 2 + i) =
    cos(a(pos, i)): the same features, permuted.
    """
    check_choice("layout", layout, LAYOUTS)
    positions = np.arange(max_length, dtype=np.float64)[:, None]
    even = np.arange(0, d_model, 2, dtype=np.float64)[None, :]
    angles = positions / np.power(10000.0, even / d_model)
    if layout == "split":
        table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
        return table.astype(np.float32)
    table = np.zeros((max_length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table.astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_transformer")
class SinusoidalPositionalEncoding(keras.layers.Layer):
    """Adds the fixed sinusoidal positional encoding to its inputs (§3.5).

    The encoding has no weights; it is a constant table of `max_length`
    rows computed once at build time (`sinusoidal_table`). Keras masks
    pass through unchanged.

    Args:
        max_length: int, the number of positions covered. A sequence that
            reaches past it raises an error naming `max_length`.
        layout: str, the order of the sine and cosine features:
            "interleaved" (the paper's PE(pos, 2i) = sin,
            PE(pos, 2i + 1) = cos; the default) or "split" (all sines,
            then all cosines, as Hugging Face's Marian models; for
            imported checkpoints).

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

    def __init__(self, max_length=256, layout="interleaved", **kwargs):
        check_positive_int("max_length", max_length)
        check_choice("layout", layout, LAYOUTS)
        super().__init__(**kwargs)
        self.max_length = max_length
        self.layout = layout
        self.supports_masking = True

    def build(self, inputs_shape):
        d_model = inputs_shape[-1]
        if d_model is None or d_model % 2:
            raise ValueError(
                "The last dimension of the inputs (d_model) must be a known "
                f"even number. Received: d_model={d_model}")
        self.table = sinusoidal_table(self.max_length, d_model, self.layout)
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
        config.update({"max_length": self.max_length,
                       "layout": self.layout})
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
