"""Boolean attention masks. True means "may attend"; the pad id is 0.

Shapes: padding masks (B, S); attention masks (B, T, S), where a (T, S) mask
broadcasts over the batch. `attention_bias` turns a mask into the additive
float32 form the attention adds to its scores.
"""

import numpy as np
from keras import ops

from keras_transformer.text.special_tokens import PAD_ID


def padding_mask(ids, pad_id: int = PAD_ID):
    """Returns (B, S) bool, True at real tokens of int ids (B, S)."""
    return ops.not_equal(ids, pad_id)


def causal_mask(query_length, key_length=None, offset=0):
    """Returns (T, S) bool, True where key position <= offset + query position.

    `offset` is the absolute position of the first query, for a cached
    decoder that feeds one step at a time.
    """
    key_length = query_length if key_length is None else key_length
    rows = ops.expand_dims(ops.arange(query_length, dtype="int32") + offset, 1)
    cols = ops.expand_dims(ops.arange(key_length, dtype="int32"), 0)
    return ops.greater_equal(rows, cols)


def attention_mask(query_ids, key_ids, causal: bool = False,
                   pad_id: int = PAD_ID):
    """Returns (B, T, S) bool: keys that are not padding (and not future)."""
    mask = ops.expand_dims(padding_mask(key_ids, pad_id), 1)  # (B, 1, S)
    mask = ops.broadcast_to(
        mask, (ops.shape(key_ids)[0], ops.shape(query_ids)[1],
               ops.shape(key_ids)[1])
    )
    if causal:
        mask = combine_masks(
            mask, causal_mask(ops.shape(query_ids)[1], ops.shape(key_ids)[1])
        )
    return mask


def combine_masks(*masks):
    """Logical AND of the masks that are not None (broadcasting)."""
    result = None
    for mask in masks:
        if mask is None:
            continue
        mask = ops.cast(mask, "bool")
        result = mask if result is None else ops.logical_and(result, mask)
    return result


# The bias of a hidden key: the float32 minimum. Added to a score (which is
# far smaller than its spacing, 2e31) it gives the minimum again, so the
# softmax gives the key weight 0 exactly, as replacing the score would; a
# row with every key hidden stays finite (uniform) instead of NaN.
HIDDEN_BIAS = float(np.finfo(np.float32).min)


def attention_bias(mask):
    """Returns float32 0 where `mask` is True, `HIDDEN_BIAS` where False.

    Same shape as the bool `mask`. A decoder step computes one bias and
    shares it across its layers instead of masking in every layer.
    """
    return ops.where(cast_mask(mask), 0.0, HIDDEN_BIAS)


def cast_mask(mask):
    """Returns `mask` as a bool tensor (None stays None)."""
    return None if mask is None else ops.cast(mask, "bool")


__all__ = [
    "PAD_ID", "padding_mask", "causal_mask", "attention_mask",
    "combine_masks", "cast_mask", "attention_bias", "HIDDEN_BIAS",
]
