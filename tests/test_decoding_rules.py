"""The summarization rules of the searches: minimum length, no-repeat n-grams.

Checked against search references over Python lists that apply the rules
by their definition (recounting every n-gram of the prefix), on a scripted
model and on random cached toy models, eagerly, in graphs and with XLA
(after conversion to ONNX: `tests/test_decoding.py`).
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.decoding import (
    END_ID,
    PAD_ID,
    START_ID,
    beam_search,
    greedy_search,
)
from keras_transformer.decoding.rules import constrain
from tests.test_decoding import (
    ToyModel,
    _contexts,
    reference_beam,
    reference_greedy,
)

# A scripted model that loves "4 5 4 5 ..." and wants to end at once.
V = 8


def repeating_step_fn(ids, index, cache):
    """logits: END first at every step, then the other of 4/5, then 6."""
    del index
    nxt = tf.where(tf.equal(ids, 4), 5, 4)
    logits = (3.0 * tf.one_hot(END_ID, V)[tf.newaxis]
              + 2.0 * tf.one_hot(nxt, V) + 1.0 * tf.one_hot(6, V)[tf.newaxis])
    return logits, cache


def banned_by_definition(seq, n):
    """Tokens t such that seq + [t] ends with an n-gram seen in seq."""
    if n == 0 or len(seq) < n - 1:
        return set()
    tail = tuple(seq[len(seq) - (n - 1):]) if n > 1 else ()
    return {seq[j + n - 1] for j in range(len(seq) - n + 1)
            if tuple(seq[j:j + n - 1]) == tail}


def ruled(log_prob_fn, min_length, n):
    def fn(seq):
        log_probs = np.array(log_prob_fn(seq), np.float64)
        if len(seq) < min_length:
            log_probs[END_ID] = -np.inf
        for token in banned_by_definition(list(seq), n):
            log_probs[token] = -np.inf
        return log_probs
    return fn


def ngrams(row, n):
    tokens = [t for t in row if t not in (PAD_ID, END_ID)]
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# --- The rules on a scripted model -------------------------------------------


def test_scripted_model_without_rules_ends_at_once():
    ids, _ = greedy_search(repeating_step_fn, [START_ID], {}, max_length=9)
    assert ids.numpy()[0, 0] == END_ID


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_min_length_delays_the_end(search):
    if search == "greedy":
        ids, scores = greedy_search(repeating_step_fn, [START_ID], {}, 9,
                                    min_length=4)
        row = ids.numpy()[0]
    else:
        ids, scores = beam_search(repeating_step_fn, [START_ID], {}, 9,
                                  beam_size=2, min_length=4)
        row = ids.numpy()[0, 0]
    assert list(row[:5]) == [4, 5, 4, 5, END_ID]
    # The score is the model's own log-probabilities of the chosen tokens.
    log_probs = tf.nn.log_softmax(repeating_step_fn(
        tf.constant([4]), 0, {})[0]).numpy()[0]
    expected = 4 * log_probs[5] + log_probs[END_ID]  # 5|4 == 4|5 == END|*
    if search == "greedy":
        np.testing.assert_allclose(scores[0], expected, rtol=1e-5)


@pytest.mark.parametrize("search", ["greedy", "beam"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngrams_on_scripted_model(search, n):
    kwargs = {"min_length": 8, "no_repeat_ngram_size": n}
    if search == "greedy":
        ids, _ = greedy_search(repeating_step_fn, [START_ID], {}, 9,
                               **kwargs)
        rows = [ids.numpy()[0]]
    else:
        ids, _ = beam_search(repeating_step_fn, [START_ID], {}, 9,
                             beam_size=3, **kwargs)
        rows = list(ids.numpy()[0])
    for row in rows:
        grams = ngrams(list(row), n)
        assert len(grams) == len(set(grams)), (n, row)
    expected = reference_greedy(
        ruled(lambda s: tf.nn.log_softmax(repeating_step_fn(
            tf.constant([s[-1] if s else START_ID]), 0, {})[0])[0].numpy(),
            8, n), 9)[0]
    if search == "greedy":
        assert list(rows[0]) == expected


def test_constrain_adds_nothing_when_off():
    log_probs = tf.math.log(tf.fill([2, 6], 1.0 / 6))
    out = constrain(log_probs, tf.zeros([2, 4], tf.int32), tf.constant(0))
    assert out is log_probs


def test_constrain_matches_the_definition_on_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 5))
        index = int(rng.integers(0, 12))
        seq = rng.integers(4, 7, size=[3, 12]).astype(np.int32)
        out = constrain(tf.zeros([3, 7]), tf.constant(seq),
                        tf.constant(index), no_repeat_ngram_size=n).numpy()
        for row in range(3):
            banned = banned_by_definition(list(seq[row, :index]), n)
            assert set(np.flatnonzero(np.isinf(out[row]))) == banned


# --- Random cached models against the references ----------------------------


def _log_prob_fn(model, context):
    return lambda seq: model.numpy_log_probs(context, [START_ID] + seq)


RULES = [(3, 0), (0, 2), (2, 1), (5, 3)]  # (min_length, no_repeat)


@pytest.mark.parametrize("min_length, n", RULES)
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_rules_equal_reference(seed, min_length, n):
    model, contexts = ToyModel(seed=seed), _contexts(4, seed)
    ids, scores = greedy_search(
        model.cached_step, [START_ID] * 4, model.initial_cache(contexts), 7,
        min_length=min_length, no_repeat_ngram_size=n)
    for row, context in enumerate(contexts):
        expected, score = reference_greedy(
            ruled(_log_prob_fn(model, context), min_length, n), 7)
        np.testing.assert_array_equal(ids[row], expected)
        np.testing.assert_allclose(scores[row], score, rtol=1e-5)


@pytest.mark.parametrize("min_length, n", RULES)
@pytest.mark.parametrize("seed, beam_size, alpha", [(0, 2, 0.6), (1, 3, 1.0)])
def test_beam_rules_equal_reference(seed, beam_size, alpha, min_length, n):
    model, contexts = ToyModel(seed=seed), _contexts(3, seed)
    ids, scores = beam_search(
        model.cached_step, [START_ID] * 3, model.initial_cache(contexts), 7,
        beam_size=beam_size, length_penalty=alpha, min_length=min_length,
        no_repeat_ngram_size=n)
    for row, context in enumerate(contexts):
        expected, expected_scores = reference_beam(
            ruled(_log_prob_fn(model, context), min_length, n), 7,
            beam_size, alpha)
        np.testing.assert_array_equal(ids[row], expected)
        np.testing.assert_allclose(scores[row], expected_scores, rtol=1e-5)


# --- Graph, XLA, ONNX -------------------------------------------------------


def _ruled_search(model, search):
    def run(start, context, max_length=7):
        cache = model.initial_cache(context)
        rules = {"min_length": 3, "no_repeat_ngram_size": 2}
        if search == "greedy":
            return greedy_search(model.cached_step, start, cache, max_length,
                                 **rules)
        return beam_search(model.cached_step, start, cache, max_length,
                           beam_size=3, **rules)
    return run


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_rules_in_graph_and_xla_match_eager(search):
    model, contexts = ToyModel(seed=4), _contexts(3, seed=4)
    run = _ruled_search(model, search)
    start = tf.fill([3], START_ID)
    expected_ids, expected_scores = run(start, contexts)
    for function in (tf.function(run), tf.function(run, jit_compile=True)):
        ids, scores = function(start, contexts)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_length": -1}, "`min_length`"),
    ({"no_repeat_ngram_size": 1.5}, "`no_repeat_ngram_size`"),
])
@pytest.mark.parametrize("search", [greedy_search, beam_search])
def test_invalid_rules(search, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        search(repeating_step_fn, [START_ID], {}, 4, **kwargs)


@pytest.mark.parametrize("length, alpha", [(1, 0.6), (7, 0.6), (30, 1.0),
                                           (4, 0.0)])
def test_length_penalty_is_the_contracts_rule(length, alpha):
    # The tensor rule of the searches and its plain-number twin.
    from keras_transformer import contract
    from keras_transformer.decoding.rules import gnmt_length_penalty

    np.testing.assert_allclose(float(gnmt_length_penalty(length, alpha)),
                               contract.gnmt_penalty(length, alpha),
                               rtol=1e-6)
