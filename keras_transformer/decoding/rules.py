"""The decoding rules that every runtime of a trained model must match.

The searches of `keras_transformer.decoding` apply these rules to tensors;
the ONNX graphs (converted from them) and the CTranslate2 runtime must
give the same results:

- `constrain`: the minimum output length and the n-gram ban;
- `gnmt_length_penalty`: the GNMT length penalty of beam search; its
  plain-number twin is `keras_transformer.contract.gnmt_penalty`;
- `max_output_length`: the most tokens a search generates for a batch;
  its plain-number twin is `keras_transformer.contract.output_limit`.

The constants (`LENGTH_PENALTY_OFFSET`, `DEFAULT_EXTRA_LENGTH`, ...) are
defined in `keras_transformer.contract` only. Tensor work goes through
`_ops.backend_ops()`, so the rules run on Keras' TensorFlow, JAX and
PyTorch backends.
"""

from typing import Any

from keras_transformer.checks import check_int
from keras_transformer.contract import (
    DEFAULT_EXTRA_LENGTH,
    LENGTH_PENALTY_DIVISOR,
    LENGTH_PENALTY_OFFSET,
)
from keras_transformer.decoding import _ops
from keras_transformer.decoding.checks import NEG_INF, check_source_lengths
from keras_transformer.text.special_tokens import END_ID


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

    Beam search ranks a finished hypothesis by log P / lp(length). The
    plain-number twin, for runtimes without TensorFlow, is
    `keras_transformer.contract.gnmt_penalty`; both read the constants of
    `keras_transformer.contract`.

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
    optionally capped at `limit`, and at least 1. The plain-number twin,
    for runtimes without TensorFlow, is
    `keras_transformer.contract.output_limit`.

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
    source_lengths = check_source_lengths(source_lengths)
    ops = _ops.backend_ops()
    # The maximum of an empty batch is the dtype's minimum: clip it to 0.
    longest = ops.maximum(
        ops.reduce_max(ops.cast(source_lengths, "int32")), 0)
    length = longest + extra
    if limit is not None:
        length = ops.minimum(length, limit)
    return ops.maximum(length, 1)
