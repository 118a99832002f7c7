"""Argument checks shared by the whole package; each error names the argument.

Pure Python (no TensorFlow; not even NumPy is imported, so `--help` stays
instant): the CLI, the configs and the runtimes that run without
TensorFlow use them too. Every message reads
"`name` must be ... Received: name=value".
"""

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools."""
    # NumPy's integer types register as numbers.Integral; its bool does not.
    return isinstance(value, numbers.Integral) and not isinstance(value,
                                                                  bool)


def check_int(name: str, value: Any, minimum: int | None = None,
              optional: bool = False) -> int | None:
    """Returns `value` as an int; None passes when `optional`."""
    if optional and value is None:
        return None
    if not is_int(value):
        expected = "None or an int" if optional else "an int"
        raise TypeError(
            f"`{name}` must be {expected}. Received: {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(
            f"`{name}` must be an int >= {minimum}. Received: {name}={value}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """`check_int` with minimum 1."""
    return check_int(name, value, 1)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a bool. Received: {name}={value!r}")
    return value


def check_float(name: str, value: Any, minimum: float | None = None) -> float:
    """Returns a finite number >= `minimum` as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a float. Received: {name}={value!r}")
    value = float(value)
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(
            f"`{name}` must be a finite number{bound}. "
            f"Received: {name}={value}")
    return value


def check_rate(name: str, value: Any) -> float:
    """A probability in [0, 1), as dropout rates and label smoothing are."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"`{name}` must be a float. Received: {name}={value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"`{name}` must be in [0, 1). Received: {name}={value}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {choices}. Received: {name}={value!r}")
    return value


# The Keras dtype policies `train()` can train under (`--precision`).
TRAINING_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# What a run may ask for: a policy, or "auto" (mixed_bfloat16 where the
# machine computes bfloat16 natively, float32 elsewhere).
PRECISION_CHOICES = ("auto", *TRAINING_PRECISIONS)


def check_training_precision(precision: Any) -> str:
    """A training precision: one of `TRAINING_PRECISIONS`."""
    return check_choice("precision", precision, TRAINING_PRECISIONS)


def check_divisible(d_model: int, num_heads: int) -> None:
    if d_model % num_heads:
        raise ValueError(
            "`d_model` must be divisible by `num_heads`. "
            f"Received: d_model={d_model}, num_heads={num_heads}")


def check_texts(texts) -> list:
    """A list of str/bytes; TypeError for anything else."""
    array = hasattr(texts, "tolist") and hasattr(texts, "ndim")  # NumPy
    if isinstance(texts, (str, bytes)) or not (isinstance(texts, Sequence)
                                               or array):
        raise TypeError(
            "`texts` must be a sequence of str or bytes. "
            f"Received: texts={texts!r:.80}")
    texts = list(texts.tolist() if array else texts)
    for i, text in enumerate(texts):
        if not isinstance(text, (str, bytes)):
            raise TypeError(
                "`texts` must contain only str or bytes. "
                f"Received: texts[{i}]={text!r:.80}")
    return texts


def check_fields(what: str, values: dict, fields: Iterable[str]) -> None:
    """ValueError naming the keys of `values` that are not `fields`."""
    known = sorted(fields)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"Unknown {what} {unknown}; known: {known}. "
                         f"Received: values={values!r}")
