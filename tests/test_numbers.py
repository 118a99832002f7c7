"""Tests for keras_transformer.data.numbers: the number corpus."""

import unicodedata

import pytest

from keras_transformer.data.corpora import read_tsv
from keras_transformer.data.numbers import (
    bundled_corpus,
    number_to_words,
    split_numbers,
    write_bundled_tsv,
)

SMALL = dict(max_number=999, train_size=200, valid_size=30, test_size=40)


@pytest.mark.parametrize("number, language, words", [
    (87412, "en", "eighty-seven thousand, four hundred and twelve"),
    (87412, "de", "siebenundachtzigtausendvierhundertzw\u00f6lf"),
    (87412, "fr", "quatre-vingt-sept mille quatre cent douze"),
    (0, "de", "null"),
    (1, "de", "eins"),
    (21, "de", "einundzwanzig"),
    (100, "de", "einhundert"),
    (1000, "de", "eintausend"),
    (1001, "de", "eintausendeins"),
    (30_000, "de", "drei\u00dfigtausend"),
    # num2words 0.5.14 writes "einhunderteinstausend".
    (101_000, "de", "einhunderteintausend"),
    (201_001, "de", "zweihunderteintausendeins"),
    (0, "fr", "z\u00e9ro"),
    (1, "fr", "un"),
    (21, "fr", "vingt et un"),
    (71, "fr", "soixante et onze"),
    (80, "fr", "quatre-vingts"),
    (80_000, "fr", "quatre-vingt mille"),
    (99, "fr", "quatre-vingt-dix-neuf"),
    (100, "fr", "cent"),
    (200, "fr", "deux cents"),
    (1000, "fr", "mille"),
    (1001, "fr", "mille un"),
])
def test_number_to_words(number, language, words):
    assert number_to_words(number, language) == words


def test_splits_are_disjoint_sized_and_stable():
    splits = split_numbers(**SMALL)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [
        200, 30, 40]
    train, valid, test = (set(splits[s]) for s in
                          ("train", "validation", "test"))
    assert not (train & valid or train & test or valid & test)
    assert set(range(100)) <= train
    assert max(train | valid | test) <= 999
    assert split_numbers(**SMALL) == splits
    assert split_numbers(**SMALL, seed=1)["test"] != splits["test"]
    # Pinned: the hash ranking must not change between versions.
    assert split_numbers()["test"][:5] == [43959, 37669, 73942, 90093, 9669]


def test_default_splits_are_disjoint():
    splits = split_numbers()
    sizes = [len(v) for v in splits.values()]
    assert sizes == [20_000, 500, 500]
    assert len(set().union(*splits.values())) == sum(sizes)


@pytest.mark.parametrize("language", ["de", "fr"])
def test_bundled_corpus(language):
    corpus = bundled_corpus(language, "valid", **SMALL)
    numbers = split_numbers(**SMALL)["validation"]
    assert corpus.sources == [number_to_words(n, "en") for n in numbers]
    assert corpus.targets == [number_to_words(n, language) for n in numbers]
    assert (corpus.source_language, corpus.target_language) == (
        "en", language)
    assert bundled_corpus(language, "validation", **SMALL) == corpus
    train = bundled_corpus(language, "train", **SMALL)
    assert train.pairs()[:2] == [
        ("zero", number_to_words(0, language)),
        ("one", number_to_words(1, language)),
    ]
    for text in train.sources + train.targets:
        assert text and unicodedata.is_normalized("NFC", text)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(language="es"), "language"),
    (dict(split="dev"), "split"),
    (dict(max_number=1_000_000), "max_number"),
    (dict(train_size=50), "train_size"),
    (dict(test_size=0), "test_size"),
    (dict(max_number=999, train_size=990), "train_size"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}"):
        bundled_corpus(**kwargs)


def test_write_bundled_tsv_round_trips(tmp_path):
    paths = write_bundled_tsv(tmp_path / "nums", "fr", **SMALL)
    assert sorted(paths) == ["test", "train", "validation"]
    for split, path in paths.items():
        corpus = read_tsv(path)
        assert corpus.pairs() == bundled_corpus("fr", split, **SMALL).pairs()
        assert corpus.stats.num_skipped == 0
