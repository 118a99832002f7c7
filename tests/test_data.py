"""Tests for keras_transformer.data: corpora readers and make_dataset."""

import collections
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.data import pipeline, tfds_reader
from keras_transformer.data.corpora import (
    ParallelCorpus,
    read_aligned,
    read_tsv,
)
from keras_transformer.data.encoding import encode_pairs
from keras_transformer.data.loader import load_corpus
from keras_transformer.data.pipeline import make_dataset
from keras_transformer.data.tfds_reader import load_tfds

START, END = 2, 3


class Chars:
    """Fake tokenizer: one id per character, ord + 4 (ids 0..3 reserved)."""

    def tokenize(self, texts):
        return tf.strings.unicode_decode(texts, "UTF-8") + 4


def ids(text):
    return [ord(c) + 4 for c in text]


def unpad(row):
    row = list(row)
    while row and row[-1] == 0:
        row.pop()
    return row


# ---------------------------------------------------------------- corpora


TSV_BYTES = (
    b"\xef\xbb\xbfhello\thallo\n"           # 1 kept (BOM removed)
    b"no tab here\n"                        # 2 missing_tab
    b"a\tb\tc\n"                            # 3 extra_columns
    b"  \t x\n"                             # 4 empty_side
    b"\n"                                   # 5 blank
    b"caf\xe9\tx\n"                         # 6 undecodable (Latin-1)
    b"  spaced \t  gespaced \r\n"           # 7 kept, stripped, CRLF
    + "line\u2028sep\tü\n".encode()         # 8 kept: U+2028 is no newline
    + b"y\t\n"                              # 9 empty_side
)


def test_read_tsv_counts_each_malformed_kind(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(TSV_BYTES)
    corpus = read_tsv(path)
    assert corpus.sources == ["hello", "spaced", "line\u2028sep"]
    assert corpus.targets == ["hallo", "gespaced", "ü"]
    assert corpus.stats.lines_read == 9
    assert corpus.stats.kept == 3
    assert dict(corpus.stats.skipped) == {
        "missing_tab": 1, "extra_columns": 1, "empty_side": 2, "blank": 1,
        "undecodable": 1,
    }
    assert corpus.stats.example_lines["empty_side"] == (4, 9)
    assert corpus.stats.example_lines["undecodable"] == (6,)
    assert "skipped 6" in corpus.stats.summary()


def test_read_tsv_allow_extra_columns(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("Go.\tGeh.\tCC-BY 2.0 (France)\nHi.\tHallo!\n", "utf-8")
    corpus = read_tsv(path, allow_extra_columns=True)
    assert corpus.pairs() == [("Go.", "Geh."), ("Hi.", "Hallo!")]
    assert read_tsv(path).stats.skipped == {"extra_columns": 1}


def test_read_tsv_without_valid_line_reports_counts(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("one\ntwo\n\n", "utf-8")
    with pytest.raises(ValueError, match="no valid pair.*missing_tab=2"):
        read_tsv(path)
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="no valid pair: read 0, kept 0"):
        load_corpus(str(empty))


@pytest.mark.parametrize("reader", ["tsv", "corpus", "aligned"])
def test_missing_file_names_the_path(tmp_path, reader):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        if reader == "tsv":
            read_tsv(missing)
        elif reader == "corpus":
            load_corpus(missing)
        else:
            load_corpus(f"{missing},{missing}")


def test_read_aligned(tmp_path):
    src, tgt = tmp_path / "train.en", tmp_path / "train.de"
    src.write_bytes(b"one\ntwo\n\xff\n\nfive\tfive\nsix")
    tgt.write_bytes(b"eins\nzwei\ndrei\n\nf\xc3\xbcnf\n  \n")
    corpus = read_aligned(src, tgt)
    assert corpus.pairs() == [("one", "eins"), ("two", "zwei"),
                              ("five\tfive", "fünf")]
    assert corpus.stats.skipped == {"undecodable": 1, "blank": 1,
                                    "empty_side": 1}
    assert corpus.stats.lines_read == 6
    assert load_corpus(f"{src},{tgt}").pairs() == corpus.pairs()


def test_read_aligned_different_line_counts(tmp_path):
    src, tgt = tmp_path / "a.txt", tmp_path / "b.txt"
    src.write_text("1\n2\n3\n", "utf-8")
    tgt.write_text("1\n2\n", "utf-8")
    with pytest.raises(ValueError, match="3 lines.*a.txt.*2 lines.*b.txt"):
        read_aligned(src, tgt)


def test_load_corpus_specs(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("a\tb\n", "utf-8")
    assert load_corpus(str(path)).pairs() == [("a", "b")]
    with pytest.raises(ValueError, match="`spec`"):
        load_corpus("a,b,c")
    with pytest.raises(ValueError, match="`spec`"):
        load_corpus("")
    with pytest.raises(ValueError, match="`language`"):
        load_corpus("bundled:xx")
    corpus = load_corpus("bundled:fr", split="test")
    assert corpus.target_language == "fr" and len(corpus) == 500


def test_parallel_corpus_length_mismatch():
    with pytest.raises(ValueError, match="`sources` and `targets`"):
        ParallelCorpus(["a"], [])


# ------------------------------------------------------------------- TFDS

TFDS_NAME = "ted_hrlr_translate/pt_to_en"


def _fake_ted(self, split, *args, **kwargs):
    pt = [b"ol\xc3\xa1", b"obrigado", b"  ", b"tchau"]
    en = [split.encode(), b"thank you", b"empty pt", b"bye"]
    return tf.data.Dataset.from_tensor_slices({"pt": pt, "en": en})


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_load_tfds_uses_supervised_keys(tfds, tmp_path):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fake_ted):
        corpus = load_tfds(TFDS_NAME, "validation", data_dir=str(tmp_path))
        reverse = load_tfds(TFDS_NAME, source_key="en", target_key="pt",
                            max_examples=2)
        via_spec = load_corpus(f"tfds:{TFDS_NAME}", split="test")
    assert corpus.pairs() == [("olá", "validation"), ("obrigado", "thank you"),
                              ("tchau", "bye")]
    assert (corpus.source_language, corpus.target_language) == ("pt", "en")
    assert corpus.stats.skipped == {"empty_side": 1}
    assert reverse.pairs() == [("train", "olá"), ("thank you", "obrigado")]
    assert via_spec.sources[0] == "olá" and via_spec.targets[0] == "test"


def test_load_tfds_random_mock(tfds):
    with tfds.testing.mock_data(num_examples=3,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        corpus = load_tfds(TFDS_NAME, "train")
    assert corpus.stats.lines_read == 3


def test_load_tfds_bad_arguments(tfds):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fake_ted):
        with pytest.raises(ValueError, match="`source_key`.*'de'"):
            load_tfds(TFDS_NAME, source_key="de", target_key="en")
        with pytest.raises(ValueError, match="`name`"):
            load_tfds("no_such_dataset_xyz")
        with pytest.raises(ValueError, match="`max_examples`"):
            load_tfds(TFDS_NAME, max_examples=0)


def test_load_tfds_without_tfds_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"keras-seq2seq-transformer\[tfds\]"):
        tfds_reader.load_tfds(TFDS_NAME)


# --------------------------------------------------------------- pipeline

PAIRS = [("ab", "xyz"), ("hello", "hi"), ("a", "bcdef"), ("q", "r")]


def test_make_dataset_structure_shift_and_padding():
    ds = make_dataset(PAIRS[:2], Chars(), Chars(), batch_size=2,
                      shuffle=False)
    batches = list(ds)
    assert len(batches) == 1
    inputs, labels = batches[0]
    assert set(inputs) == {"encoder_inputs", "decoder_inputs"}
    for tensor in (inputs["encoder_inputs"], inputs["decoder_inputs"],
                   labels):
        assert tensor.dtype == tf.int32
    np.testing.assert_array_equal(inputs["encoder_inputs"], [
        ids("ab") + [END, 0, 0, 0], ids("hello") + [END]])
    np.testing.assert_array_equal(inputs["decoder_inputs"], [
        [START] + ids("xyz"), [START] + ids("hi") + [0]])
    np.testing.assert_array_equal(labels, [
        ids("xyz") + [END], ids("hi") + [END, 0]])


def _collect(ds):
    """Returns (source, decoder, label) rows without padding, and shapes."""
    rows, shapes = [], []
    for inputs, labels in ds:
        shapes.append((labels.shape[0], inputs["encoder_inputs"].shape[1],
                       labels.shape[1]))
        for e, d, y in zip(inputs["encoder_inputs"].numpy(),
                           inputs["decoder_inputs"].numpy(), labels.numpy()):
            rows.append((tuple(unpad(e)), tuple(unpad(d)), tuple(unpad(y))))
    return rows, shapes


def _random_pairs(n, max_chars, seed=0):
    rng = np.random.default_rng(seed)
    return [("s" * int(rng.integers(1, max_chars)),
             "t" * int(rng.integers(1, max_chars))) for _ in range(n)]


@pytest.mark.parametrize("pad_to_bucket_boundary", [False, True])
def test_token_budget_and_every_pair_once(pad_to_bucket_boundary):
    pairs = _random_pairs(300, 40)
    ds = make_dataset(pairs, Chars(), Chars(), batch_tokens=64, max_length=48,
                      seed=1, bucket_lengths=[4, 8, 16, 32],
                      pad_to_bucket_boundary=pad_to_bucket_boundary)
    rows, shapes = _collect(ds)
    assert ds.cardinality() == len(shapes)
    for batch, source_len, target_len in shapes:
        assert batch * max(source_len, target_len) <= 64
        if pad_to_bucket_boundary:
            assert source_len == target_len
            assert source_len in (4, 8, 16, 32, 48)
    expected = [(tuple(ids(s) + [END]), tuple([START] + ids(t)),
                 tuple(ids(t) + [END])) for s, t in pairs]
    assert collections.Counter(rows) == collections.Counter(expected)
    # Bucketing groups similar lengths: 300 pairs in 64-token batches.
    assert len(shapes) < 300


def test_drop_and_truncate_counts():
    pairs = [("abcd", "wxyz"), ("abcde", "w"), ("a", "vwxyz"), ("ab", "yz")]
    dropped = encode_pairs(pairs, Chars(), Chars(), max_length=5)
    assert (dropped.stats.pairs, dropped.stats.kept, dropped.stats.dropped,
            dropped.stats.truncated) == (4, 2, 2, 0)
    np.testing.assert_array_equal(dropped.indices, [0, 3])
    assert (dropped.stats.longest_source, dropped.stats.longest_target) == (
        6, 6)
    truncated = encode_pairs(pairs, Chars(), Chars(), max_length=5,
                             length_policy="truncate")
    stats = truncated.stats
    assert (stats.kept, stats.dropped, stats.truncated_source,
            stats.truncated_target, stats.truncated) == (4, 0, 1, 1, 2)
    assert stats.source_tokens == 4 + 4 + 1 + 2 + 4
    rows, _ = _collect(make_dataset(truncated, batch_size=4, shuffle=False))
    assert rows[1] == (tuple(ids("abcd") + [END]), (START,) + tuple(ids("w")),
                       tuple(ids("w") + [END]))
    assert rows[2][2] == tuple(ids("vwxy") + [END])
    assert "2 dropped" in dropped.stats.summary()


def test_seed_gives_same_batches_and_epochs_reshuffle():
    pairs = _random_pairs(60, 12)

    def batches(seed):
        ds = make_dataset(pairs, Chars(), Chars(), batch_size=60, seed=seed)
        return [labels.numpy().tolist() for _, labels in ds.repeat(2)]

    first = batches(7)
    assert first == batches(7)
    assert first != batches(8)
    assert first[0] != first[1]  # a new order each epoch


def test_repeat_and_encoded_pairs_reuse():
    encoded = encode_pairs(PAIRS, Chars(), Chars(), max_length=8)
    ds = make_dataset(encoded, batch_size=3, repeat=True, seed=0)
    assert len(list(ds.take(5))) == 5
    assert ds.cardinality() == tf.data.INFINITE_CARDINALITY
    with pytest.raises(ValueError, match="`max_length`"):
        make_dataset(encoded, max_length=9)
    with pytest.raises(ValueError, match="`length_policy`"):
        make_dataset(encoded, length_policy="truncate")


def test_works_with_a_distribution_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    ds = make_dataset(PAIRS, Chars(), Chars(), batch_tokens=32,
                      max_length=8, seed=0)
    inputs, labels = next(iter(strategy.experimental_distribute_dataset(ds)))
    assert labels.dtype == tf.int32
    assert inputs["decoder_inputs"].shape == labels.shape


@pytest.mark.parametrize("kwargs, argument", [
    (dict(max_length=1), "max_length"),
    (dict(max_length=64, batch_tokens=32), "batch_tokens"),
    (dict(length_policy="keep"), "length_policy"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=4, batch_tokens=64), "batch_tokens"),
    (dict(bucket_lengths=[8, 4]), "bucket_lengths"),
    (dict(bucket_lengths=[8, 300]), "bucket_lengths"),
    (dict(seed=-1), "seed"),
])
def test_validation_errors_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make_dataset(PAIRS, Chars(), Chars(), **kwargs)


def test_all_pairs_dropped_names_max_length():
    with pytest.raises(ValueError, match="`max_length`.*3 pairs were all"):
        make_dataset(PAIRS[:3], Chars(), Chars(), max_length=2)


class Dense:
    def tokenize(self, texts):
        return tf.zeros([tf.shape(texts)[0], 3], tf.int32)


@pytest.mark.parametrize("data, source, error, argument", [
    (PAIRS, object(), TypeError, "source_tokenizer"),
    (PAIRS, Dense(), ValueError, "source_tokenizer"),
    ("ab\tcd", Chars(), TypeError, "data"),
    ([], Chars(), ValueError, "data"),
    ([("a", 1)], Chars(), TypeError, "pairs"),
])
def test_bad_data_and_tokenizers(data, source, error, argument):
    with pytest.raises(error, match=f"`{argument}"):
        make_dataset(data, source, Chars())


def test_default_bucket_lengths():
    lengths = pipeline.default_bucket_lengths(30)
    assert lengths[:3] == [8, 9, 10] and lengths[-1] == 30
    assert all(b > a for a, b in zip(lengths, lengths[1:]))


def test_with_the_real_sentencepiece_tokenizer():
    from keras_transformer.data.numbers import bundled_corpus
    from keras_transformer.text import (
        SentencePieceTokenizer,
        learn_tokenizer_models,
    )

    corpus = bundled_corpus("de", "test", max_number=999, train_size=100,
                            valid_size=10, test_size=20)
    source, target = (SentencePieceTokenizer(proto) for proto in
                      learn_tokenizer_models(corpus.sources, corpus.targets,
                                             vocab_size=400))
    ds = make_dataset(corpus, source, target, batch_size=8, shuffle=False)
    detokenized = {"encoder_inputs": [], "decoder_inputs": [], "labels": []}
    for inputs, labels in ds:
        detokenized["encoder_inputs"] += list(
            source.detokenize(inputs["encoder_inputs"]).numpy())
        detokenized["decoder_inputs"] += list(
            target.detokenize(inputs["decoder_inputs"]).numpy())
        detokenized["labels"] += list(target.detokenize(labels).numpy())
    encoded = [s.encode() for s in corpus.sources]
    assert detokenized["encoder_inputs"] == encoded
    encoded = [t.encode() for t in corpus.targets]
    assert detokenized["decoder_inputs"] == encoded
    assert detokenized["labels"] == encoded
