"""Sinusoidal positional encoding against the paper's formula, and the
split layout (Hugging Face Marian's) against its own."""

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.layers import SinusoidalPositionalEncoding
from keras_transformer.layers.positional import sinusoidal_table
from tests import reference


def test_equals_formula():
    layer = SinusoidalPositionalEncoding(max_length=50)
    zeros = np.zeros((1, 50, 16), "float32")
    np.testing.assert_allclose(layer(zeros)[0],
                               reference.positional_encoding(50, 16),
                               atol=1e-5)


def test_sentinels_interleave_sin_and_cos():
    table = np.asarray(SinusoidalPositionalEncoding(8)(
        np.zeros((1, 8, 4), "float32"))[0])
    np.testing.assert_allclose(table[0], [0.0, 1.0, 0.0, 1.0], atol=1e-7)
    # pos 1: sin(1), cos(1), sin(1/100), cos(1/100) for d_model = 4.
    np.testing.assert_allclose(
        table[1], [np.sin(1), np.cos(1), np.sin(0.01), np.cos(0.01)],
        atol=1e-6)


@pytest.mark.parametrize("start", [0, 3, 17])
def test_offset_equals_slice(start, rng):
    layer = SinusoidalPositionalEncoding(max_length=24)
    inputs = rng.normal(size=(2, 5, 8)).astype("float32")
    full = np.asarray(layer(np.zeros((2, 24, 8), "float32")))
    np.testing.assert_allclose(layer(inputs, start_index=start),
                               inputs + full[:, start:start + 5], atol=1e-6)


def test_offset_as_tensor_inside_tf_function(rng):
    layer = SinusoidalPositionalEncoding(max_length=24)
    inputs = rng.normal(size=(2, 1, 8)).astype("float32")
    step = tf.function(lambda x, i: layer(x, start_index=i))
    np.testing.assert_allclose(step(inputs, tf.constant(4)),
                               layer(inputs, start_index=4), atol=1e-6)


def test_past_max_length_is_a_clear_error():
    layer = SinusoidalPositionalEncoding(max_length=4)
    with pytest.raises(ValueError, match="max_length"):
        layer(np.zeros((1, 5, 8), "float32"))
    with pytest.raises(ValueError, match="max_length"):
        layer(np.zeros((1, 2, 8), "float32"), start_index=3)
    step = tf.function(lambda x, i: layer(x, start_index=i))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_length"):
        step(np.zeros((1, 2, 8), "float32"), tf.constant(3))


@pytest.mark.parametrize("d_model", [7])
def test_odd_d_model_rejected(d_model):
    with pytest.raises(ValueError, match="d_model"):
        SinusoidalPositionalEncoding(4)(np.zeros((1, 2, d_model), "float32"))


def test_max_length_validation():
    with pytest.raises(ValueError, match="`max_length`"):
        SinusoidalPositionalEncoding(max_length=0)


def _split_reference(length, d_model):
    """a(pos, i) = pos / 10000^(2i/d): sin(a) at i, cos(a) at d/2 + i."""
    half = d_model // 2
    pe = np.zeros((length, d_model))
    for pos in range(length):
        for i in range(half):
            angle = pos / 10000 ** (2 * i / d_model)
            pe[pos, i] = np.sin(angle)
            pe[pos, half + i] = np.cos(angle)
    return pe


def test_split_layout_equals_its_formula():
    layer = SinusoidalPositionalEncoding(max_length=50, layout="split")
    zeros = np.zeros((1, 50, 16), "float32")
    np.testing.assert_allclose(layer(zeros)[0], _split_reference(50, 16),
                               atol=1e-5)
    table = sinusoidal_table(50, 16, layout="split")
    assert table.dtype == np.float32
    np.testing.assert_allclose(table, _split_reference(50, 16), atol=1e-6)
    # The paper's features, permuted: sines first, then cosines.
    paper = sinusoidal_table(50, 16)
    np.testing.assert_array_equal(table[:, :8], paper[:, 0::2])
    np.testing.assert_array_equal(table[:, 8:], paper[:, 1::2])
    assert np.abs(table - paper).max() > 0.5


def test_split_sentinels():
    table = sinusoidal_table(8, 4, layout="split")
    # pos 1: sin(1), sin(1/100), cos(1), cos(1/100) for d_model = 4.
    np.testing.assert_allclose(
        table[1], [np.sin(1), np.sin(0.01), np.cos(1), np.cos(0.01)],
        atol=1e-6)


def test_layout_is_configured_and_checked():
    layer = SinusoidalPositionalEncoding(8, layout="split")
    config = layer.get_config()
    assert config["layout"] == "split"
    assert SinusoidalPositionalEncoding.from_config(config).layout == "split"
    # A layer saved before the option reloads with the paper's table.
    del config["layout"]
    assert SinusoidalPositionalEncoding.from_config(
        config).layout == "interleaved"
    with pytest.raises(ValueError, match="`layout`.*concatenated"):
        SinusoidalPositionalEncoding(8, layout="concatenated")
    with pytest.raises(ValueError, match="`layout`"):
        sinusoidal_table(8, 4, layout="concatenated")
