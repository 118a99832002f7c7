"""Extractive summary baselines, the yardsticks a summarizer must beat.

- `first_sentence`: the lead sentence of the document ("Lead-1");
- `first_words`: its first n words, n usually the mean reference length.

Sentences end at ".", "!" or "?" followed by a space, or at the full-width
"。", "！", "？" (no space follows them in Chinese or Japanese). An
abbreviation such as "e.g. " also ends one: a baseline, kept simple and
stated.
"""

import re

from keras_transformer.checks import check_int

_SENTENCE_END = re.compile(r"[.!?](?=\s)|[。！？]")


def first_sentence(text: str) -> str:
    """The text up to and including its first sentence end.

    Example:
    >>> first_sentence("Reads zip files. Also writes them.")
    'Reads zip files.'
    >>> first_sentence("我喜欢猫。你呢？")
    '我喜欢猫。'
    """
    text = " ".join(text.split())
    match = _SENTENCE_END.search(text)
    return text[:match.end()] if match else text


def first_words(text: str, count: int) -> str:
    """The first `count` whitespace-separated words of `text`.

    Example:
    >>> first_words("a library to read zip files", 3)
    'a library to'
    """
    check_int("count", count, 1)
    return " ".join(text.split()[:count])
