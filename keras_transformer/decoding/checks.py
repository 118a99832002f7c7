"""Argument checks and the step-function contract of the searches.

`greedy_search` and `beam_search` check their arguments here and call the
model's step function through `call_step_fn`, which checks what it
returns (float logits [B, V], a cache of unchanged structure, shapes and
dtypes). Tensor work goes through `_ops.backend_ops()` (see `_ops`), so the
same code runs on Keras' TensorFlow, JAX and PyTorch backends.
"""

from collections.abc import Callable
from typing import Any

import keras

from keras_transformer.checks import check_float, check_int, is_int
from keras_transformer.decoding import _ops

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
    """Checks that `step_fn` is callable (its outputs: `call_step_fn`)."""
    if not callable(step_fn):
        raise TypeError(
            "`step_fn` must be callable as step_fn(ids, index, cache) -> "
            f"(logits, cache). Received: step_fn={step_fn!r}"
        )


def check_max_length(max_length: Any, name: str = "max_length") -> Any:
    """Returns `max_length` as a python int or an int32 scalar tensor.

    Off TensorFlow the buffers of the search need a static length, so a
    tensor is read into a python int (a traced JAX value is an error).
    `name` is the argument's name in the errors.
    """
    if is_int(max_length):
        return check_int(name, max_length, 1)
    ops = _ops.backend_ops()
    try:
        max_length = ops.convert(max_length)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be a python int or an integer scalar tensor. "
            f"Received: {name}={max_length!r}") from error
    if not _is_integer(max_length):
        raise TypeError(
            f"`{name}` must have an integer dtype. "
            f"Received: {name}={max_length!r}"
        )
    shape = ops.static_shape(max_length)
    if _rank(shape) not in (None, 0):
        raise ValueError(
            f"`{name}` must be a scalar. "
            f"Received: {name} with shape {shape}"
        )
    value = ops.static_value(max_length)
    if value is not None and value < 1:
        raise ValueError(
            f"`{name}` must be >= 1. Received: {name}={value}"
        )
    if ops is _ops.TensorFlowOps:
        return ops.cast(max_length, "int32")
    if value is None:
        raise TypeError(
            f"`{name}` must be a python int (or a concrete tensor) on "
            f"the {keras.backend.backend()} backend, where the search's "
            f"buffers have static shapes. Received: {name}={max_length}")
    return int(value)


def check_output_length(max_length: Any, output_length: Any) -> tuple:
    """`(max_length, width)` of a search given its `output_length`.

    The width of the buffers is `output_length` when given (checked as
    `max_length` is), else `max_length`; the search stops at the smaller
    of the two. `max_length` is already checked.
    """
    if output_length is None:
        return max_length, max_length
    width = check_max_length(output_length, "output_length")
    if isinstance(max_length, int) and isinstance(width, int):
        return min(max_length, width), width
    return _ops.backend_ops().minimum(max_length, width), width


def check_length_penalty(length_penalty: Any) -> float:
    """Checks the GNMT exponent alpha: a finite python number >= 0."""
    return check_float("length_penalty", length_penalty, 0.0)


def check_constraints(min_length: Any, no_repeat_ngram_size: Any
                      ) -> tuple[int, int]:
    """Checks `min_length` and `no_repeat_ngram_size`: python ints >= 0."""
    return (check_int("min_length", min_length, 0),
            check_int("no_repeat_ngram_size", no_repeat_ngram_size, 0))


def _integer_vector(name: str, value: Any) -> Any:
    """Returns `value` as a tensor; TypeError/ValueError unless it is an
    integer tensor of shape [B]."""
    ops = _ops.backend_ops()
    value = ops.convert(value)
    if not _is_integer(value):
        raise TypeError(f"`{name}` must have an integer dtype. "
                        f"Received: {name}.dtype={_dtype(value)}")
    if _rank(ops.static_shape(value)) not in (None, 1):
        raise ValueError(f"`{name}` must have shape [batch]. "
                         f"Received: {name}.shape={value.shape}")
    return value


def check_source_lengths(source_lengths: Any) -> Any:
    """Returns `source_lengths` as an integer tensor of shape [B]."""
    return _integer_vector("source_lengths", source_lengths)


def check_initial_ids(initial_ids: Any) -> Any:
    """Returns `initial_ids` as an int32 tensor of shape [B]."""
    return _ops.backend_ops().cast(
        _integer_vector("initial_ids", initial_ids), "int32")


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


def check_search(step_fn: Any, initial_ids: Any, initial_cache: Any,
                 max_length: Any, end_id: Any, pad_id: Any, min_length: Any,
                 no_repeat_ngram_size: Any) -> tuple:
    """The checks every search runs on the arguments they share.

    Returns `(initial_ids int32 [B], initial_cache, max_length, end_id,
    pad_id, min_length, no_repeat_ngram_size)`, checked and converted.
    """
    check_step_fn(step_fn)
    initial_ids = check_initial_ids(initial_ids)
    max_length = check_max_length(max_length)
    end_id, pad_id = check_token_ids(end_id, pad_id)
    min_length, no_repeat = check_constraints(min_length,
                                              no_repeat_ngram_size)
    initial_cache = check_cache(initial_cache, initial_ids)
    return (initial_ids, initial_cache, max_length, end_id, pad_id,
            min_length, no_repeat)
