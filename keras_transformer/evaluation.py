"""Quality metrics: translation (BLEU, chrF, exact match), summaries (ROUGE).

The paper reports case-sensitive corpus BLEU (section 6.1); sacrebleu's
defaults (13a tokenization, mixed case, exponential smoothing) give scores
that other papers can compare with. Summaries are scored with Google's
`rouge-score` package (ROUGE-1, ROUGE-2, ROUGE-L F1, Porter stemming), the
implementation summarization papers report.
"""

import re
import statistics
from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def evaluate_translations(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    *,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> dict[str, float]:
    """Scores translations against references.

    Args:
        hypotheses: sequence of str, one translation per sentence.
        references: sequence with one item per hypothesis: a str (one
            reference), or a sequence of str (several references; every
            item must have as many).
        tokenize: str, sacrebleu's BLEU tokenizer. Defaults to "13a", the
            tokenization of the WMT `mteval-v13a.pl` script.
        lowercase: bool, case-insensitive BLEU. Defaults to False.

    Returns:
        A dict with
        - "bleu": sacrebleu corpus BLEU, 0 to 100;
        - "chrf": sacrebleu corpus chrF (character 6-grams, beta 2), 0-100;
        - "exact_match": the fraction of hypotheses equal to one of their
          references after stripping surrounding whitespace, 0 to 1;
        - "num_sentences": the number of hypotheses.

    Example:
    >>> scores = evaluate_translations(["forty two"], ["forty-two"])
    >>> scores["exact_match"]
    0.0
    """
    hypotheses = _check_strings("hypotheses", hypotheses)
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(
            "`references` must be a sequence with one item per hypothesis. "
            f"Received: references={references!r}")
    if len(references) != len(hypotheses):
        raise ValueError(
            "`references` must have one item per hypothesis "
            f"({len(hypotheses)}). Received: len(references)="
            f"{len(references)}")
    per_sentence = [
        [item] if isinstance(item, str) else _check_strings("references",
                                                              item)
        for item in references
    ]
    counts = {len(item) for item in per_sentence}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(
            "Every item of `references` must hold the same, non-zero "
            f"number of references. Received: counts={sorted(counts)}")
    # sacrebleu wants one stream per reference position.
    streams = [list(stream) for stream in zip(*per_sentence)]
    bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
    exact = sum(
        hypothesis.strip() in {reference.strip() for reference in refs}
        for hypothesis, refs in zip(hypotheses, per_sentence))
    return {
        "bleu": float(bleu.corpus_score(hypotheses, streams).score),
        "chrf": float(CHRF().corpus_score(hypotheses, streams).score),
        "exact_match": exact / len(hypotheses),
        "num_sentences": len(hypotheses),
    }


def evaluate_summaries(hypotheses: Sequence[str],
                       references: Sequence[str]) -> dict[str, float]:
    """Scores summaries: ROUGE-1/2/L F1 and length statistics.

    ROUGE comes from `rouge-score` with stemming on; scores are the mean
    over documents of the F1 of each, times 100. Tokens are those of
    rouge-score's own tokenizer (lower case, runs of letters and digits,
    words over 3 characters Porter-stemmed) extended beyond ASCII: on
    ASCII text the tokens, and so the scores, are exactly rouge-score's
    defaults; letters of other scripts are kept (the default tokenizer
    drops them: every Chinese or Greek summary would score 0), and each
    Han, Hiragana and Katakana character is a token of its own, since
    those scripts write no spaces.

    Args:
        hypotheses: sequence of str, one summary per document.
        references: sequence of str, the reference summaries.

    Returns:
        A dict with "rouge1", "rouge2", "rougeL" (0 to 100),
        "summary_words" and "reference_words" (mean ROUGE tokens per
        summary), "length_ratio" (their quotient), "empty_summaries"
        (count) and "num_documents".

    Example:
    >>> round(evaluate_summaries(["the cat sat"],
    ...                          ["the cat sat on the mat"])["rouge1"], 2)
    66.67
    """
    from rouge_score import rouge_scorer  # The package imports nltk: slow.

    hypotheses = _check_strings("hypotheses", hypotheses)
    references = _check_strings("references", references)
    if len(references) != len(hypotheses):
        raise ValueError(
            "`references` must have one summary per hypothesis "
            f"({len(hypotheses)}). Received: len(references)="
            f"{len(references)}")
    tokenizer = _RougeTokenizer()
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=tokenizer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        # rouge-score's argument order is (target, prediction).
        scores = scorer.score(reference, hypothesis)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    count = len(hypotheses)
    summary_words = [len(tokenizer.tokenize(h)) for h in hypotheses]
    reference_words = [len(tokenizer.tokenize(r)) for r in references]
    mean_summary = statistics.fmean(summary_words)
    mean_reference = statistics.fmean(reference_words)
    return {
        **{name: 100.0 * total / count for name, total in totals.items()},
        "summary_words": mean_summary,
        "reference_words": mean_reference,
        "length_ratio": (mean_summary / mean_reference if mean_reference
                         else 0.0),
        "empty_summaries": sum(not h.strip() for h in hypotheses),
        "num_documents": count,
    }


# Letters and digits of any script; Han, Hiragana and Katakana characters
# stand alone (those scripts write words without spaces).
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_RE = re.compile(f"[{_UNSPACED}]|(?:(?![{_UNSPACED}])[^\\W_])+")


class _RougeTokenizer:
    """rouge-score's tokenizer, for every script (see evaluate_summaries)."""

    def __init__(self):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        tokens = _TOKEN_RE.findall(text.lower())
        return [self._stemmer.stem(token) if len(token) > 3
                and token.isascii() else token for token in tokens]


def _check_strings(name, values):
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(
            f"`{name}` must be a sequence of str. Received: {name}={values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"`{name}` must not be empty. Received: {name}=[]")
    wrong = [value for value in values if not isinstance(value, str)]
    if wrong:
        raise TypeError(
            f"`{name}` must hold only str. Received: {name} item "
            f"{wrong[0]!r}")
    return values
