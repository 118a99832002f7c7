"""Greedy search: the most probable token at every step."""

from typing import Any

from keras_transformer.decoding import _ops, checks
from keras_transformer.decoding.checks import StepFn
from keras_transformer.decoding.rules import constrain
from keras_transformer.text.special_tokens import END_ID, PAD_ID


def greedy_search(
    step_fn: StepFn,
    initial_ids: Any,
    initial_cache: Any,
    max_length: Any,
    end_id: int = END_ID,
    pad_id: int = PAD_ID,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    output_length: int | None = None,
) -> tuple[Any, Any]:
    """Decodes a batch by taking the most probable token at every step.

    The model is only seen through `step_fn`, which maps the tokens at one
    position to the logits of the next (Section 3 of the paper: the decoder
    is auto-regressive). The search is one while loop over fixed-shape
    loop variables: on TensorFlow a `tf.while_loop`, so it runs eagerly,
    inside `tf.function` (also with `jit_compile=True` when `max_length`
    is a python int) and converts to ONNX; on JAX a `jax.lax.while_loop`
    (`max_length` a python int), jit-compilable; on PyTorch a Python loop.
    It stops as soon as every row has produced `end_id`.

    Args:
        step_fn: callable `step_fn(ids, index, cache) -> (logits, cache)`.
            `ids` is int32 [B], the tokens at position `index` (an int32
            scalar tensor, 0 for `initial_ids`); `logits` is [B, V] in any
            float dtype; `cache` is a nested structure of tensors, each with
            leading dimension B, whose shapes do not change between steps.
        initial_ids: int tensor [B], the first input tokens (usually
            `START_ID`).
        initial_cache: nested structure of tensors [B, ...] given to the
            first step, or None for a model without a cache.
        max_length: int or int32 scalar tensor, the maximum number of
            generated tokens L (see `max_output_length`); off TensorFlow a
            python int or a concrete (not traced) tensor.
        end_id: int, the token that ends a sequence. Defaults to `END_ID`.
        pad_id: int, the token written after the end. Defaults to `PAD_ID`.
        min_length: int >= 0, `end_id` is not chosen before this many
            tokens (see `constrain`). Defaults to 0.
        no_repeat_ngram_size: int >= 0, no n-gram of this size is
            generated twice; 0 disables it. Defaults to 0.
        output_length: int, int32 scalar tensor or None, the width of the
            returned ids, for XLA when `max_length` depends on the data
            (XLA needs widths known at compile time: a python int, or a
            tensor computed from input shapes only): the buffers get this
            width and the search still stops after `max_length` tokens
            (and after `output_length`, if that is smaller); columns past
            the stop hold `pad_id`. Defaults to None: the width is
            `max_length`.

    Returns:
        A pair `(ids, scores)`: `ids` int32 [B, L] (L is `output_length`
        when given), the generated tokens
        without the start token, `end_id` included when produced and
        `pad_id` after it; `scores` float32 [B], the sum of the token
        log-probabilities up to and including `end_id`.

    Example:

    >>> import tensorflow as tf
    >>> logits = tf.math.log([[0.1, 0.1, 0.1, 0.2, 0.5]])
    >>> def step_fn(ids, index, cache):
    ...     return tf.tile(logits, [tf.shape(ids)[0], 1]), cache
    >>> ids, scores = greedy_search(step_fn, [2], {}, max_length=3)
    >>> ids.numpy().tolist()
    [[4, 4, 4]]

    References:
        Vaswani et al., 2017, "Attention Is All You Need", Section 3.
    """
    (initial_ids, initial_cache, max_length, end_id, pad_id, min_length,
     no_repeat) = checks.check_search(
        step_fn, initial_ids, initial_cache, max_length, end_id, pad_id,
        min_length, no_repeat_ngram_size)
    ops = _ops.backend_ops()
    batch_size = ops.dim(initial_ids, 0)
    max_length, width = checks.check_output_length(max_length,
                                                    output_length)

    def cond(index, ids, cache, output, scores, finished):
        del ids, cache, output, scores  # Unused.
        return ops.logical_and(
            index < max_length, ops.logical_not(ops.reduce_all(finished))
        )

    def body(index, ids, cache, output, scores, finished):
        logits, cache = checks.call_step_fn(step_fn, ids, index, cache)
        log_probs = constrain(
            ops.log_softmax(logits), output, index, min_length, no_repeat,
            end_id)  # [B, V]
        next_ids = ops.argmax(log_probs)
        next_log_probs = ops.gather_rows(log_probs, next_ids)  # [B]
        next_ids = ops.where(finished, pad_id, next_ids)
        scores += ops.where(finished, 0.0, next_log_probs)
        output = checks.write_column(output, next_ids, index)
        finished = ops.logical_or(finished, ops.equal(next_ids, end_id))
        return index + 1, next_ids, cache, output, scores, finished

    loop_vars = (
        ops.constant(0, "int32"),
        initial_ids,
        initial_cache,
        ops.fill([batch_size, width], pad_id),  # [B, L]
        ops.zeros([batch_size], "float32"),
        ops.zeros([batch_size], "bool"),
    )
    _, _, _, output, scores, _ = ops.while_loop(cond, body, loop_vars)
    return output, scores
