"""Constants, argument checks and tensor helpers shared by the searches."""

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from keras_transformer.checks import check_float, check_int, is_int
from keras_transformer.inference import (  # noqa: F401 (re-exported)
    DEFAULT_BEAM_SIZE,
    DEFAULT_EXTRA_LENGTH,
    DEFAULT_LENGTH_PENALTY,
)
from keras_transformer.text.special_tokens import (  # noqa: F401
    END_ID,
    PAD_ID,
    START_ID,
)

# GNMT length penalty lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha, Wu et al.
# (2016), equation 14.
LENGTH_PENALTY_OFFSET = 5.0
LENGTH_PENALTY_DIVISOR = LENGTH_PENALTY_OFFSET + 1.0

NEG_INF = float("-inf")

StepFn = Callable[[tf.Tensor, tf.Tensor, Any], tuple[tf.Tensor, Any]]


def check_token_ids(end_id: Any, pad_id: Any) -> tuple[int, int]:
    """Checks `end_id` and `pad_id`: distinct non-negative python ints."""
    end_id = check_int("end_id", end_id, 0)
    pad_id = check_int("pad_id", pad_id, 0)
    if end_id == pad_id:
        raise ValueError(
            "`end_id` and `pad_id` must differ, or an ended sequence could "
            f"not be told from its padding. Received: end_id={end_id}, "
            f"pad_id={pad_id}"
        )
    return end_id, pad_id


def check_step_fn(step_fn: Any) -> None:
    if not callable(step_fn):
        raise TypeError(
            "`step_fn` must be callable as step_fn(ids, index, cache) -> "
            f"(logits, cache). Received: step_fn={step_fn!r}"
        )


def check_max_length(max_length: Any) -> int | tf.Tensor:
    """Returns `max_length` as a python int or an int32 scalar tensor."""
    if is_int(max_length):
        return check_int("max_length", max_length, 1)
    if not isinstance(max_length, (tf.Tensor, tf.Variable, np.ndarray)):
        raise TypeError(
            "`max_length` must be a python int or an integer scalar tensor. "
            f"Received: max_length={max_length!r}"
        )
    max_length = tf.convert_to_tensor(max_length)
    if not max_length.dtype.is_integer:
        raise TypeError(
            "`max_length` must have an integer dtype. "
            f"Received: max_length={max_length!r}"
        )
    if max_length.shape.rank not in (None, 0):
        raise ValueError(
            "`max_length` must be a scalar. "
            f"Received: max_length with shape {max_length.shape}"
        )
    value = tf.get_static_value(max_length)
    if value is not None and value < 1:
        raise ValueError(
            f"`max_length` must be >= 1. Received: max_length={value}"
        )
    return tf.cast(max_length, tf.int32)


def check_length_penalty(length_penalty: Any) -> float:
    """Checks the GNMT exponent alpha: a finite python number >= 0."""
    return check_float("length_penalty", length_penalty, 0.0)


def check_initial_ids(initial_ids: Any) -> tf.Tensor:
    """Returns `initial_ids` as an int32 tensor of shape [B]."""
    initial_ids = tf.convert_to_tensor(initial_ids)
    if not initial_ids.dtype.is_integer:
        raise TypeError(
            "`initial_ids` must have an integer dtype. "
            f"Received: initial_ids.dtype={initial_ids.dtype.name}"
        )
    if initial_ids.shape.rank not in (None, 1):
        raise ValueError(
            "`initial_ids` must have shape [batch]. "
            f"Received: initial_ids.shape={initial_ids.shape}"
        )
    return tf.cast(initial_ids, tf.int32)


def check_cache(initial_cache: Any, initial_ids: tf.Tensor) -> Any:
    """Converts the cache leaves to tensors and checks their batch dimension."""
    if initial_cache is None:
        return {}
    cache = tf.nest.map_structure(tf.convert_to_tensor, initial_cache)
    batch_size = initial_ids.shape[0]
    for path, leaf in _leaves_with_paths(cache):
        if leaf.shape.rank in (None, 0):
            raise ValueError(
                "Every `initial_cache` tensor must have a known rank and the "
                f"batch as its leading dimension. Received: "
                f"initial_cache{path} with shape {leaf.shape}"
            )
        leading = leaf.shape[0]
        if None not in (leading, batch_size) and leading != batch_size:
            raise ValueError(
                "Every `initial_cache` tensor must have the batch size of "
                f"`initial_ids` ({batch_size}) as its leading dimension. "
                f"Received: initial_cache{path} with shape {leaf.shape}"
            )
    return cache


def _leaves_with_paths(structure: Any) -> list[tuple[str, tf.Tensor]]:
    """Pairs each leaf, in `tf.nest.flatten` order, with its key path."""
    leaves = tf.nest.flatten(structure)
    paths = list(_paths(structure))
    if len(paths) != len(leaves):  # A structure type this walk ignores.
        paths = [f"[#{i}]" for i in range(len(leaves))]
    return list(zip(paths, leaves))


def _paths(structure: Any, prefix: str = ""):
    if isinstance(structure, dict):
        for key in sorted(structure):  # tf.nest's order for dicts.
            yield from _paths(structure[key], f"{prefix}[{key!r}]")
    elif isinstance(structure, (list, tuple)):
        for i, item in enumerate(structure):
            yield from _paths(item, f"{prefix}[{i}]")
    else:
        yield prefix


def _describe(structure: Any) -> str:
    return "{" + ", ".join(
        f"cache{path}" for path in _paths(structure)) + "}"


def call_step_fn(
    step_fn: StepFn, ids: tf.Tensor, index: tf.Tensor, cache: Any
) -> tuple[tf.Tensor, Any]:
    """Runs one step; returns float32 logits [B, V] and the checked cache."""
    outputs = step_fn(ids, index, cache)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
        raise TypeError(
            "`step_fn` must return a pair (logits, cache). "
            f"Received: {type(outputs).__name__} from step_fn={step_fn!r}"
        )
    logits, new_cache = outputs
    logits = tf.convert_to_tensor(logits)
    if not logits.dtype.is_floating:
        raise TypeError(
            "`step_fn` must return floating point logits. "
            f"Received: logits.dtype={logits.dtype.name}"
        )
    if logits.shape.rank not in (None, 2) or not logits.shape[:1] \
            .is_compatible_with(ids.shape[:1]):
        raise ValueError(
            "`step_fn` must return logits of shape [batch, vocab] for ids "
            f"of shape {ids.shape}. Received: logits.shape={logits.shape}"
        )
    try:
        tf.nest.assert_same_structure(cache, new_cache, check_types=False)
        same_keys = list(_paths(cache)) == list(_paths(new_cache))
    except (ValueError, TypeError):
        same_keys = False
    if not same_keys:
        raise ValueError(
            "`step_fn` must return a cache with the structure of "
            f"`initial_cache`. Received: {_describe(new_cache)} for "
            f"{_describe(cache)}"
        )
    new_leaves = [tf.convert_to_tensor(x) for x in tf.nest.flatten(new_cache)]
    for (path, old), new in zip(_leaves_with_paths(cache), new_leaves):
        if new.dtype != old.dtype or not new.shape.is_compatible_with(
            old.shape
        ):
            raise ValueError(
                "`step_fn` must return cache tensors of fixed shape and "
                f"dtype. Received: cache{path} with shape {new.shape} and "
                f"dtype {new.dtype.name}, expected shape {old.shape} and "
                f"dtype {old.dtype.name}"
            )
        # Keeps static shapes from the loop variables, as tf.while_loop needs.
        new.set_shape(old.shape)
    # Mixed precision models return float16 logits: normalise in float32.
    logits = tf.cast(logits, tf.float32)
    return logits, tf.nest.pack_sequence_as(cache, new_leaves)


def write_column(
    buffer: tf.Tensor, values: tf.Tensor, index: tf.Tensor
) -> tf.Tensor:
    """Writes `values` [...] into column `index` of `buffer` [..., L]."""
    length = tf.shape(buffer)[-1]
    column = tf.equal(tf.range(length), index)  # [L]
    return tf.where(column, values[..., tf.newaxis], buffer)


def check_constraints(min_length: Any, no_repeat_ngram_size: Any
                      ) -> tuple[int, int]:
    """Checks `min_length` and `no_repeat_ngram_size`: python ints >= 0."""
    return (check_int("min_length", min_length, 0),
            check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0))


def constrain(
    log_probs: tf.Tensor,
    sequences: tf.Tensor,
    index: tf.Tensor,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    end_id: int = END_ID,
) -> tf.Tensor:
    """Sets the log-probabilities of forbidden next tokens to -inf.

    Two rules, applied to the token chosen at output position `index` (the
    number of tokens generated so far):

    - `min_length` m: `end_id` is forbidden while fewer than m tokens have
      been generated, so an output has at least m tokens before `end_id`
      (when the maximum length allows it).
    - `no_repeat_ngram_size` n: a token is forbidden if, appended to the
      generated tokens, it would repeat an n-gram already in them (the
      start token is not counted; it never repeats).

    With both 0 (the translation default) no operation is added to the
    graph. The allowed tokens keep the model's log-probabilities (no
    renormalization), so scores stay those of the model.

    Args:
        log_probs: float32 [N, V], one row per hypothesis.
        sequences: int32 [N, L], the generated tokens; columns from `index`
            on are ignored.
        index: int32 scalar tensor, the position being generated.
        min_length: int >= 0.
        no_repeat_ngram_size: int >= 0; 0 disables the rule.
        end_id: int, the token that ends a sequence.

    Returns:
        float32 [N, V].

    Example:

    >>> import tensorflow as tf
    >>> log_probs = tf.zeros([1, 5])
    >>> seq = tf.constant([[4, 1, 4, 0]])
    >>> out = constrain(log_probs, seq, tf.constant(3), no_repeat_ngram_size=2)
    >>> out.numpy().tolist()  # 4 then 1 was seen: 1 is forbidden after 4
    [[0.0, -inf, 0.0, 0.0, 0.0]]
    """
    vocab_size = tf.shape(log_probs)[-1]
    if min_length > 0:
        is_end = tf.equal(tf.range(vocab_size), end_id)  # [V]
        log_probs = tf.where(
            tf.logical_and(index < min_length, is_end), NEG_INF, log_probs)
    if no_repeat_ngram_size > 0:
        banned = _repeated_ngram_tokens(sequences, index,
                                        no_repeat_ngram_size, vocab_size)
        log_probs = tf.where(banned, NEG_INF, log_probs)
    return log_probs


def _repeated_ngram_tokens(sequences, index, n, vocab_size):
    """bool [N, V]: tokens that would complete an n-gram seen before.

    The last n - 1 generated tokens are compared with every earlier window
    of n - 1 tokens; the token after each matching window is banned. Bans
    are written with one scatter into a [N, V + 1] table whose extra
    column takes the non-matching windows, so every update is the same
    value and duplicates are harmless (ONNX ScatterND included).
    """
    rows = tf.shape(sequences)[0]
    length = tf.shape(sequences)[1]
    context = n - 1
    # The last n - 1 tokens; clamped positions only occur when index < n,
    # where no window is valid anyway.
    last = tf.gather(sequences, tf.maximum(
        index - context + tf.range(context), 0), axis=1)  # [N, n - 1]
    padded = tf.pad(sequences, [[0, 0], [0, n]], constant_values=-1)
    match = tf.ones([rows, length], tf.bool)
    for offset in range(context):
        match = tf.logical_and(match, tf.equal(
            padded[:, offset:offset + length], last[:, offset:offset + 1]))
    # A window starting at j is complete (its next token generated) when
    # j + n - 1 < index.
    match = tf.logical_and(match, tf.range(length)[tf.newaxis] <= index - n)
    following = padded[:, context:context + length]  # [N, L]
    columns = tf.where(match, following, vocab_size)
    row_ids = tf.broadcast_to(tf.range(rows)[:, tf.newaxis], [rows, length])
    indices = tf.reshape(tf.stack([row_ids, columns], axis=-1), [-1, 2])
    table = tf.tensor_scatter_nd_update(
        tf.zeros([rows, vocab_size + 1], tf.bool), indices,
        tf.ones([rows * length], tf.bool))
    return table[:, :vocab_size]


def gnmt_length_penalty(length: Any, alpha: float) -> tf.Tensor:
    """Returns lp(length) = ((5 + length) / 6) ** alpha as float32.

    Args:
        length: int or tensor, number of generated tokens (END included).
        alpha: float, the exponent; 0 disables the penalty.

    Returns:
        A float32 tensor with the shape of `length`.

    References:
        Wu et al., 2016, "Google's Neural Machine Translation System",
        equation 14.
    """
    length = tf.cast(length, tf.float32)
    return tf.pow((LENGTH_PENALTY_OFFSET + length) / LENGTH_PENALTY_DIVISOR,
                  alpha)


def max_output_length(
    source_lengths: Any,
    extra: int = DEFAULT_EXTRA_LENGTH,
    limit: int | None = None,
) -> tf.Tensor:
    """Returns the paper's maximum output length for a batch.

    Section 6.1 of the paper: "We set the maximum output length during
    inference to input length + 50, but terminate early when possible."
    The batch shares one loop, so this is the longest source plus `extra`,
    optionally capped at `limit`, and at least 1.

    Args:
        source_lengths: int tensor [B], the number of non-padding source
            tokens of each row.
        extra: int >= 0, tokens allowed beyond the source length. Defaults
            to 50, as in the paper.
        limit: int >= 1 or None, an upper bound (for example the size of
            the model's cache or positional table). Defaults to None.

    Returns:
        An int32 scalar tensor, to pass as `max_length`.

    Example:

    >>> int(max_output_length([3, 7]))
    57
    >>> int(max_output_length([3, 7], extra=50, limit=20))
    20
    """
    extra = check_int("extra", extra, 0)
    if limit is not None:
        limit = check_int("limit", limit, 1)
    source_lengths = tf.convert_to_tensor(source_lengths)
    if not source_lengths.dtype.is_integer:
        raise TypeError(
            "`source_lengths` must have an integer dtype. "
            f"Received: source_lengths.dtype={source_lengths.dtype.name}"
        )
    if source_lengths.shape.rank not in (None, 1):
        raise ValueError(
            "`source_lengths` must have shape [batch]. "
            f"Received: source_lengths.shape={source_lengths.shape}"
        )
    # The maximum of an empty batch is the dtype's minimum: clip it to 0.
    longest = tf.maximum(tf.reduce_max(tf.cast(source_lengths, tf.int32)), 0)
    length = longest + extra
    if limit is not None:
        length = tf.minimum(length, limit)
    return tf.maximum(length, 1)
