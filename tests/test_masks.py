"""Mask helpers: True means "may attend"."""

import numpy as np

from keras_transformer import masks


def test_padding_mask():
    np.testing.assert_array_equal(
        masks.padding_mask(np.array([[5, 3, 0, 0], [1, 0, 2, 0]])),
        [[True, True, False, False], [True, False, True, False]])


def test_causal_mask():
    np.testing.assert_array_equal(masks.causal_mask(3), np.tril(
        np.ones((3, 3), bool)))
    np.testing.assert_array_equal(
        masks.causal_mask(1, 4, offset=2), [[True, True, True, False]])


def test_attention_mask_combines_padding_and_causal():
    query = np.array([[7, 8, 0]])
    key = np.array([[7, 8, 0]])
    expected = np.array([[[1, 0, 0], [1, 1, 0], [1, 1, 0]]], bool)
    np.testing.assert_array_equal(
        masks.attention_mask(query, key, causal=True), expected)
    np.testing.assert_array_equal(
        masks.attention_mask(query, key),
        np.array([[[1, 1, 0]] * 3], bool))


def test_combine_masks_ignores_none():
    a = np.array([True, False, True])
    b = np.array([True, True, False])
    np.testing.assert_array_equal(masks.combine_masks(a, None, b),
                                  [True, False, False])
    assert masks.combine_masks(None, None) is None


def test_attention_bias_hides_exactly_as_replacing_the_scores():
    from keras import ops

    from keras_transformer.masks import HIDDEN_BIAS, attention_bias

    mask = np.array([[True, False, True], [False, False, False]])
    bias = ops.convert_to_numpy(attention_bias(mask))
    np.testing.assert_array_equal(
        bias, [[0.0, HIDDEN_BIAS, 0.0], [HIDDEN_BIAS] * 3])
    assert bias.dtype == np.float32
    scores = np.array([[2.5, 40.0, -3.0], [1.0, -7.0, 30.0]], np.float32)
    added = ops.convert_to_numpy(ops.softmax(scores + bias, axis=-1))
    replaced = ops.convert_to_numpy(ops.softmax(
        np.where(mask, scores, HIDDEN_BIAS), axis=-1))
    # Hidden keys get weight 0 exactly; a fully hidden row stays uniform.
    np.testing.assert_array_equal(added, replaced)
    np.testing.assert_array_equal(added[1], np.float32([1 / 3] * 3))
