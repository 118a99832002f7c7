"""Beam search with the GNMT length penalty, as used by the paper."""

from typing import Any

from keras_transformer.checks import check_int
from keras_transformer.contract import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_LENGTH_PENALTY,
)
from keras_transformer.decoding import _ops, checks
from keras_transformer.decoding.checks import NEG_INF, StepFn
from keras_transformer.decoding.rules import constrain, gnmt_length_penalty
from keras_transformer.text.special_tokens import END_ID, PAD_ID


def beam_search(
    step_fn: StepFn,
    initial_ids: Any,
    initial_cache: Any,
    max_length: Any,
    beam_size: int = DEFAULT_BEAM_SIZE,
    length_penalty: float = DEFAULT_LENGTH_PENALTY,
    end_id: int = END_ID,
    pad_id: int = PAD_ID,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    output_length: Any = None,
    argmax_top_k: bool = False,
) -> tuple[Any, Any]:
    """Decodes a batch with beam search and returns the n-best lists.

    Section 6.1 of the paper: "beam search with a beam size of 4 and length
    penalty alpha = 0.6", the penalty of Wu et al. (2016): a finished
    hypothesis Y scores log P(Y) / lp(|Y|) with
    lp(|Y|) = ((5 + |Y|) / 6) ** alpha, |Y| counting `end_id`.

    Every step extends the K alive hypotheses by every token and keeps the
    2K best extensions by log-probability. Those of the K best that end
    with `end_id` join the finished set (the K best finished, by score);
    the K best that do not end stay alive, so the beam never shrinks. With
    `beam_size=1` and `length_penalty=0` this is exactly greedy search.
    Search stops after `max_length` steps, or earlier once, in every row,
    K hypotheses have finished and none alive can beat the worst of them
    even with the largest length penalty, lp(max_length) ("terminate early
    when possible").

    The search is one while loop, as in `greedy_search` (which says what
    that means on each backend). The cache is tiled to B * K rows once
    and reordered with a gather by the parents of the surviving hypotheses
    at the start of every step. At the start only beam 0 is alive (the
    others start at log-probability -inf), so the first step does not
    return K copies of one hypothesis.

    Args:
        step_fn: callable `step_fn(ids, index, cache) -> (logits, cache)`,
            as in `greedy_search`; here it sees B * K rows, each batch row's
            K hypotheses next to each other.
        initial_ids: int tensor [B], the first input tokens (usually
            `START_ID`).
        initial_cache: nested structure of tensors [B, ...] for the first
            step, or None for a model without a cache.
        max_length: int or int32 scalar tensor, the maximum number of
            generated tokens L (see `max_output_length`); off TensorFlow a
            python int or a concrete (not traced) tensor.
        beam_size: int, the number of hypotheses K kept per row. Defaults
            to 4, as in the paper.
        length_penalty: float, the GNMT exponent alpha >= 0; 0 ranks by
            plain log-probability. Defaults to 0.6, as in the paper.
        end_id: int, the token that ends a sequence. Defaults to `END_ID`.
        pad_id: int, the token written after the end. Defaults to `PAD_ID`.
        min_length: int >= 0, no hypothesis ends before this many tokens
            (see `constrain`). Defaults to 0.
        no_repeat_ngram_size: int >= 0, no hypothesis repeats an n-gram
            of this size; 0 disables it. Defaults to 0.
        output_length: int, int32 scalar tensor or None, the width L of
            the returned ids when `max_length` depends on the data, for
            XLA (as in `greedy_search`). Defaults to None: `max_length`.
        argmax_top_k: bool, take the 2K best of the K x V extensions by
            2K rounds of max and argmax (`_ops.top_k_by_argmax`) instead
            of TopK: the same ids, about 2x faster under XLA on CPU, where
            TopK becomes a sort of the whole row; slower in a graph. On
            TensorFlow only (ignored elsewhere). Defaults to False.

    Returns:
        A pair `(ids, scores)`: `ids` int32 [B, K, L], each row's
        hypotheses best first, without the start token, with `end_id` and
        `pad_id` after it; `scores` float32 [B, K], log-probability divided
        by lp(length). Finished hypotheses come first; when fewer than K
        finished within `max_length` steps, the best unfinished ones (of
        length L) fill the list. A slot with no hypothesis at all (a tiny
        vocabulary) has score -inf and only `pad_id`.

    Example:

    >>> import tensorflow as tf
    >>> logits = tf.math.log([[0.1, 0.1, 0.1, 0.3, 0.4]])
    >>> def step_fn(ids, index, cache):
    ...     return tf.tile(logits, [tf.shape(ids)[0], 1]), cache
    >>> ids, scores = beam_search(step_fn, [2], {}, max_length=3,
    ...                           beam_size=2)
    >>> ids.numpy().tolist()
    [[[3, 0, 0], [4, 3, 0]]]

    References:
        Vaswani et al., 2017, "Attention Is All You Need", Section 6.1.
        Wu et al., 2016, "Google's Neural Machine Translation System",
        Section 7.
    """
    (initial_ids, initial_cache, max_length, end_id, pad_id, min_length,
     no_repeat) = checks.check_search(
        step_fn, initial_ids, initial_cache, max_length, end_id, pad_id,
        min_length, no_repeat_ngram_size)
    beam_size = check_int("beam_size", beam_size, 1)
    alpha = checks.check_length_penalty(length_penalty)
    ops = _ops.backend_ops()
    batch_size = ops.dim(initial_ids, 0)
    k = beam_size
    max_length, width = checks.check_output_length(max_length,
                                                    output_length)
    top_k = ops.top_k
    if argmax_top_k and ops is _ops.TensorFlowOps:
        top_k = ops.top_k_by_argmax
    max_penalty = gnmt_length_penalty(max_length, alpha)

    def cond(index, ids, rows, cache, alive_seq, alive_log_probs,
             finished_seq, finished_scores):
        del ids, rows, cache, alive_seq, finished_seq  # Unused.
        # Both sets are sorted best first. An empty finished slot is -inf.
        best_alive = alive_log_probs[:, 0]
        best_possible = best_alive / max_penalty
        row_done = ops.logical_or(
            ops.equal(best_alive, NEG_INF),
            finished_scores[:, -1] >= best_possible,
        )
        return ops.logical_and(
            index < max_length, ops.logical_not(ops.reduce_all(row_done))
        )

    def body(index, ids, rows, cache, alive_seq, alive_log_probs,
             finished_seq, finished_scores):
        # The cache rows of the hypotheses' parents, chosen by the previous
        # step: reordered here, before the step writes its position, so
        # that the write goes to the gather's fresh copy (a runtime can
        # then write in place instead of copying the whole cache again).
        cache = ops.map_structure(lambda x: _reorder(x, rows), cache)
        logits, cache = checks.call_step_fn(step_fn, ids, index, cache)
        _check_vocab_size(logits)
        vocab_size = ops.dim(logits, -1)
        log_probs = ops.log_softmax(logits)  # [B * K, V]
        if min_length or no_repeat:
            log_probs = constrain(
                log_probs, ops.reshape(alive_seq, [batch_size * k, -1]),
                index, min_length, no_repeat, end_id)
        log_probs = ops.reshape(log_probs, [batch_size, k, vocab_size])
        # Extensions of every alive hypothesis by every token: [B, K * V].
        candidates = ops.reshape(
            alive_log_probs[:, :, None] + log_probs,
            [batch_size, k * vocab_size],
        )
        # Each parent ends at most once, so 2K keeps K that do not end.
        top_log_probs, top_indices = top_k(candidates, k=2 * k)
        top_parents = top_indices // vocab_size  # [B, 2K]
        top_ids = top_indices % vocab_size  # [B, 2K]
        top_seq = ops.gather_rows(alive_seq, top_parents)
        top_seq = checks.write_column(top_seq, top_ids, index)  # [B, 2K, L]
        top_ended = ops.equal(top_ids, end_id)

        # The K best extensions that do not end stay alive.
        alive_log_probs, alive_pos = ops.top_k(
            ops.where(top_ended, NEG_INF, top_log_probs), k=k
        )
        alive_seq = ops.gather_rows(top_seq, alive_pos)
        ids = ops.reshape(ops.gather_rows(top_ids, alive_pos), [-1])
        parents = ops.gather_rows(top_parents, alive_pos)  # [B, K]
        rows = ops.reshape(parents + k * ops.range(batch_size)[:, None],
                           [-1])

        # Those of the K best that end join the finished set.
        new_ended = ops.logical_and(
            top_ended[:, :k], top_log_probs[:, :k] > NEG_INF
        )
        new_scores = ops.where(
            new_ended,
            top_log_probs[:, :k] / gnmt_length_penalty(index + 1, alpha),
            NEG_INF,
        )
        finished_scores, finished_pos = ops.top_k(
            ops.concat([finished_scores, new_scores], axis=1), k=k
        )
        finished_seq = ops.gather_rows(
            ops.concat([finished_seq, top_seq[:, :k]], axis=1),
            finished_pos,
        )
        return (index + 1, ids, rows, cache, alive_seq, alive_log_probs,
                finished_seq, finished_scores)

    pad_beams = ops.fill([batch_size, k, width], pad_id)  # [B, K, L]
    loop_vars = (
        ops.constant(0, "int32"),
        ops.repeat_rows(initial_ids, k),  # [B * K]
        ops.range(batch_size * k),  # Rows of the parents: none moved yet.
        ops.map_structure(lambda x: ops.repeat_rows(x, k), initial_cache),
        pad_beams,
        # Only beam 0 is alive at first: the K start beams are identical.
        ops.tile(
            ops.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch_size, 1]
        ),
        pad_beams,
        ops.fill([batch_size, k], NEG_INF),
    )
    (length, _, _, _, alive_seq, alive_log_probs, finished_seq,
     finished_scores) = ops.while_loop(cond, body, loop_vars)
    alive_scores = alive_log_probs / gnmt_length_penalty(length, alpha)
    return _merge_n_best(
        finished_seq, finished_scores, alive_seq, alive_scores, pad_id
    )


def _check_vocab_size(logits: Any) -> None:
    vocab_size = logits.shape[-1]
    if vocab_size is not None and vocab_size < 2:
        raise ValueError(
            "`step_fn` must return logits over at least 2 tokens for beam "
            f"search. Received: logits.shape={logits.shape}"
        )


def _reorder(x: Any, rows: Any) -> Any:
    """Gathers cache rows, keeping the static shape tf.while_loop needs."""
    ops = _ops.backend_ops()
    return ops.keep_shape(ops.gather(x, rows), x)


def tile_beams(structure: Any, beam_size: int) -> Any:
    """Repeats each row of every tensor K times: [B, ...] -> [B * K, ...].

    The row layout `beam_search` gives its hypotheses (each source's K
    beams next to each other). Use it once per search on what stays
    constant for a source (a decoder's cross-attention keys and values, the
    source mask), which a step function then reads from its closure
    instead of carrying it through the loop.
    """
    beam_size = check_int("beam_size", beam_size, 1)
    if beam_size == 1:
        return structure
    ops = _ops.backend_ops()
    return ops.map_structure(
        lambda x: ops.repeat_rows(ops.convert(x), beam_size), structure)


def _merge_n_best(
    finished_seq: Any,
    finished_scores: Any,
    alive_seq: Any,
    alive_scores: Any,
    pad_id: int,
) -> tuple[Any, Any]:
    """Fills each row's K slots with its finished, then alive hypotheses."""
    ops = _ops.backend_ops()
    k = finished_scores.shape[1]
    num_finished = ops.reduce_sum(
        ops.cast(finished_scores > NEG_INF, "int32"), axis=1, keepdims=True
    )  # [B, 1]
    slots = ops.range(k)[None, :]  # [1, K]
    # Both sets are sorted best first; slot j takes finished j, else alive
    # j - num_finished.
    source = ops.where(slots < num_finished, slots, k + slots - num_finished)
    scores = ops.gather_rows(
        ops.concat([finished_scores, alive_scores], axis=1), source)
    ids = ops.gather_rows(
        ops.concat([finished_seq, alive_seq], axis=1), source)
    ids = ops.where((scores > NEG_INF)[:, :, None], ids, pad_id)
    return ids, scores
