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
