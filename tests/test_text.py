"""Tests for keras_transformer.text: SubwordTokenizer and its vocabulary."""

import json
import random
import re
import subprocess
import sys
import textwrap
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.text import (
    END_ID,
    PAD_ID,
    RESERVED_TOKENS,
    START_ID,
    UNK_ID,
    SubwordTokenizer,
    build_vocabulary,
)

CORPUS = [
    "Hello, world!",
    "Hello again, my dear world.",
    "The cat sleeps; the dogs don't.",
    "Größe matters: a café in Zürich serves naïve crêpes.",
    "L'homme et la femme parlent français à Paris.",
    "Numbers: 3.14, 42 and 1,000,000 (one million) — 7%.",
    "我喜欢猫。我喜欢狗！",
    "Mixed text: I like 猫 and 狗, do you?",
    "Questions? Answers! Quotes \"like this\" and 'that'.",
    "E-mail me at someone@example.org #tags $5 & more",
    "Tabs\tand\nnewlines are whitespace too.",
    "The quick brown fox jumps over the lazy dog.",
    "Le renard brun saute par-dessus le chien paresseux.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
] * 3
VOCAB_SIZE = 400


@pytest.fixture(autouse=True)
def _isolate_keras_state():
    """Overrides conftest's fixture: these tests touch no Keras state, and its
    seed reset clears TF's kernel cache, re-optimizing every graph (~0.4 s a
    call)."""
    yield


def reference_normalize(text, lower_case=False, strip_accents=False,
                        form="NFKC"):
    """Python (unicodedata) restatement of the documented normalization."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = unicodedata.normalize(form, text)
    if lower_case:
        text = text.lower()
    if strip_accents:
        text = "".join(
            c for c in unicodedata.normalize("NFD", text)
            if unicodedata.category(c) != "Mn"
        )
    if lower_case or strip_accents:
        text = unicodedata.normalize(form, text)
    spaced = "".join(
        " " if c in "\t\n\f\r \u2581"
        or unicodedata.category(c) in ("Zs", "Zl", "Zp", "Cc") else c
        for c in text
    )
    return re.sub(" +", " ", spaced).strip(" ")


def decode(tensor):
    return [value.decode("utf-8") for value in tensor.numpy().tolist()]


@pytest.fixture(scope="module")
def tokenizer():
    return SubwordTokenizer.from_corpus(CORPUS, vocab_size=VOCAB_SIZE)


# A hand-written vocabulary, for exact ids.
HAND_VOCAB = list(RESERVED_TOKENS) + [
    "\u2581", "\u2581hello", ",", "\u2581world", "!", "##s", "\u2581l", "'",
    "homme", "\u2581我", "喜", "欢", "猫", "\u2581caf", "##é", "##e", "\u2581#",
    "x",
]
HAND_IDS = {token: i for i, token in enumerate(HAND_VOCAB)}


@pytest.fixture(scope="module")
def hand_tokenizer():
    return SubwordTokenizer(HAND_VOCAB, lower_case=True)


@pytest.mark.parametrize("text, pieces", [
    ("Hello, world!", ["\u2581hello", ",", "\u2581world", "!"]),
    ("  hello   worlds ", ["\u2581hello", "\u2581world", "##s"]),
    ("l'homme", ["\u2581l", "'", "homme"]),
    ("我喜欢猫", ["\u2581我", "喜", "欢", "猫"]),
    ("Café cafe", ["\u2581caf", "##é", "\u2581caf", "##e"]),
    ("#x", ["\u2581#", "x"]),
    ("", []),
])
def test_tokenize_exact_ids(hand_tokenizer, text, pieces):
    ids = hand_tokenizer.tokenize([text])
    assert ids.dtype == tf.int32
    assert ids.to_list() == [[HAND_IDS[piece] for piece in pieces]]
    assert decode(hand_tokenizer.detokenize(ids)) == [
        reference_normalize(text, lower_case=True)]


def test_unknown_characters_become_unk_tokens(hand_tokenizer):
    tokenizer = hand_tokenizer
    # Ж is unknown inside a word; ☃ is a symbol, a fragment of its own.
    ids = tokenizer.tokenize(["hello Жhello ☃"]).to_list()[0]
    # Each unknown character is one [UNK]; known continuations ("##e") stay.
    assert ids == [HAND_IDS["\u2581hello"], HAND_IDS["\u2581"], UNK_ID,
                   UNK_ID, HAND_IDS["##e"], UNK_ID, UNK_ID, UNK_ID,
                   HAND_IDS["\u2581"], UNK_ID]
    assert decode(tokenizer.detokenize([ids])) == [
        "hello [UNK][UNK]e[UNK][UNK][UNK] [UNK]"]


def test_reserved_ids(tokenizer):
    assert (PAD_ID, UNK_ID, START_ID, END_ID) == (0, 1, 2, 3)
    assert RESERVED_TOKENS == ("[PAD]", "[UNK]", "[START]", "[END]")
    assert tokenizer.vocabulary[:4] == list(RESERVED_TOKENS)
    ids = tokenizer.tokenize(CORPUS).flat_values.numpy()
    # tokenize adds no [START]/[END] and no [UNK] on its own corpus.
    assert not np.isin(ids, [PAD_ID, UNK_ID, START_ID, END_ID]).any()


@pytest.mark.parametrize("text", [
    "Hello, world!",
    "Größe café naïve",
    "l'homme",
    "我喜欢猫",
    "I like 猫 and 狗, do you?",
    "Numbers: 3.14, 42 and 1,000,000 (one million) — 7%.",
    "  Tabs\tand\n\nnewlines\u3000\u00a0too  ",
    "#tags $5 & someone@example.org",
    "",
])
def test_round_trip(tokenizer, text):
    ids = tokenizer.tokenize([text])
    assert UNK_ID not in ids.flat_values.numpy()
    expected = reference_normalize(text)
    assert decode(tokenizer.normalize([text])) == [expected]
    assert decode(tokenizer.detokenize(ids)) == [expected]


def test_round_trip_whole_corpus_in_one_batch(tokenizer):
    ids = tokenizer.tokenize(CORPUS)
    assert decode(tokenizer.detokenize(ids)) == [
        reference_normalize(line) for line in CORPUS]


def test_normalization_is_documented_form(tokenizer):
    assert decode(tokenizer.normalize(["  a\t b\n", "ﬁ ５", "e\u0301"])) == [
        "a b", "fi 5", "é"]


def test_invalid_utf8_becomes_replacement_character(tokenizer):
    raw = [b"caf\xc3\xff ok", b"\xf0\x9f\x98", b"a\xe2\x82b"]
    expected = [reference_normalize(value) for value in raw]
    assert expected[0] == "caf\ufffd\ufffd ok"
    assert decode(tokenizer.normalize(raw)) == expected
    ids = tokenizer.tokenize(raw)
    # U+FFFD is not in the vocabulary: each one is an [UNK].
    texts = decode(tokenizer.detokenize(ids))
    assert texts == [value.replace("\ufffd", "[UNK]") for value in expected]


def test_very_long_input(tokenizer):
    long_word = "hello" * 2000
    many_words = " ".join(["the cat sleeps"] * 3000)
    ids = tokenizer.tokenize([long_word, many_words])
    assert UNK_ID not in ids.flat_values.numpy()
    assert decode(tokenizer.detokenize(ids)) == [long_word, many_words]


def test_detokenize_dense_drops_padding_start_and_after_end(tokenizer):
    hello, world, cat = tokenizer.tokenize(["hello", "world", "cat"]).to_list()
    rows = [
        [START_ID] + hello + world + [END_ID] + cat,
        hello,
        [START_ID, END_ID] + hello + world,
        hello + cat + world + [END_ID, END_ID],
    ]
    width = max(len(row) for row in rows) + 1
    ids = np.array([row + [PAD_ID] * (width - len(row)) for row in rows])
    expected = ["hello world", "hello", "", "hello cat world"]
    for dtype in (tf.int32, tf.int64):
        dense = tf.constant(ids, dtype)
        assert decode(tokenizer.detokenize(dense)) == expected
        ragged = tf.ragged.constant(rows, dtype)
        assert decode(tokenizer.detokenize(ragged)) == expected


def test_detokenize_out_of_range_ids_are_unk(tokenizer):
    hello = tokenizer.tokenize(["hello"]).to_list()[0]
    ids = tf.constant([hello + [tokenizer.vocab_size, -5]], tf.int64)
    assert decode(tokenizer.detokenize(ids)) == ["hello[UNK][UNK]"]


def test_lookup_returns_tokens(tokenizer):
    ids = tokenizer.tokenize(["Hello, world!"])
    tokens = tokenizer.lookup(ids).to_list()[0]
    vocabulary = tokenizer.vocabulary
    assert [t.decode("utf-8") for t in tokens] == [
        vocabulary[i] for i in ids.to_list()[0]]
    dense = tf.constant([[START_ID, ids.to_list()[0][0], END_ID, PAD_ID]])
    tokens = tokenizer.lookup(dense).to_list()[0]
    assert [t.decode("utf-8") for t in tokens] == [
        "[START]", vocabulary[ids.to_list()[0][0]], "[END]"]


def test_tokenize_in_tf_data_and_tf_function(tokenizer):
    eager = tokenizer.tokenize(CORPUS[:8]).to_list()
    dataset = tf.data.Dataset.from_tensor_slices(CORPUS[:8]).batch(3)
    mapped = [row for batch in dataset.map(tokenizer.tokenize)
              for row in batch.to_list()]
    assert mapped == eager

    @tf.function
    def round_trip(strings):
        ids = tokenizer.tokenize(strings)
        return tokenizer.detokenize(ids.to_tensor()), ids.row_lengths()

    texts, lengths = round_trip(tf.constant(CORPUS[:8]))
    assert decode(texts) == [reference_normalize(x) for x in CORPUS[:8]]
    assert lengths.numpy().tolist() == [len(row) for row in eager]


@pytest.mark.slow
def test_saved_model_round_trip_in_fresh_process(tokenizer, tmp_path):
    path = str(tmp_path / "tokenizer")
    tf.saved_model.save(tokenizer, path)
    texts = ["Hello, world!", "Größe 我喜欢猫 Ж", ""]
    ids = tokenizer.tokenize(texts)
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (registers the ops)
        module = tf.saved_model.load({path!r})
        ids = module.tokenize(tf.constant({texts!r}))
        dense = tf.constant({ids.to_tensor().numpy().tolist()!r}, tf.int32)
        print(json.dumps({{
            "ids": ids.to_list(),
            "text": [t.decode() for t in module.detokenize(ids).numpy()],
            "dense": [t.decode() for t in module.detokenize(dense).numpy()],
            "tokens": [[t.decode() for t in row]
                       for row in module.lookup(ids).to_list()],
            "normalized": [t.decode() for t in
                           module.normalize(tf.constant({texts!r})).numpy()],
            "modules": sorted(m for m in sys.modules
                              if m.startswith("keras_transformer")),
        }}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["modules"] == []
    assert loaded["ids"] == ids.to_list()
    assert loaded["text"] == decode(tokenizer.detokenize(ids))
    assert loaded["dense"] == loaded["text"]
    assert loaded["tokens"] == [[t.decode() for t in row] for row in
                                tokenizer.lookup(ids).to_list()]
    assert loaded["normalized"] == decode(tokenizer.normalize(texts))


def test_vocabulary_building_is_deterministic(tmp_path):
    first = SubwordTokenizer.from_corpus(CORPUS, vocab_size=VOCAB_SIZE)
    shuffled = list(CORPUS)
    random.Random(0).shuffle(shuffled)
    second = SubwordTokenizer.from_corpus(shuffled, vocab_size=VOCAB_SIZE)
    first.save_vocabulary(tmp_path / "a.txt")
    second.save_vocabulary(tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_bytes() == (
        tmp_path / "b.txt").read_bytes()


def test_vocabulary_from_dataset_equals_from_iterable(tokenizer):
    scalars = tf.data.Dataset.from_tensor_slices(CORPUS)
    assert build_vocabulary(scalars, VOCAB_SIZE) == tokenizer.vocabulary
    assert build_vocabulary(scalars.batch(5), VOCAB_SIZE) == (
        tokenizer.vocabulary)
    as_bytes = [line.encode("utf-8") for line in CORPUS]
    assert build_vocabulary(as_bytes, VOCAB_SIZE) == tokenizer.vocabulary


def test_vocabulary_size_and_learned_pieces(tokenizer):
    vocabulary = tokenizer.vocabulary
    assert len(vocabulary) == tokenizer.vocab_size <= VOCAB_SIZE
    assert len(set(vocabulary)) == len(vocabulary)
    # Whole words were learned (with the word marker), and continuations.
    assert "\u2581Hello" in vocabulary
    # A smaller budget makes the learner add multi-character continuations.
    small = build_vocabulary(CORPUS, 200)
    assert len(small) <= 200
    assert small[:4] == list(RESERVED_TOKENS)
    assert "##ers" in small and "##ers" not in vocabulary


def test_save_and_load_vocabulary(tokenizer, tmp_path):
    path = tmp_path / "run" / "vocab.txt"
    tokenizer.save_vocabulary(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[:-1] == tokenizer.vocabulary and lines[-1] == ""
    restored = SubwordTokenizer.from_vocabulary_file(path, **tokenizer.config)
    assert restored.vocabulary == tokenizer.vocabulary
    assert restored.config == tokenizer.config == {
        "lower_case": False, "strip_accents": False,
        "normalization_form": "NFKC"}
    assert json.loads(json.dumps(tokenizer.config)) == tokenizer.config
    assert restored.tokenize(CORPUS).to_list() == (
        tokenizer.tokenize(CORPUS).to_list())


@pytest.mark.parametrize("lower_case, strip_accents, expected", [
    (True, False, "größe café naïve à paris"),
    (False, True, "Große cafe naive A Paris"),
    (True, True, "große cafe naive a paris"),
])
def test_lower_case_and_strip_accents(lower_case, strip_accents, expected):
    tokenizer = SubwordTokenizer.from_corpus(
        CORPUS, vocab_size=VOCAB_SIZE, lower_case=lower_case,
        strip_accents=strip_accents)
    text = "Größe  CAFÉ naïve À Paris" if lower_case else (
        "Größe café naïve À Paris")
    assert reference_normalize(text, lower_case, strip_accents) == expected
    assert decode(tokenizer.normalize([text])) == [expected]
    assert decode(tokenizer.detokenize(tokenizer.tokenize([text]))) == [
        expected]
    if lower_case:
        assert not any(c.isupper() for t in tokenizer.vocabulary[4:]
                       for c in t)
    if strip_accents:
        assert not any(c in "éïöüà" for t in tokenizer.vocabulary for c in t)


def test_nfc_keeps_compatibility_characters():
    tokenizer = SubwordTokenizer(HAND_VOCAB, normalization_form="NFC")
    assert decode(tokenizer.normalize(["ﬁ ５ e\u0301"])) == ["ﬁ ５ é"]
    assert tokenizer.config["normalization_form"] == "NFC"


@pytest.mark.parametrize("vocabulary, match", [
    ([], "vocabulary"),
    (["[UNK]", "[PAD]", "[START]", "[END]", "a"], "vocabulary"),
    (["[PAD]", "[UNK]", "[START]"], "vocabulary"),
    (list(RESERVED_TOKENS) + ["a", "a"], "vocabulary"),
    (list(RESERVED_TOKENS) + ["a\nb"], "vocabulary"),
    (list(RESERVED_TOKENS) + [""], "vocabulary"),
])
def test_invalid_vocabulary_raises(vocabulary, match):
    with pytest.raises(ValueError, match=f"`{match}`"):
        SubwordTokenizer(vocabulary)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"vocabulary": "abc"}, TypeError, "vocabulary"),
    ({"lower_case": "yes"}, TypeError, "lower_case"),
    ({"strip_accents": 1}, TypeError, "strip_accents"),
    ({"normalization_form": "NFD"}, ValueError, "normalization_form"),
])
def test_invalid_options_raise(kwargs, error, match):
    arguments = {"vocabulary": HAND_VOCAB, **kwargs}
    with pytest.raises(error, match=f"`{match}`.*Received: {match}="):
        SubwordTokenizer(**arguments)


@pytest.mark.parametrize("corpus, vocab_size, error, match", [
    (CORPUS, 20, ValueError, "vocab_size"),
    (CORPUS, 8000.0, TypeError, "vocab_size"),
    (CORPUS, True, TypeError, "vocab_size"),
    ("a single string", 100, TypeError, "corpus"),
    (["ok", 3], 100, TypeError, "corpus"),
    (["", "   "], 100, ValueError, "corpus"),
    (tf.data.Dataset.range(3), 100, TypeError, "corpus"),
])
def test_invalid_build_arguments_raise(corpus, vocab_size, error, match):
    with pytest.raises(error, match=f"`{match}`"):
        build_vocabulary(corpus, vocab_size)


def test_missing_vocabulary_file_raises(tmp_path):
    with pytest.raises(ValueError, match="`path`"):
        SubwordTokenizer.from_vocabulary_file(tmp_path / "missing.txt")
