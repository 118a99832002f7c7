"""Constants, argument checks and tensor helpers shared by the searches.

Tensor work goes through `_ops.backend_ops()` (see `_ops`), so the same
code runs on Keras' TensorFlow, JAX and PyTorch backends.
"""

from collections.abc import Callable
from typing import Any

import keras

from keras_transformer.checks import check_float, check_int, is_int
from keras_transformer.contract import (  # noqa: F401 (re-exported)
    DEFAULT_BEAM_SIZE,
    DEFAULT_EXTRA_LENGTH,
    DEFAULT_LENGTH_PENALTY,
    LENGTH_PENALTY_DIVISOR,
    LENGTH_PENALTY_OFFSET,
)
from keras_transformer.decoding import _ops
from keras_transformer.text.special_tokens import (  # noqa: F401
    END_ID,
    PAD_ID,
    START_ID,
)

NEG_INF = float("-inf")

# Tensors of the running Keras backend (tf.Tensor, jax.Array, torch.Tensor).
StepFn = Callable[[Any, Any, Any], tuple[Any, Any]]


def _dtype(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def _is_integer(x) -> bool:
    return _dtype(x).startswith(("int", "uint"))


def _is_floating(x) -> bool:
    return _dtype(x).startswith(("float", "bfloat"))


def _rank(shape) -> int | None:
    return None if shape is None else len(shape)


def _compatible(a, b) -> bool:
    """Whether two static shapes (tuples, or None for unknown) can agree."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b))


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


def check_max_length(max_length: Any) -> Any:
    """Returns `max_length` as a python int or an int32 scalar tensor.

    Off TensorFlow the buffers of the search need a static length, so a
    tensor is read into a python int (a traced JAX value is an error).
    """
    if is_int(max_length):
        return check_int("max_length", max_length, 1)
    ops = _ops.backend_ops()
    try:
        max_length = ops.convert(max_length)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "`max_length` must be a python int or an integer scalar tensor. "
            f"Received: max_length={max_length!r}") from error
    if not _is_integer(max_length):
        raise TypeError(
            "`max_length` must have an integer dtype. "
            f"Received: max_length={max_length!r}"
        )
    shape = ops.static_shape(max_length)
    if _rank(shape) not in (None, 0):
        raise ValueError(
            "`max_length` must be a scalar. "
            f"Received: max_length with shape {shape}"
        )
    value = ops.static_value(max_length)
    if value is not None and value < 1:
        raise ValueError(
            f"`max_length` must be >= 1. Received: max_length={value}"
        )
    if ops is _ops.TensorFlowOps:
        return ops.cast(max_length, "int32")
    if value is None:
        raise TypeError(
            "`max_length` must be a python int (or a concrete tensor) on "
            f"the {keras.backend.backend()} backend, where the search's "
            f"buffers have static shapes. Received: max_length={max_length}")
    return int(value)


def check_length_penalty(length_penalty: Any) -> float:
    """Checks the GNMT exponent alpha: a finite python number >= 0."""
    return check_float("length_penalty", length_penalty, 0.0)


def check_initial_ids(initial_ids: Any) -> Any:
    """Returns `initial_ids` as an int32 tensor of shape [B]."""
    ops = _ops.backend_ops()
    initial_ids = ops.convert(initial_ids)
    if not _is_integer(initial_ids):
        raise TypeError(
            "`initial_ids` must have an integer dtype. "
            f"Received: initial_ids.dtype={_dtype(initial_ids)}"
        )
    shape = ops.static_shape(initial_ids)
    if _rank(shape) not in (None, 1):
        raise ValueError(
            "`initial_ids` must have shape [batch]. "
            f"Received: initial_ids.shape={initial_ids.shape}"
        )
    return ops.cast(initial_ids, "int32")


def check_cache(initial_cache: Any, initial_ids: Any) -> Any:
    """Converts the cache leaves to tensors and checks their batch dimension."""
    if initial_cache is None:
        return {}
    ops = _ops.backend_ops()
    cache = ops.map_structure(ops.convert, initial_cache)
    batch_size = initial_ids.shape[0]
    for path, leaf in _leaves_with_paths(cache):
        shape = ops.static_shape(leaf)
        if _rank(shape) in (None, 0):
            raise ValueError(
                "Every `initial_cache` tensor must have a known rank and the "
                f"batch as its leading dimension. Received: "
                f"initial_cache{path} with shape {leaf.shape}"
            )
        leading = shape[0]
        if None not in (leading, batch_size) and leading != batch_size:
            raise ValueError(
                "Every `initial_cache` tensor must have the batch size of "
                f"`initial_ids` ({batch_size}) as its leading dimension. "
                f"Received: initial_cache{path} with shape {leaf.shape}"
            )
    return cache


def _leaves_with_paths(structure: Any) -> list[tuple[str, Any]]:
    """Pairs each leaf, in flattening order, with its key path."""
    leaves = _ops.backend_ops().flatten(structure)
    paths = list(_paths(structure))
    if len(paths) != len(leaves):  # A structure type this walk ignores.
        paths = [f"[#{i}]" for i in range(len(leaves))]
    return list(zip(paths, leaves))


def _paths(structure: Any, prefix: str = ""):
    if isinstance(structure, dict):
        for key in sorted(structure):  # The flattening order of dicts.
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
    step_fn: StepFn, ids: Any, index: Any, cache: Any
) -> tuple[Any, Any]:
    """Runs one step; returns float32 logits [B, V] and the checked cache."""
    ops = _ops.backend_ops()
    outputs = step_fn(ids, index, cache)
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
        raise TypeError(
            "`step_fn` must return a pair (logits, cache). "
            f"Received: {type(outputs).__name__} from step_fn={step_fn!r}"
        )
    logits, new_cache = outputs
    logits = ops.convert(logits)
    if not _is_floating(logits):
        raise TypeError(
            "`step_fn` must return floating point logits. "
            f"Received: logits.dtype={_dtype(logits)}"
        )
    shape = ops.static_shape(logits)
    if _rank(shape) not in (None, 2) or (
            shape is not None and not _compatible(
                shape[:1], (ops.static_shape(ids) or (None,))[:1])):
        raise ValueError(
            "`step_fn` must return logits of shape [batch, vocab] for ids "
            f"of shape {ids.shape}. Received: logits.shape={logits.shape}"
        )
    try:
        ops.assert_same_structure(cache, new_cache)
        same_keys = list(_paths(cache)) == list(_paths(new_cache))
    except (ValueError, TypeError):
        same_keys = False
    if not same_keys:
        raise ValueError(
            "`step_fn` must return a cache with the structure of "
            f"`initial_cache`. Received: {_describe(new_cache)} for "
            f"{_describe(cache)}"
        )
    new_leaves = [ops.convert(x) for x in ops.flatten(new_cache)]
    for (path, old), new in zip(_leaves_with_paths(cache), new_leaves):
        if _dtype(new) != _dtype(old) or not _compatible(
            ops.static_shape(new), ops.static_shape(old)
        ):
            raise ValueError(
                "`step_fn` must return cache tensors of fixed shape and "
                f"dtype. Received: cache{path} with shape {new.shape} and "
                f"dtype {_dtype(new)}, expected shape {old.shape} and "
                f"dtype {_dtype(old)}"
            )
    # Static shapes from the loop variables, as tf.while_loop needs.
    new_leaves = [ops.keep_shape(new, old)
                  for new, old in zip(new_leaves, ops.flatten(cache))]
    # Mixed precision models return float16 logits: normalise in float32.
    logits = ops.cast(logits, "float32")
    return logits, ops.pack_sequence_as(cache, new_leaves)


def write_column(buffer: Any, values: Any, index: Any) -> Any:
    """Writes `values` [...] into column `index` of `buffer` [..., L]."""
    ops = _ops.backend_ops()
    length = ops.dim(buffer, -1)
    column = ops.equal(ops.range(length), index)  # [L]
    return ops.where(column, values[..., None], buffer)
def check_constraints(min_length: Any, no_repeat_ngram_size: Any
                      ) -> tuple[int, int]:
    """Checks `min_length` and `no_repeat_ngram_size`: python ints >= 0."""
    return (check_int("min_length", min_length, 0),
            check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0))


def constrain(
    log_probs: Any,
    sequences: Any,
    index: Any,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    end_id: int = END_ID,
) -> Any:
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
    ops = _ops.backend_ops()
    vocab_size = ops.dim(log_probs, -1)
    if min_length > 0:
        is_end = ops.equal(ops.range(vocab_size), end_id)  # [V]
        log_probs = ops.where(
            ops.logical_and(index < min_length, is_end), NEG_INF, log_probs)
    if no_repeat_ngram_size > 0:
        banned = _repeated_ngram_tokens(sequences, index,
                                        no_repeat_ngram_size, vocab_size)
        log_probs = ops.where(banned, NEG_INF, log_probs)
    return log_probs


def _repeated_ngram_tokens(sequences, index, n, vocab_size):
    """bool [N, V]: tokens that would complete an n-gram seen before.

    The last n - 1 generated tokens are compared with every earlier window
    of n - 1 tokens; the token after each matching window is banned. Bans
    are written with one scatter into a [N, V + 1] table whose extra
    column takes the non-matching windows, so every update is the same
    value and duplicates are harmless (ONNX ScatterND included).
    """
    ops = _ops.backend_ops()
    rows = ops.dim(sequences, 0)
    length = ops.dim(sequences, 1)
    context = n - 1
    # The last n - 1 tokens; clamped positions only occur when index < n,
    # where no window is valid anyway.
    last = ops.gather(sequences, ops.maximum(
        index - context + ops.range(context), 0), axis=1)  # [N, n - 1]
    padded = ops.pad(sequences, [[0, 0], [0, n]], constant_values=-1)
    match = ops.ones([rows, length], "bool")
    for offset in range(context):
        match = ops.logical_and(match, ops.equal(
            padded[:, offset:offset + length], last[:, offset:offset + 1]))
    # A window starting at j is complete (its next token generated) when
    # j + n - 1 < index.
    match = ops.logical_and(match, ops.range(length)[None] <= index - n)
    following = padded[:, context:context + length]  # [N, L]
    columns = ops.where(match, following, vocab_size)
    row_ids = ops.broadcast_to(ops.range(rows)[:, None], [rows, length])
    indices = ops.reshape(ops.stack([row_ids, columns], axis=-1), [-1, 2])
    table = ops.scatter_update(
        ops.zeros([rows, vocab_size + 1], "bool"), indices,
        ops.ones([rows * length], "bool"))
    return table[:, :vocab_size]


def gnmt_length_penalty(length: Any, alpha: float) -> Any:
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
    ops = _ops.backend_ops()
    length = ops.cast(length, "float32")
    return ops.pow((LENGTH_PENALTY_OFFSET + length) / LENGTH_PENALTY_DIVISOR,
                   alpha)


def max_output_length(
    source_lengths: Any,
    extra: int = DEFAULT_EXTRA_LENGTH,
    limit: int | None = None,
) -> Any:
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
    ops = _ops.backend_ops()
    source_lengths = ops.convert(source_lengths)
    if not _is_integer(source_lengths):
        raise TypeError(
            "`source_lengths` must have an integer dtype. "
            f"Received: source_lengths.dtype={_dtype(source_lengths)}"
        )
    shape = ops.static_shape(source_lengths)
    if _rank(shape) not in (None, 1):
        raise ValueError(
            "`source_lengths` must have shape [batch]. "
            f"Received: source_lengths.shape={source_lengths.shape}"
        )
    # The maximum of an empty batch is the dtype's minimum: clip it to 0.
    longest = ops.maximum(
        ops.reduce_max(ops.cast(source_lengths, "int32")), 0)
    length = longest + extra
    if limit is not None:
        length = ops.minimum(length, limit)
    return ops.maximum(length, 1)
