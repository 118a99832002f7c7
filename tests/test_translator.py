"""The Translator: cache == no cache, n-best, attention, bad input."""

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.text import END_ID, START_ID

pytestmark = pytest.mark.slow

SENTENCES = ["four hundred and five", "twelve", "nine hundred and ninety",
             "seven hundred and thirty-one"]


def _naive_greedy(model, source_ids, steps):
    """Re-runs the whole model on the growing prefix: no cache at all."""
    batch = source_ids.shape[0]
    prefix = np.full((batch, 1), START_ID, np.int32)
    finished = np.zeros(batch, bool)
    for _ in range(steps):
        logits = model({"encoder_inputs": source_ids,
                        "decoder_inputs": prefix}).numpy()
        token = logits[:, -1].argmax(-1).astype(np.int32)
        token[finished] = 0
        finished |= token == END_ID
        prefix = np.concatenate([prefix, token[:, None]], axis=1)
        if finished.all():
            break
    return prefix[:, 1:]


def test_cached_greedy_equals_naive_loop(translator):
    source_ids = translator.source_ids(tf.constant(SENTENCES)).numpy()
    cached = translator.translate_tokens_greedy(source_ids)["target_ids"]
    cached = cached.numpy()
    naive = _naive_greedy(translator.model, source_ids, cached.shape[1])
    np.testing.assert_array_equal(cached, naive[:, :cached.shape[1]])
    # The tiny model has learned to stop on most inputs.
    assert (cached == END_ID).any(axis=1).mean() >= 0.5


def test_text_signatures_agree_with_token_signatures(translator):
    source_ids = translator.source_ids(tf.constant(SENTENCES))
    ids = translator.translate_tokens(source_ids)["target_ids"]
    text = translator.translate(tf.constant(SENTENCES))["translation"]
    np.testing.assert_array_equal(
        translator.target_tokenizer.detokenize(ids).numpy(), text.numpy())


def test_nbest_sorted_and_best_matches_translate(translator):
    nbest = translator(SENTENCES[0], nbest=4)
    assert len(nbest) == 4
    scores = [score for _, score in nbest]
    assert scores == sorted(scores, reverse=True)
    best = translator.translate(tf.constant(SENTENCES[:1]))
    assert nbest[0][0] == best["translation"].numpy()[0].decode()
    np.testing.assert_allclose(nbest[0][1], best["score"].numpy()[0],
                               atol=1e-5)


def test_attention_rows_are_distributions(translator):
    source, target, weights = translator.attention(SENTENCES[0])
    assert weights.shape == (len(target), len(source))
    assert source[-1] == "[END]"
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("search", ["translate", "translate_greedy"])
def test_bad_input(translator, search):
    fn = getattr(translator, search)
    long_text = " ".join(["nine hundred"] * 200)
    texts = ["", "   \t ", b"four \xff\xfe hundred", "我喜欢猫 ☃",
             long_text, "twelve"]
    result = fn(tf.constant(texts))
    translation = [t.decode("utf-8") for t in result["translation"].numpy()]
    score = result["score"].numpy()
    assert translation[:2] == ["", ""] and score[:2].tolist() == [0.0, 0.0]
    assert np.all(np.isfinite(score))
    # Invalid bytes, unknown characters and over-long input still translate.
    assert all(isinstance(t, str) for t in translation[2:])
    # A row of a mixed batch equals the same text alone.
    alone = fn(tf.constant(["twelve"]))
    assert alone["translation"].numpy()[0].decode() == translation[-1]
    np.testing.assert_allclose(alone["score"].numpy()[0], score[-1],
                               atol=1e-4)
    empty = fn(tf.constant([], tf.string))
    assert empty["translation"].shape == (0,)


def test_long_input_is_truncated(translator):
    ids = translator.source_ids(tf.constant([" ".join(["nine"] * 500)]))
    assert ids.shape[1] == translator.max_length
    assert ids.numpy()[0, -1] == END_ID


def test_python_call(translator):
    assert translator([]) == []
    single = translator("twelve", beam_size=1)
    assert isinstance(single, tuple) and isinstance(single[0], str)
    with pytest.raises(ValueError, match="`nbest`"):
        translator("twelve", beam_size=2, nbest=3)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_jit_compiled_search_equals_graph_search(trained_run, translator,
                                                 beam_size):
    from keras_transformer.translator import Translator

    xla = Translator(translator.model, translator.source_tokenizer,
                     translator.target_tokenizer, jit_compile=True)
    # Rows of different lengths, one empty: the output length the XLA
    # program is traced with must be the paper's rule, as without XLA.
    texts = SENTENCES + [""]
    source_ids = translator.source_ids(tf.constant(texts))
    ids, scores = translator.search_tokens(source_ids, beam_size)
    xla_ids, xla_scores = xla.search_tokens(source_ids, beam_size)
    np.testing.assert_array_equal(xla_ids.numpy(), ids.numpy())
    np.testing.assert_allclose(xla_scores.numpy(), scores.numpy(),
                               atol=1e-4)
    # Greedy runs as an XLA program; beam search stays the graph search.
    xla_searches = [key for key in xla.__dict__["_searches"]
                    if isinstance(key, tuple)]
    assert xla_searches == ([("xla", 1)] if beam_size == 1 else [])
    expected = translator(texts, beam_size=beam_size)
    got = xla(texts, beam_size=beam_size)
    assert [text for text, _ in got] == [text for text, _ in expected]
    np.testing.assert_allclose([score for _, score in got],
                               [score for _, score in expected], atol=1e-4)


def test_search_tokens_bad_input(translator):
    from keras_transformer.translator import Translator

    with pytest.raises(ValueError, match="`beam_size`"):
        translator.search_tokens([[5, END_ID]], beam_size=0)
    with pytest.raises(ValueError, match="`source_ids`"):
        translator.search_tokens([5, END_ID])
    with pytest.raises(TypeError, match="`jit_compile`"):
        Translator(translator.model, translator.source_tokenizer,
                   translator.target_tokenizer, jit_compile="yes")


@pytest.mark.parametrize("bad", [-1, 10_000])
def test_ids_outside_the_vocabulary_are_rejected(translator, bad):
    ids = np.array([[5, bad, END_ID]], np.int32)
    # From Python: a ValueError naming the argument and the value.
    with pytest.raises(ValueError, match=rf"`source_ids`.*{bad}"):
        translator.search_tokens(ids)
    # The exported tf.function (what the SavedModel and ONNX run).
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"`source_ids`(.|\n)*{bad}"):
        translator.translate_tokens(tf.constant(ids))


def test_batch_without_columns_follows_the_empty_input_rule(translator):
    result = translator.translate_tokens(tf.zeros([3, 0], tf.int32))
    assert result["target_ids"].shape == (3, 0)
    np.testing.assert_array_equal(result["score"].numpy(), [0.0, 0.0, 0.0])
    # A row holding only [END] (an empty text) gives nothing either.
    result = translator.translate_tokens_greedy(
        tf.constant([[END_ID, 0], [5, END_ID]], tf.int32))
    assert result["score"].numpy()[0] == 0.0
    assert not result["target_ids"].numpy()[0].any()
    assert result["target_ids"].numpy()[1].any()


def test_checked_ids_give_a_batch_without_columns_one_pad_column(translator):
    # What the token graphs see, so that no graph traced from them (ONNX
    # included) meets a zero-width tensor.
    checked = tf.function(translator.checked_ids, input_signature=[
        tf.TensorSpec([None, None], tf.int32)])
    for shape, expected in [((3, 0), (3, 1)), ((0, 0), (0, 1)),
                            ((0, 5), (0, 5)), ((2, 1), (2, 1))]:
        ids = checked(tf.zeros(shape, tf.int32))
        assert ids.shape == expected
        assert not ids.numpy().any()
    assert translator.checked_ids(tf.zeros([3, 0], tf.int32)).shape == (3, 1)
    source_ids = translator.source_ids(tf.constant(SENTENCES))
    np.testing.assert_array_equal(checked(source_ids), source_ids)


@pytest.mark.parametrize("search", ["translate_tokens",
                                    "translate_tokens_greedy"])
@pytest.mark.parametrize("shape", [(3, 0), (0, 0), (0, 5)])
def test_batch_without_rows_or_columns(translator, search, shape):
    result = getattr(translator, search)(tf.zeros(shape, tf.int32))
    assert result["target_ids"].shape == (shape[0], 0)
    np.testing.assert_array_equal(result["score"].numpy(),
                                  np.zeros(shape[0]))


@pytest.mark.parametrize("search", ["translate_tokens",
                                    "translate_tokens_greedy"])
def test_row_of_padding_changes_no_other_row(translator, search):
    source_ids = translator.source_ids(tf.constant(SENTENCES)).numpy()
    with_padding = source_ids.copy()
    with_padding[1] = 0
    expected = getattr(translator, search)(source_ids)
    result = getattr(translator, search)(with_padding)
    ids, want = result["target_ids"].numpy(), expected["target_ids"].numpy()
    width = max(ids.shape[1], want.shape[1])
    ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])))
    want = np.pad(want, ((0, 0), (0, width - want.shape[1])))
    others = [0, 2, 3]
    np.testing.assert_array_equal(ids[others], want[others])
    np.testing.assert_allclose(result["score"].numpy()[others],
                               expected["score"].numpy()[others], atol=1e-5)
    assert result["score"].numpy()[1] == 0.0
    assert not ids[1].any()
