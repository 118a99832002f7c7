"""Translation quality: corpus BLEU and chrF (sacrebleu) and exact match.

The paper reports case-sensitive corpus BLEU (section 6.1); sacrebleu's
defaults (13a tokenization, mixed case, exponential smoothing) give scores
that other papers can compare with.
"""

from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF


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
