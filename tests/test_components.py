"""Embedding, feed-forward and residual blocks against NumPy formulas."""

import keras
import numpy as np
import pytest

from keras_transformer.layers import (
    Encoder,
    EncoderLayer,
    PositionwiseFeedForward,
    ResidualNorm,
    TokenEmbedding,
)
from tests import reference


def test_embedding_scaled_by_sqrt_d_model():
    layer = TokenEmbedding(vocabulary_size=10, d_model=16)
    ids = np.array([[3, 0, 9]], "int32")
    table = np.asarray(layer.embeddings if layer.built else
                       (layer(ids), layer.embeddings)[1])
    np.testing.assert_allclose(layer(ids)[0], table[[3, 0, 9]] * 4.0,
                               rtol=1e-6)


def test_embedding_reverse_is_tied_projection(rng):
    layer = TokenEmbedding(vocabulary_size=10, d_model=16)
    layer(np.array([[1]], "int32"))
    x = rng.normal(size=(2, 3, 16)).astype("float32")
    np.testing.assert_allclose(layer(x, reverse=True),
                               x @ np.asarray(layer.embeddings).T, atol=1e-5)


def test_embedding_keras_mask():
    layer = TokenEmbedding(vocabulary_size=10, d_model=4, mask_zero=True)
    np.testing.assert_array_equal(
        layer.compute_mask(np.array([[5, 0]])), [[True, False]])


def test_feed_forward_equals_numpy(rng):
    layer = PositionwiseFeedForward(d_ff=32)
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    layer(x)
    w1, b1, w2, b2 = (np.asarray(w) for w in layer.get_weights())
    np.testing.assert_allclose(layer(x), reference.feed_forward(
        x, w1, b1, w2, b2), atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_residual_norm_equals_numpy(norm_first, rng):
    block = ResidualNorm(dropout_rate=0.5, norm_first=norm_first)
    x, y = (rng.normal(size=(2, 3, 8)).astype("float32") for _ in range(2))
    out = np.asarray(block(x, y, training=False))  # no dropout at inference
    gamma, beta = (np.asarray(w) for w in block.get_weights())
    if norm_first:
        np.testing.assert_allclose(out, x + y, atol=1e-6)
        np.testing.assert_allclose(
            block.normalize_input(x),
            reference.layer_norm(x, gamma, beta, 1e-6), atol=1e-5)
    else:
        np.testing.assert_allclose(
            out, reference.layer_norm(x + y, gamma, beta, 1e-6), atol=1e-5)
        np.testing.assert_allclose(block.normalize_input(x), x)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_residual_norm_equals_keras_layer_norm(policy, rng):
    # Our written-out LayerNorm against Keras' own layer, same weights.
    keras.config.set_dtype_policy(policy)
    block = ResidualNorm(dropout_rate=0.0, epsilon=1e-6)
    x, y = (3 * rng.normal(size=(2, 5, 16)).astype("float32") + 1
            for _ in range(2))
    block(x, y)
    gamma, beta = (rng.normal(size=16).astype("float32") for _ in range(2))
    block.set_weights([gamma, beta])
    keras_norm = keras.layers.LayerNormalization(epsilon=1e-6)
    keras_norm.build((2, 5, 16))
    keras_norm.set_weights([gamma, beta])
    out = block(x, y)
    expected = keras_norm(x + y)
    assert out.dtype == expected.dtype
    tolerance = 1e-5 if policy == "float32" else 1e-2
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(expected, "float32")),
        atol=tolerance)


def test_residual_dropout_only_in_training(rng):
    block = ResidualNorm(dropout_rate=0.5, norm_first=True)
    x = np.zeros((2, 3, 64), "float32")
    y = np.ones((2, 3, 64), "float32")
    dropped = np.asarray(block(x, y, training=True))
    assert 0 < (dropped == 0).mean() < 1  # some, not all, dropped


def test_encoder_padding_keys_ignored(rng):
    layer = EncoderLayer(num_heads=2, d_ff=16, dropout_rate=0.0)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    mask = np.array([[True, True, True, False, False]])
    changed = x.copy()
    changed[:, 3:] = rng.normal(size=(1, 2, 8))
    np.testing.assert_allclose(layer(x, padding_mask=mask)[:, :3],
                               layer(changed, padding_mask=mask)[:, :3],
                               atol=1e-5)


def test_pre_norm_stack_has_final_norm():
    encoder = Encoder(num_layers=2, num_heads=2, d_ff=8, norm_first=True)
    encoder(np.zeros((1, 3, 8), "float32"))
    assert encoder.final_norm is not None
    post_norm = Encoder(num_layers=1, num_heads=2, d_ff=8)
    post_norm.build((1, 3, 8))
    assert post_norm.final_norm is None


@pytest.mark.parametrize("cls, kwargs, name", [
    (TokenEmbedding, dict(vocabulary_size=0, d_model=4), "vocabulary_size"),
    (TokenEmbedding, dict(vocabulary_size=4, d_model="8"), "d_model"),
    (PositionwiseFeedForward, dict(d_ff=0), "d_ff"),
    (PositionwiseFeedForward, dict(activation="tanh"), "activation"),
    (PositionwiseFeedForward, dict(dropout_rate=-0.1), "dropout_rate"),
    (ResidualNorm, dict(dropout_rate=1.5), "dropout_rate"),
    (ResidualNorm, dict(norm_first="yes"), "norm_first"),
    (ResidualNorm, dict(epsilon=0.0), "epsilon"),
    (Encoder, dict(num_layers=0), "num_layers"),
    (EncoderLayer, dict(num_heads=0), "num_heads"),
    (EncoderLayer, dict(attention_dropout_rate=1.0),
     "attention_dropout_rate"),
])
def test_validation(cls, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=f"`{name}`"):
        cls(**kwargs)


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match="`d_model`.*`num_heads`.*"
                                         "d_model=10, num_heads=4"):
        EncoderLayer(num_heads=4, d_ff=8)(np.zeros((1, 2, 10), "float32"))
