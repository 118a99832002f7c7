"""Tests for keras_transformer.decoding (greedy and beam search)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.decoding import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_EXTRA_LENGTH,
    DEFAULT_LENGTH_PENALTY,
    END_ID,
    PAD_ID,
    START_ID,
    beam_search,
    gnmt_length_penalty,
    greedy_search,
    max_output_length,
)

VOCAB_SIZE = 7  # 0 pad, 1 unk, 2 start, 3 end, 4..6 words.


def lp(length, alpha):
    """The GNMT length penalty, written independently of the library."""
    return ((5.0 + length) / 6.0) ** alpha


def make_table(rules, num_steps=10, vocab_size=VOCAB_SIZE):
    """Probabilities [steps, previous token, next token] of a scripted model.

    `rules` maps (index, previous token) to {token: probability}; the rest
    of the mass is shared evenly by the other tokens. Rows without a rule
    are uniform.
    """
    table = np.full([num_steps, vocab_size, vocab_size], 1.0 / vocab_size)
    for (index, previous), probs in rules.items():
        rest = (1.0 - sum(probs.values())) / (vocab_size - len(probs))
        row = np.full([vocab_size], rest)
        for token, p in probs.items():
            row[token] = p
        table[index, previous] = row
    return table


def table_step_fn(table, counter=None, dtype=tf.float32):
    """A first-order scripted model: logits = log table[index, last token]."""
    log_table = tf.constant(np.log(table), dtype)

    def step_fn(ids, index, cache):
        if counter is not None:
            counter.append(int(index))
        return tf.gather(log_table[index], ids), cache

    return step_fn


# Greedy takes 4 (p=0.5) then END (0.3): 0.15. Beam finds 5 END: 0.4 * 0.9.
GREEDY_IS_NOT_BEST = {(0, START_ID): {4: 0.5, 5: 0.4}, (1, 4): {3: 0.3},
                      (1, 5): {3: 0.9}}


class ToyModel:
    """A tiny decoder: the mean embedding of the prefix plus a context.

    `cached_step` keeps the embeddings of the prefix in a fixed-size cache
    written in place; `numpy_log_probs` recomputes the whole prefix in NumPy.
    """

    def __init__(self, vocab_size=9, depth=4, cache_size=8, seed=0):
        rng = np.random.default_rng(seed)
        self.cache_size = cache_size
        self.embeddings = rng.normal(size=(vocab_size, depth)).astype(
            np.float32)
        self.kernel = (2 * rng.normal(size=(depth, vocab_size))).astype(
            np.float32)
        # Makes END more likely at later positions.
        self.end_bias = np.eye(vocab_size, dtype=np.float32)[END_ID] * 0.7
        # Makes the padding token unlikely, so that outputs read clearly.
        self.bias = np.eye(vocab_size, dtype=np.float32)[PAD_ID] * -4.0

    def initial_cache(self, context):
        batch = tf.shape(context)[0]
        keys = tf.zeros([batch, self.cache_size, self.embeddings.shape[1]])
        return {"keys": keys, "context": tf.convert_to_tensor(context)}

    def cached_step(self, ids, index, cache):
        positions = tf.range(self.cache_size)
        x = tf.gather(self.embeddings, ids)  # [B, D]
        keys = tf.where(
            (positions == index)[None, :, None], x[:, None, :], cache["keys"]
        )
        mask = tf.cast(positions <= index, tf.float32)[None, :, None]
        summary = tf.reduce_sum(keys * mask, 1) / tf.cast(index + 1,
                                                           tf.float32)
        hidden = tf.tanh(summary + cache["context"])
        logits = hidden @ self.kernel + self.bias + tf.cast(
            index, tf.float32) * self.end_bias
        return logits, {"keys": keys, "context": cache["context"]}

    def numpy_log_probs(self, context, prefix):
        """Log-probabilities of the next token after `prefix` (start first)."""
        summary = self.embeddings[list(prefix)].mean(0)
        logits = np.tanh(summary + context) @ self.kernel + self.bias
        logits = logits + (len(prefix) - 1) * self.end_bias
        logits = logits - logits.max()
        return logits - np.log(np.exp(logits).sum())


def reference_greedy(log_prob_fn, max_length):
    seq, score = [], 0.0
    for _ in range(max_length):
        log_probs = log_prob_fn(seq)
        token = int(np.argmax(log_probs))
        seq.append(token)
        score += log_probs[token]
        if token == END_ID:
            break
    return seq + [PAD_ID] * (max_length - len(seq)), score


def reference_beam(log_prob_fn, max_length, beam_size, alpha):
    """Beam search over python lists, recomputing each full prefix."""
    alive, finished = [((), 0.0)], []
    length = 0
    for t in range(max_length):
        candidates = sorted(
            ((seq + (token,), log_prob + value)
             for seq, log_prob in alive
             for token, value in enumerate(log_prob_fn(list(seq)))
             if value > -np.inf),  # A forbidden token never enters.
            key=lambda c: -c[1],
        )[:2 * beam_size]
        finished += [(seq, log_prob / lp(t + 1, alpha))
                     for seq, log_prob in candidates[:beam_size]
                     if seq[-1] == END_ID]
        finished = sorted(finished, key=lambda c: -c[1])[:beam_size]
        alive = [c for c in candidates if c[0][-1] != END_ID][:beam_size]
        length = t + 1
        if (len(finished) == beam_size and finished[-1][1]
                >= alive[0][1] / lp(max_length, alpha)):
            break
    n_best = finished + [(seq, log_prob / lp(length, alpha))
                         for seq, log_prob in alive]
    n_best = n_best[:beam_size]
    ids = [list(seq) + [PAD_ID] * (max_length - len(seq))
           for seq, _ in n_best]
    return ids, [score for _, score in n_best]


# --- Greedy search ---------------------------------------------------------


def test_greedy_exact_ids_scores_and_padding_after_end():
    # Row 0 ends after 2 tokens, row 1 after 3: row 0 is padded while row 1
    # still runs, and the loop stops after 3 of the 10 allowed steps.
    table = make_table({(0, START_ID): {4: 0.9}, (1, 4): {3: 0.8},
                        (0, 1): {5: 0.7}, (1, 5): {6: 0.6}, (2, 6): {3: 0.5}})
    calls = []
    ids, scores = greedy_search(
        table_step_fn(table, calls), [START_ID, 1], {}, max_length=10
    )
    assert ids.dtype == tf.int32 and scores.dtype == tf.float32
    np.testing.assert_array_equal(
        ids, [[4, 3, 0, 0, 0, 0, 0, 0, 0, 0], [5, 6, 3, 0, 0, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_allclose(
        scores, np.log([0.9 * 0.8, 0.7 * 0.6 * 0.5]), rtol=1e-6
    )
    assert calls == [0, 1, 2]  # Early stop once every row has ended.


def test_greedy_without_end_runs_to_max_length():
    table = make_table({(i, p): {4: 0.5} for i in range(10)
                        for p in range(VOCAB_SIZE)})
    ids, scores = greedy_search(table_step_fn(table), [START_ID], None,
                                max_length=tf.constant(4))
    np.testing.assert_array_equal(ids, [[4, 4, 4, 4]])
    np.testing.assert_allclose(scores, [4 * np.log(0.5)], rtol=1e-6)


# --- Beam search -----------------------------------------------------------


def test_beam_finds_better_sequence_than_greedy():
    step_fn = table_step_fn(make_table(GREEDY_IS_NOT_BEST))
    greedy_ids, _ = greedy_search(step_fn, [START_ID], {}, max_length=3)
    np.testing.assert_array_equal(greedy_ids, [[4, 3, 0]])

    calls = []
    ids, scores = beam_search(
        table_step_fn(make_table(GREEDY_IS_NOT_BEST), calls), [START_ID], {},
        max_length=10, beam_size=2,
    )
    assert ids.shape == (1, 2, 10) and scores.shape == (1, 2)
    np.testing.assert_array_equal(ids[0, :, :3], [[5, 3, 0], [4, 3, 0]])
    np.testing.assert_array_equal(ids[0, :, 3:], 0)
    np.testing.assert_allclose(
        scores, [np.log([0.4 * 0.9, 0.5 * 0.3]) / lp(2, 0.6)], rtol=1e-6
    )
    # Both finished at step 1, but the best alive, [4, 0] with p = 0.5 *
    # 0.7 / 6, might still beat [4, 3] at lp(10): log(p) / lp(10) > log(0.15)
    # / lp(2). After step 2 (p / 7) it cannot: 3 of the 10 steps run.
    assert np.log(0.5 * 0.7 / 6) / lp(10, 0.6) > np.log(0.15) / lp(2, 0.6)
    assert np.log(0.5 * 0.7 / 42) / lp(10, 0.6) < np.log(0.15) / lp(2, 0.6)
    assert calls == [0, 1, 2]


@pytest.mark.parametrize(
    "alpha, expected",
    [(0.0, [[3, 0], [4, 3]]), (0.6, [[3, 0], [4, 3]]), (2.0, [[4, 3], [3, 0]])],
)
def test_beam_length_penalty_ordering(alpha, expected):
    # [END] has p = 0.4; [4, END] has p = 0.5 * 0.7 = 0.35 but is longer.
    table = make_table({(0, START_ID): {3: 0.4, 4: 0.5}, (1, 4): {3: 0.7}})
    ids, scores = beam_search(table_step_fn(table), [START_ID], {},
                              max_length=2, beam_size=2, length_penalty=alpha)
    np.testing.assert_array_equal(ids[0], expected)
    by_sequence = {(3, 0): np.log(0.4) / lp(1, alpha),
                   (4, 3): np.log(0.35) / lp(2, alpha)}
    np.testing.assert_allclose(
        scores[0], [by_sequence[tuple(row)] for row in expected], rtol=1e-6
    )


def test_beam_first_step_keeps_distinct_hypotheses():
    # No END: without the -inf start of beams 1..K-1 all three would be 4 4.
    table = make_table({(0, START_ID): {4: 0.5, 5: 0.3, 6: 0.15},
                        **{(1, p): {4: 0.6, 5: 0.25, 6: 0.1}
                           for p in range(VOCAB_SIZE)}})
    ids, scores = beam_search(table_step_fn(table), [START_ID], {},
                              max_length=2, beam_size=3)
    np.testing.assert_array_equal(ids[0], [[4, 4], [5, 4], [4, 5]])
    np.testing.assert_allclose(
        scores[0], np.log([0.3, 0.18, 0.125]) / lp(2, 0.6), rtol=1e-6
    )


def test_beam_fills_n_best_with_unfinished_hypotheses():
    # [END] finishes at step 0; nothing else finishes within 2 steps.
    table = make_table({(0, START_ID): {3: 0.5, 4: 0.4}, (1, 4): {6: 0.9}})
    ids, scores = beam_search(table_step_fn(table), [START_ID], {},
                              max_length=2, beam_size=2, length_penalty=1.0)
    np.testing.assert_array_equal(ids[0], [[3, 0], [4, 6]])
    np.testing.assert_allclose(
        scores[0], [np.log(0.5), np.log(0.36) / lp(2, 1.0)], rtol=1e-6
    )


def test_beam_tiny_vocabulary_leaves_empty_slots():
    # Two tokens, three beams, one step: only two hypotheses exist.
    table = np.array([[[0.3, 0.7], [0.3, 0.7]]])
    ids, scores = beam_search(table_step_fn(table), [0], {}, max_length=1,
                              beam_size=3, end_id=1, pad_id=0)
    np.testing.assert_array_equal(ids[0], [[1], [0], [0]])
    np.testing.assert_allclose(scores[0, :2], np.log([0.7, 0.3]), rtol=1e-6)
    assert scores[0, 2] == -np.inf


@pytest.mark.parametrize("seed", range(4))
def test_beam_size_one_equals_greedy(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(6, 8, 8)) * 2
    logits[:, :, END_ID] += np.linspace(-2, 2, 6)[:, None]
    table = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    start = rng.integers(0, 8, size=[5])
    greedy_ids, greedy_scores = greedy_search(table_step_fn(table), start, {},
                                              max_length=6)
    beam_ids, beam_scores = beam_search(table_step_fn(table), start, {},
                                        max_length=6, beam_size=1,
                                        length_penalty=0.0)
    np.testing.assert_array_equal(beam_ids[:, 0], greedy_ids)
    np.testing.assert_allclose(beam_scores[:, 0], greedy_scores, rtol=1e-5)


# --- Cached model against full-prefix recomputation ------------------------


def _contexts(batch, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 4)).astype(np.float32)


def _log_prob_fn(model, context, start=START_ID):
    return lambda seq: model.numpy_log_probs(context, [start] + seq)


@pytest.mark.parametrize("seed", [0, 1])
def test_cached_greedy_equals_full_prefix_reference(seed):
    model, contexts = ToyModel(seed=seed), _contexts(4, seed)
    ids, scores = greedy_search(model.cached_step, [START_ID] * 4,
                                model.initial_cache(contexts), max_length=7)
    for row, context in enumerate(contexts):
        expected, score = reference_greedy(_log_prob_fn(model, context), 7)
        np.testing.assert_array_equal(ids[row], expected)
        np.testing.assert_allclose(scores[row], score, rtol=1e-5)


@pytest.mark.parametrize("seed, beam_size, alpha",
                         [(0, 2, 0.6), (1, 3, 0.0), (2, 4, 1.0)])
def test_cached_beam_equals_full_prefix_reference(seed, beam_size, alpha):
    model, contexts = ToyModel(seed=seed), _contexts(3, seed)
    ids, scores = beam_search(model.cached_step, [START_ID] * 3,
                              model.initial_cache(contexts), max_length=7,
                              beam_size=beam_size, length_penalty=alpha)
    for row, context in enumerate(contexts):
        expected, expected_scores = reference_beam(
            _log_prob_fn(model, context), 7, beam_size, alpha)
        np.testing.assert_array_equal(ids[row], expected)
        np.testing.assert_allclose(scores[row], expected_scores, rtol=1e-5)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_batch_rows_are_independent(search):
    model, contexts = ToyModel(seed=3), _contexts(3, seed=3)

    def run(context):
        cache = model.initial_cache(context)
        start = [START_ID] * len(context)
        if search == "greedy":
            return greedy_search(model.cached_step, start, cache, 7)
        return beam_search(model.cached_step, start, cache, 7, beam_size=3)

    ids, scores = run(contexts)
    for row in range(3):
        row_ids, row_scores = run(contexts[row:row + 1])
        np.testing.assert_array_equal(ids[row], row_ids[0])
        np.testing.assert_allclose(scores[row], row_scores[0], rtol=1e-6)


# --- Graph modes, XLA and mixed precision ----------------------------------


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("mode", ["function", "tensor_length", "jit"])
def test_graph_modes_match_eager(search, mode):
    model, contexts = ToyModel(seed=5), _contexts(3, seed=5)

    def run(start, context, max_length=6):
        cache = model.initial_cache(context)
        if search == "greedy":
            return greedy_search(model.cached_step, start, cache, max_length)
        return beam_search(model.cached_step, start, cache, max_length,
                           beam_size=2)

    start = tf.fill([3], START_ID)
    expected_ids, expected_scores = run(start, contexts)
    if mode == "function":
        ids, scores = tf.function(run)(start, contexts)
    elif mode == "tensor_length":
        signature = [tf.TensorSpec([None], tf.int32),
                     tf.TensorSpec([None, 4], tf.float32),
                     tf.TensorSpec([], tf.int32)]
        function = tf.function(run, input_signature=signature)
        ids, scores = function(start, contexts, tf.constant(6))
    else:
        ids, scores = tf.function(run, jit_compile=True)(start, contexts)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


@pytest.mark.parametrize("limit", [1, 4, 6])
def test_greedy_output_length_keeps_the_ids_of_max_length(limit):
    """A wider buffer (`output_length`) than the data-dependent
    `max_length` gives the same ids, padded, and the same scores, also
    compiled with XLA from a tensor `max_length`; a narrower one stops the
    search at its width."""
    model, contexts = ToyModel(seed=7), _contexts(3, seed=7)
    start = tf.fill([3], START_ID)
    expected_ids, expected_scores = greedy_search(
        model.cached_step, start, model.initial_cache(contexts), limit)

    @tf.function(jit_compile=True)
    def run(start, context, max_length):
        return greedy_search(model.cached_step, start,
                             model.initial_cache(context), max_length,
                             output_length=tf.shape(context)[1] + 5)

    ids, scores = run(start, contexts, tf.constant(limit))
    assert ids.shape == (3, 9)
    np.testing.assert_array_equal(ids[:, :limit], expected_ids)
    np.testing.assert_array_equal(ids[:, limit:], PAD_ID)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    narrow_ids, _ = greedy_search(model.cached_step, start,
                                  model.initial_cache(contexts), 6,
                                  output_length=limit)
    np.testing.assert_array_equal(narrow_ids, expected_ids)
    with pytest.raises(ValueError, match="`output_length` must be an int >= 1"):
        greedy_search(model.cached_step, start,
                      model.initial_cache(contexts), 6, output_length=0)


@pytest.mark.slow
@pytest.mark.parametrize("rules", [
    {}, {"min_length": 3, "no_repeat_ngram_size": 2}])
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_onnx_conversion_matches_tensorflow(search, rules):
    tf2onnx = pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    model = ToyModel(seed=5)
    signature = [tf.TensorSpec([None], tf.int32, name="start"),
                 tf.TensorSpec([None, 4], tf.float32, name="context"),
                 tf.TensorSpec([], tf.int32, name="max_length")]

    @tf.function(input_signature=signature)
    def run(start, context, max_length):
        cache = model.initial_cache(context)
        if search == "greedy":
            return greedy_search(model.cached_step, start, cache, max_length,
                                 **rules)
        return beam_search(model.cached_step, start, cache, max_length,
                           beam_size=3, **rules)

    onnx_model, _ = tf2onnx.convert.from_function(
        run, input_signature=signature, opset=17)
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString())
    for batch, max_length in [(3, 7), (1, 2)]:
        feed = {"start": np.full([batch], START_ID, np.int32),
                "context": _contexts(batch, seed=batch),
                "max_length": np.array(max_length, np.int32)}
        ids, scores = session.run(None, feed)
        expected_ids, expected_scores = run(**feed)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_logits_are_scored_in_float32(dtype):
    table = make_table(GREEDY_IS_NOT_BEST)
    ids, scores = beam_search(table_step_fn(table, dtype=dtype), [START_ID],
                              {}, max_length=3, beam_size=2)
    assert scores.dtype == tf.float32
    np.testing.assert_array_equal(ids[0], [[5, 3, 0], [4, 3, 0]])
    greedy_ids, greedy_scores = greedy_search(
        table_step_fn(table, dtype=dtype), [START_ID], {}, max_length=3)
    assert greedy_scores.dtype == tf.float32
    np.testing.assert_array_equal(greedy_ids, [[4, 3, 0]])


# --- Helpers and constants -------------------------------------------------


def test_constants_are_the_papers():
    assert (DEFAULT_BEAM_SIZE, DEFAULT_LENGTH_PENALTY, DEFAULT_EXTRA_LENGTH) \
        == (4, 0.6, 50)
    assert (PAD_ID, START_ID, END_ID) == (0, 2, 3)


@pytest.mark.parametrize("length, alpha", [(1, 0.6), (7, 0.6), (3, 0.0),
                                           (10, 2.0)])
def test_gnmt_length_penalty(length, alpha):
    np.testing.assert_allclose(gnmt_length_penalty(length, alpha),
                               lp(length, alpha), rtol=1e-6)


def test_gnmt_length_penalty_sentinels():
    assert float(gnmt_length_penalty(1, 0.6)) == 1.0
    assert math.isclose(float(gnmt_length_penalty(7, 0.6)), 1.515716,
                        rel_tol=1e-6)


@pytest.mark.parametrize(
    "lengths, kwargs, expected",
    [([3, 7], {}, 57), ([3, 7], {"limit": 20}, 20), ([3, 7], {"extra": 0}, 7),
     (np.array([], np.int32), {}, 50), ([0], {"extra": 0}, 1),
     (tf.constant([4, 2], tf.int64), {"extra": 5, "limit": 100}, 9)],
)
def test_max_output_length(lengths, kwargs, expected):
    result = max_output_length(lengths, **kwargs)
    assert result.dtype == tf.int32
    assert int(result) == expected


# --- Argument validation ---------------------------------------------------


def _ok_step(ids, index, cache):
    return tf.zeros([tf.shape(ids)[0], 5]), cache


def _call(search="beam", step_fn=_ok_step, initial_ids=(2, 2),
          initial_cache=None, max_length=3, **kwargs):
    if search == "greedy":
        return greedy_search(step_fn, initial_ids, initial_cache, max_length,
                             **kwargs)
    return beam_search(step_fn, initial_ids, initial_cache, max_length,
                       **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"max_length": 0}, ValueError, "`max_length`"),
     ({"max_length": tf.constant(0)}, ValueError, "`max_length`"),
     ({"max_length": 2.0}, TypeError, "`max_length`"),
     ({"max_length": tf.constant(2.0)}, TypeError, "`max_length`"),
     ({"max_length": tf.constant([2])}, ValueError, "`max_length`"),
     ({"end_id": 0}, ValueError, "`end_id`"),
     ({"pad_id": -1}, ValueError, "`pad_id`"),
     ({"step_fn": "model"}, TypeError, "`step_fn`"),
     ({"initial_ids": [2.0]}, TypeError, "`initial_ids`"),
     ({"initial_ids": [[2]]}, ValueError, "`initial_ids`"),
     ({"initial_cache": {"k": tf.zeros([3, 4])}}, ValueError,
      "`initial_cache`"),
     ({"initial_cache": {"k": tf.zeros([])}}, ValueError, "`initial_cache`"),
     ({"step_fn": lambda ids, i, c: _ok_step(ids, i, c)[0]}, TypeError,
      "`step_fn`"),
     ({"step_fn": lambda ids, i, c: (tf.zeros([2, 5], tf.int32), c)},
      TypeError, "`step_fn`"),
     ({"step_fn": lambda ids, i, c: (tf.zeros([2, 1, 5]), c)}, ValueError,
      "`step_fn`"),
     ({"step_fn": lambda ids, i, c: (tf.zeros([1, 5]), c)}, ValueError,
      "`step_fn`"),
     ({"initial_cache": {"k": tf.zeros([2, 4])},
       "step_fn": lambda ids, i, c: _ok_step(ids, i, {"k": c["k"][:, :2]})},
      ValueError, "`step_fn`"),
     ({"initial_cache": {"k": tf.zeros([2, 4])},
       "step_fn": lambda ids, i, c: _ok_step(ids, i, {"v": c["k"]})},
      ValueError, "`step_fn`")],
)
@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_invalid_arguments(search, kwargs, error, match):
    with pytest.raises(error, match=match):
        _call(search, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"beam_size": 0}, ValueError, "`beam_size`"),
     ({"beam_size": 2.0}, TypeError, "`beam_size`"),
     ({"length_penalty": -0.1}, ValueError, "`length_penalty`"),
     ({"length_penalty": float("nan")}, ValueError, "`length_penalty`"),
     ({"length_penalty": "0.6"}, TypeError, "`length_penalty`")],
)
def test_invalid_beam_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _call("beam", **kwargs)


def test_beam_rejects_single_token_vocabulary():
    with pytest.raises(ValueError, match="`step_fn`"):
        beam_search(lambda ids, i, c: (tf.zeros([2, 1]), c), [2], {}, 2,
                    beam_size=2)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [(([3],), {"extra": -1}, ValueError, "`extra`"),
     (([3],), {"limit": 0}, ValueError, "`limit`"),
     (([3.0],), {}, TypeError, "`source_lengths`"),
     (([[3]],), {}, ValueError, "`source_lengths`")],
)
def test_max_output_length_invalid(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        max_output_length(*args, **kwargs)


def test_top_k_by_argmax_equals_top_k():
    """Rounds of argmax give TopK's values and indices: ties to the lower
    index, -inf entries never taken twice."""
    from keras_transformer.decoding._ops import top_k_by_argmax

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 40)).astype("float32")
    x[0, [4, 9, 30]] = 5.0  # ties
    x[1, 5:] = -np.inf  # fewer finite entries than k
    x[2, :] = -np.inf
    values, indices = top_k_by_argmax(tf.constant(x), 8)
    expected = tf.math.top_k(tf.constant(x), 8)
    np.testing.assert_array_equal(values, expected.values)
    np.testing.assert_array_equal(indices, expected.indices)


@pytest.mark.parametrize("rules", [
    {}, {"min_length": 3, "no_repeat_ngram_size": 2}])
def test_beam_under_xla_with_argmax_top_k_and_wide_buffers(rules):
    """What the SavedModel's `translate_xla` runs: beam search compiled by
    XLA, rounds of argmax for its TopK and buffers wider than the
    data-dependent limit, gives the graph's ids and scores."""
    model, contexts = ToyModel(seed=11), _contexts(3, seed=11)
    start = tf.fill([3], START_ID)
    expected_ids, expected_scores = beam_search(
        model.cached_step, start, model.initial_cache(contexts), 5,
        beam_size=3, **rules)

    @tf.function(jit_compile=True)
    def run(start, context, max_length):
        cache = model.initial_cache(context)
        return beam_search(model.cached_step, start, cache, max_length,
                           beam_size=3, output_length=tf.shape(context)[1] + 6,
                           argmax_top_k=True, **rules)

    ids, scores = run(start, contexts, tf.constant(5))
    assert ids.shape == (3, 3, 10)
    np.testing.assert_array_equal(ids[..., :5], expected_ids)
    np.testing.assert_array_equal(ids[..., 5:], PAD_ID)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
