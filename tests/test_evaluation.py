"""Tests for keras_transformer.evaluation."""

import pytest
import sacrebleu

from keras_transformer.evaluation import (
    evaluate_summaries,
    evaluate_translations,
)

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


# --- Summaries: ROUGE -----------------------------------------------------


def test_rouge_hand_computed():
    # 3 of 3 hypothesis unigrams in the 6 of the reference: P 1, R 1/2;
    # bigrams "the cat", "cat sat" of 5: P 1, R 2/5; LCS 3 as ROUGE-1.
    scores = evaluate_summaries(["the cat sat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert scores["rouge2"] == pytest.approx(100 * 2 * 0.4 / 1.4)
    assert scores["rougeL"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert scores["summary_words"] == 3 and scores["reference_words"] == 6
    assert scores["length_ratio"] == pytest.approx(0.5)
    assert scores["num_documents"] == 1 and scores["empty_summaries"] == 0


def test_rouge_stems_and_averages_over_documents():
    # Porter: cats -> cat, running/runs -> run; "cat" (3 letters) is kept.
    scores = evaluate_summaries(["cats running", ""], ["cat runs", "a b"])
    assert scores["rouge1"] == pytest.approx(50.0)  # (100 + 0) / 2
    assert scores["empty_summaries"] == 1


def test_rouge_equals_rouge_score_defaults_on_ascii():
    from rouge_score import rouge_scorer

    hypotheses = ["The quick brown fox jumped over dogs!",
                  "don't_stop me now, 42 times", "A B C", "x"]
    references = ["the quick brown foxes jump over the lazy dog",
                  "Don't stop me now: forty-two times.", "c b a", "y z"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
                                      use_stemmer=True)
    expected = {name: 100 * sum(
        scorer.score(r, h)[name].fmeasure
        for h, r in zip(hypotheses, references)) / 4
        for name in ("rouge1", "rouge2", "rougeL")}
    scores = evaluate_summaries(hypotheses, references)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value)


def test_rouge_counts_every_script():
    # The default rouge-score tokenizer keeps only [a-z0-9]: this would
    # be 0. Han characters are single tokens: 3 of 4 unigrams, 2 of 3
    # bigrams in common.
    scores = evaluate_summaries(["我喜欢猫", "καλημέρα κόσμε"],
                                ["我喜欢狗", "καλημέρα φίλε"])
    assert scores["rouge1"] == pytest.approx((75.0 + 50.0) / 2)
    assert scores["rouge2"] == pytest.approx((200 / 3 + 0.0) / 2)


@pytest.mark.parametrize("hypotheses, references, error, match", [
    (["a"], ["a", "b"], ValueError, "`references`"),
    ([], [], ValueError, "`hypotheses`"),
    ("a", ["a"], TypeError, "`hypotheses`"),
    (["a"], [3], TypeError, "`references`"),
])
def test_rouge_bad_arguments(hypotheses, references, error, match):
    with pytest.raises(error, match=match):
        evaluate_summaries(hypotheses, references)
