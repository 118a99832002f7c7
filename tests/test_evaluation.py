"""Tests for keras_transformer.evaluation."""

import pytest
import sacrebleu

from keras_transformer.evaluation import evaluate_translations

HYPOTHESES = [
    "the cat sat on the mat .",
    "forty two thousand and seven",
    "a quick brown fox jumps over the lazy dog",
    "hello world",
]
REFERENCES = [
    "the cat sat on the mat .",
    "forty-two thousand and seven",
    "the quick brown fox jumped over the lazy dog",
    " hello world ",
]


def test_matches_sacrebleu_and_hand_counted_exact_match():
    scores = evaluate_translations(HYPOTHESES, REFERENCES)
    assert scores["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score)
    assert scores["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score)
    # Sentences 1 and 4 match (4 after stripping the spaces around it).
    assert scores["exact_match"] == 0.5
    assert scores["num_sentences"] == 4
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100


def test_perfect_and_disjoint_sentinels():
    sentence = "one two three four five six"
    perfect = evaluate_translations([sentence], [sentence])
    assert perfect == {"bleu": pytest.approx(100.0),
                       "chrf": pytest.approx(100.0), "exact_match": 1.0,
                       "num_sentences": 1}
    disjoint = evaluate_translations(["zzz qqq"], [sentence])
    assert disjoint["bleu"] == 0.0 and disjoint["exact_match"] == 0.0


def test_several_references_per_sentence():
    references = [[ref, "something else entirely"] for ref in REFERENCES]
    scores = evaluate_translations(HYPOTHESES, references)
    streams = [REFERENCES, ["something else entirely"] * len(REFERENCES)]
    assert scores["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES, streams).score)
    assert scores["chrf"] == pytest.approx(
        sacrebleu.corpus_chrf(HYPOTHESES, streams).score)
    assert scores["exact_match"] == 0.5
    other = evaluate_translations(["b"], [["a", "b"]])
    assert other["exact_match"] == 1.0


def test_options_reach_sacrebleu():
    hypotheses = ["The Cat sat ON the mat today"]
    references = ["the cat sat on the mat today"]
    scores = evaluate_translations(hypotheses, references, lowercase=True,
                                   tokenize="char")
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(
        hypotheses, [references], lowercase=True, tokenize="char").score)
    assert scores["bleu"] == pytest.approx(100.0)


@pytest.mark.parametrize("hypotheses,references,error,name", [
    ("a b", ["a b"], TypeError, "hypotheses"),
    ([], [], ValueError, "hypotheses"),
    (["a", 3], ["a", "b"], TypeError, "hypotheses"),
    (["a"], "a", TypeError, "references"),
    (["a", "b"], ["a"], ValueError, "references"),
    (["a", "b"], [["a"], ["b", "c"]], ValueError, "references"),
    (["a"], [[]], ValueError, "references"),
    (["a"], [[1]], TypeError, "references"),
])
def test_rejects_bad_input(hypotheses, references, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        evaluate_translations(hypotheses, references)
