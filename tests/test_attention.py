"""Attention numerics: NumPy formula, Keras' own layer, masks, cache."""

import keras
import numpy as np
import pytest

from keras_transformer.layers import (
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from tests import reference

B, T, S, D, H, K = 2, 4, 6, 12, 3, 4


def _source_mask():
    mask = np.ones((B, T, S), dtype=bool)
    mask[1, :, 4:] = False  # the second source has 2 padding positions
    return mask


@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_numpy(masked, rng):
    q, k, v = (rng.normal(size=shape).astype("float32")
               for shape in [(B, T, H, K), (B, S, H, K), (B, S, H, K)])
    mask = _source_mask() if masked else None
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    ref_out, ref_weights = reference.scaled_dot_product_attention(
        q, k, v, mask)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)
    np.testing.assert_allclose(weights, ref_weights, atol=1e-6)
    if masked:
        assert np.all(keras.ops.convert_to_numpy(weights)[1, :, :, 4:] == 0)


def test_sdpa_sentinel_values():
    # One query, two keys; scores 0 and 2/sqrt(1) -> softmax [1/(1+e^2), ..].
    q = np.ones((1, 1, 1, 1), "float32")
    k = np.array([0.0, 2.0], "float32").reshape(1, 2, 1, 1)
    v = np.array([10.0, 20.0], "float32").reshape(1, 2, 1, 1)
    out, weights = scaled_dot_product_attention(q, k, v)
    w1 = np.exp(2) / (1 + np.exp(2))
    np.testing.assert_allclose(weights[0, 0, 0], [1 - w1, w1], rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0, 0], 10 + 10 * w1, rtol=1e-6)


def _copy_weights(ours, theirs):
    for mine, keras_dense in [
        (ours.query_dense, theirs._query_dense),
        (ours.key_dense, theirs._key_dense),
        (ours.value_dense, theirs._value_dense),
        (ours.output_dense, theirs._output_dense),
    ]:
        mine.set_weights(keras_dense.get_weights())


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal"])
def test_equals_keras_multi_head_attention(mask_kind, rng):
    query = rng.normal(size=(B, T, D)).astype("float32")
    value = rng.normal(size=(B, S if mask_kind != "causal" else T, D))
    value = value.astype("float32")
    theirs = keras.layers.MultiHeadAttention(num_heads=H, key_dim=K)
    ours = MultiHeadAttention(num_heads=H, key_dim=K)
    theirs(query, value)
    ours(query, value)
    _copy_weights(ours, theirs)
    kwargs = {}
    if mask_kind == "padding":
        kwargs["attention_mask"] = _source_mask()
    if mask_kind == "causal":
        kwargs["use_causal_mask"] = True
    expected = theirs(query, value, **kwargs)
    got = ours(query, value, **kwargs)
    assert np.abs(np.asarray(got) - np.asarray(expected)).max() <= 1e-5


def test_equals_numpy_multi_head_attention(rng):
    query = rng.normal(size=(B, T, D)).astype("float32")
    value = rng.normal(size=(B, S, D)).astype("float32")
    layer = MultiHeadAttention(num_heads=H, key_dim=K)
    layer(query, value)
    weights = dict(zip(["query", "qb", "key", "kb", "value", "vb", "out",
                        "ob"], [np.asarray(w) for w in layer.get_weights()]))
    expected = reference.multi_head_attention(query, value, weights,
                                              _source_mask())
    got = layer(query, value, attention_mask=_source_mask())
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_two_dimensional_mask_broadcasts(rng):
    x = rng.normal(size=(B, T, D)).astype("float32")
    layer = MultiHeadAttention(num_heads=H, key_dim=K)
    causal = np.tril(np.ones((T, T), bool))
    full = np.broadcast_to(causal, (B, T, T))
    np.testing.assert_allclose(layer(x, x, attention_mask=causal),
                               layer(x, x, attention_mask=full), atol=1e-6)
    np.testing.assert_allclose(layer(x, x, use_causal_mask=True),
                               layer(x, x, attention_mask=full), atol=1e-6)


def test_return_attention_scores(rng):
    x = rng.normal(size=(B, T, D)).astype("float32")
    layer = MultiHeadAttention(num_heads=H, key_dim=K)
    out, weights = layer(x, x, use_causal_mask=True,
                         return_attention_scores=True)
    weights = np.asarray(weights)
    assert weights.shape == (B, H, T, T)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert np.all(np.triu(weights[0, 0], k=1) == 0)


def test_decode_step_equals_causal_call(rng):
    x = rng.normal(size=(B, T, D)).astype("float32")
    layer = MultiHeadAttention(num_heads=H, key_dim=K)
    expected = np.asarray(layer(x, x, use_causal_mask=True))
    cache = layer.initial_cache(B, T + 3)
    assert tuple(cache["key"].shape) == (B, H, T + 3, K)  # head-major
    for index in range(T):
        out, cache = layer.decode_step(x[:, index:index + 1], index, cache)
        np.testing.assert_allclose(out[:, 0], expected[:, index], atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_masked_keys_get_no_weight_in_low_precision(policy, rng):
    keras.config.set_dtype_policy(policy)
    x = (100 * rng.normal(size=(B, T, D))).astype("float32")
    layer = MultiHeadAttention(num_heads=H, key_dim=K)
    mask = np.ones((B, T, T), bool)
    mask[:, :, -1] = False
    out, weights = layer(x, x, attention_mask=mask,
                         return_attention_scores=True)
    weights = keras.ops.convert_to_numpy(
        keras.ops.cast(weights, "float32"))
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(
        keras.ops.cast(out, "float32"))))
    assert np.all(weights[..., -1] == 0)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_heads=0, key_dim=4), "num_heads"),
    (dict(num_heads=2, key_dim=-1), "key_dim"),
    (dict(num_heads=2.0, key_dim=4), "num_heads"),
    (dict(num_heads=2, key_dim=4, dropout_rate=1.0), "dropout_rate"),
])
def test_validation(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=f"`{name}`"):
        MultiHeadAttention(**kwargs)
