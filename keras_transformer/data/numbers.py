"""The bundled number corpus (English number phrases to German or French).

A small translation task that needs no download, for the quickstart and
tests: "eighty-seven thousand, four hundred and twelve" ->
"siebenundachtzigtausendvierhundertzwölf" (German) or "quatre-vingt-sept
mille quatre cent douze" (French). The phrases come from `num2words`, in
Unicode NFC.

Splits are fixed: every number 0..`max_number` is ranked by a keyed hash
(BLAKE2b of the seed and the number, so the ranking is the same on every
platform and NumPy version); the first `test_size` numbers form the test
split, the next `valid_size` the validation split, and the training split is
0..99 followed by the next `train_size - 100` numbers. The numbers 0..99 are
always in training since every other phrase is built from them ("null" or
"zéro" would otherwise be unlearnable). The three splits share no number
when generated with the same `max_number`, `valid_size`, `test_size` and
`seed`.
"""

import hashlib
import os
import pathlib
import unicodedata

from num2words import num2words

from keras_transformer.checks import check_int
from keras_transformer.data.corpora import ParallelCorpus

LANGUAGES = ("de", "fr")
SPLITS = ("train", "validation", "test")
DEFAULT_MAX_NUMBER = 99_999
DEFAULT_TRAIN_SIZE = 20_000
DEFAULT_VALID_SIZE = 500
DEFAULT_TEST_SIZE = 500
DEFAULT_SEED = 0
# German and French phrases above a million change form ("eine Million").
_MAX_SUPPORTED_NUMBER = 999_999
_ALWAYS_TRAIN = 100  # 0..99: the words every other phrase is built from.


def number_to_words(number: int, language: str) -> str:
    """Returns `number` written out in `language` ("en", "de" or "fr").

    Corrects num2words' German "...einstausend" (e.g. for 101000) to
    "...eintausend".

    Example:

    >>> number_to_words(87412, "de")
    'siebenundachtzigtausendvierhundertzwölf'
    """
    text = num2words(number, lang=language)
    if language == "de":
        text = text.replace("einstausend", "eintausend")
    return unicodedata.normalize("NFC", text)


def _check_positive_int(value, argument: str, minimum: int = 1):
    check_int(argument, value, minimum)


def _rank(number: int, seed: int) -> bytes:
    return hashlib.blake2b(
        f"{seed}:{number}".encode(), digest_size=8
    ).digest()


def split_numbers(
    *,
    max_number: int = DEFAULT_MAX_NUMBER,
    train_size: int = DEFAULT_TRAIN_SIZE,
    valid_size: int = DEFAULT_VALID_SIZE,
    test_size: int = DEFAULT_TEST_SIZE,
    seed: int = DEFAULT_SEED,
) -> dict[str, list[int]]:
    """Returns the numbers of each split: {"train", "validation", "test"}.

    Args:
        max_number: int, the largest number (at most 999,999).
        train_size: int, numbers in the training split (at least 100).
        valid_size: int, numbers in the validation split.
        test_size: int, numbers in the test split.
        seed: int, the key of the hash that assigns numbers to splits.
    """
    _check_positive_int(max_number, "max_number", _ALWAYS_TRAIN)
    if max_number > _MAX_SUPPORTED_NUMBER:
        raise ValueError(
            f"`max_number` must be at most {_MAX_SUPPORTED_NUMBER}. "
            f"Received: max_number={max_number}"
        )
    _check_positive_int(train_size, "train_size", _ALWAYS_TRAIN)
    _check_positive_int(valid_size, "valid_size")
    _check_positive_int(test_size, "test_size")
    _check_positive_int(seed, "seed", 0)
    if train_size + valid_size + test_size > max_number + 1:
        raise ValueError(
            "`train_size + valid_size + test_size` must be at most "
            f"`max_number + 1` = {max_number + 1}. Received: "
            f"train_size={train_size}, valid_size={valid_size}, "
            f"test_size={test_size}"
        )
    ranked = sorted(range(_ALWAYS_TRAIN, max_number + 1),
                    key=lambda n: _rank(n, seed))
    held_out = test_size + valid_size
    extra_train = train_size - _ALWAYS_TRAIN
    return {
        "train": list(range(_ALWAYS_TRAIN))
        + ranked[held_out:held_out + extra_train],
        "validation": ranked[test_size:held_out],
        "test": ranked[:test_size],
    }


def bundled_corpus(
    language: str = "de",
    split: str = "train",
    *,
    max_number: int = DEFAULT_MAX_NUMBER,
    train_size: int = DEFAULT_TRAIN_SIZE,
    valid_size: int = DEFAULT_VALID_SIZE,
    test_size: int = DEFAULT_TEST_SIZE,
    seed: int = DEFAULT_SEED,
) -> ParallelCorpus:
    """Returns one split of the English -> `language` number corpus.

    Generating the default training split takes a few seconds (num2words
    writes about 5,000 phrases a second).

    Args:
        language: str, "de" (German) or "fr" (French).
        split: str, "train", "validation" (or "valid") or "test".
        max_number, train_size, valid_size, test_size, seed: as in
            `split_numbers`.

    Returns:
        A `ParallelCorpus` with English sources.

    Example:

    >>> corpus = bundled_corpus("de", "test", test_size=2)
    >>> len(corpus)
    2
    """
    if language not in LANGUAGES:
        raise ValueError(
            f"`language` must be one of {LANGUAGES}. "
            f"Received: language={language!r}"
        )
    split = "validation" if split == "valid" else split
    if split not in SPLITS:
        raise ValueError(
            f"`split` must be one of {SPLITS} (or 'valid'). "
            f"Received: split={split!r}"
        )
    numbers = split_numbers(
        max_number=max_number, train_size=train_size, valid_size=valid_size,
        test_size=test_size, seed=seed,
    )[split]
    return ParallelCorpus(
        sources=[number_to_words(n, "en") for n in numbers],
        targets=[number_to_words(n, language) for n in numbers],
        name=f"bundled:{language}[{split}]",
        source_language="en",
        target_language=language,
    )


def write_bundled_tsv(directory, language: str = "de",
                      **kwargs) -> dict[str, pathlib.Path]:
    """Writes `train.tsv`, `validation.tsv` and `test.tsv` to `directory`.

    Args:
        directory: str or path-like; created if absent.
        language: str, "de" or "fr".
        **kwargs: the size and seed arguments of `bundled_corpus`.

    Returns:
        The path of each split's file, by split name.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"`directory` must be a path. Received: directory={directory!r}"
        )
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        corpus = bundled_corpus(language, split, **kwargs)
        paths[split] = directory / f"{split}.tsv"
        lines = (f"{s}\t{t}\n" for s, t in corpus.pairs())
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths
