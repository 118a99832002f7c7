"""Tests for the summarization data: TFDS sets, JSONL, the Debian corpus."""

import gzip
import importlib.resources
import importlib.util
import lzma
import pathlib
import shutil
import subprocess

import pytest
import tensorflow as tf

from keras_transformer.data import debian_corpus, read_jsonl, tfds_reader
from keras_transformer.data.loader import load_corpus
from keras_transformer.data.tfds_reader import load_tfds

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------- TFDS

DATASETS = [
    ("cnn_dailymail", "article", "highlights"),
    ("cnn_dailymail:3.4.0", "article", "highlights"),
    ("xsum", "document", "summary"),
    ("gigaword", "document", "summary"),
    ("samsum", "dialogue", "summary"),
    ("billsum", "text", "summary"),
]


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def _fake(document_key, summary_key):
    """An `as_dataset` replacement giving known texts for two features."""

    def as_dataset(self, split, *args, **kwargs):
        return tf.data.Dataset.from_tensor_slices({
            document_key: [b"a long document", b"  ", b"second text"],
            summary_key: [split.encode(), b"no document", b"short"],
            "id": [b"1", b"2", b"3"],
        })

    return as_dataset


@pytest.mark.parametrize("name, document, summary", DATASETS)
def test_summarization_features_by_name(tfds, name, document, summary):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fake(document, summary)):
        corpus = load_tfds(name, "validation")
        via_spec = load_corpus(f"tfds:{name}", split="test")
        reverse = load_corpus(f"tfds:{name}", source_field=summary,
                              target_field=document)
    assert corpus.pairs() == [("a long document", "validation"),
                              ("second text", "short")]
    assert (corpus.source_language, corpus.target_language) == (
        document, summary)
    assert corpus.stats.skipped == {"empty_side": 1}
    assert via_spec.targets == ["test", "short"]
    assert reverse.pairs() == [("train", "a long document"),
                               ("short", "second text")]


@pytest.mark.parametrize("name", sorted(tfds_reader.SUMMARIZATION_FEATURES))
def test_summarization_random_mock(tfds, name):
    with tfds.testing.mock_data(num_examples=3,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        corpus = load_tfds(name, "train")
    assert corpus.stats.lines_read == 3
    assert corpus.source_language == tfds_reader.SUMMARIZATION_FEATURES[
        name][0]


def test_table_wins_over_supervised_keys(tfds, monkeypatch):
    # xsum's supervised keys are (document, summary): a reversed table entry
    # shows that the table, not the supervised keys, picks the features.
    monkeypatch.setitem(tfds_reader.SUMMARIZATION_FEATURES, "xsum",
                        ("summary", "document"))
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fake("document", "summary")):
        corpus = load_tfds("xsum", "train")
        explicit = load_tfds("xsum", source_key="document",
                             target_key="summary")
    assert corpus.sources[0] == "train"
    assert explicit.sources[0] == "a long document"


def test_tfds_field_errors(tfds):
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE,
                                as_dataset_fn=_fake("document", "summary")):
        with pytest.raises(ValueError, match="`target_field`"):
            load_corpus("tfds:xsum", source_field="document")
        with pytest.raises(ValueError, match="`source_key`.*'title'"):
            load_corpus("tfds:xsum", source_field="title",
                        target_field="summary")


# ------------------------------------------------------------------ JSONL

JSONL_LINES = [
    '{"doc": " first text ", "sum": "one", "extra": 1}',   # 1 kept
    "not json",                                            # 2 invalid_json
    "[1, 2]",                                              # 3 invalid_json
    '{"doc": "no summary"}',                               # 4 missing_field
    '{"doc": 5, "sum": "number"}',                         # 5 non_string
    '{"doc": "x", "sum": null}',                           # 6 non_string
    '{"doc": "   ", "sum": "blank doc"}',                  # 7 empty_side
    "",                                                    # 8 blank
    '{"doc": "line\\nbreak", "sum": "caf\\u00e9"}',        # 9 kept
]


def _write_jsonl(path, lines):
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("file_name", ["d.jsonl", "d.jsonl.gz"])
def test_read_jsonl_counts_each_bad_kind(tmp_path, file_name):
    path = _write_jsonl(tmp_path / file_name, JSONL_LINES)
    corpus = load_corpus(str(path), source_field="doc", target_field="sum")
    assert corpus.pairs() == [("first text", "one"),
                              ("line\nbreak", "café")]
    assert dict(corpus.stats.skipped) == {
        "invalid_json": 2, "missing_field": 1, "non_string_field": 2,
        "empty_side": 1, "blank": 1,
    }
    assert corpus.stats.example_lines["non_string_field"] == (5, 6)
    assert corpus.stats.lines_read == 9


def test_read_jsonl_undecodable_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": "caf\xe9", "b": "x"}\n{"a": "y", "b": "z"}\n')
    corpus = read_jsonl(path, source_field="a", target_field="b")
    assert corpus.pairs() == [("y", "z")]
    assert corpus.stats.skipped == {"undecodable": 1}


@pytest.mark.parametrize("fields, argument, value", [
    (("title", "sum"), "source_field", "'title'"),
    (("doc", "abstract"), "target_field", "'abstract'"),
])
def test_read_jsonl_field_missing_everywhere(tmp_path, fields, argument,
                                             value):
    path = _write_jsonl(tmp_path / "d.jsonl", JSONL_LINES)
    with pytest.raises(ValueError,
                       match=rf"`{argument}`.*\['doc', 'extra', 'sum'\].*"
                             rf"{argument}={value}"):
        read_jsonl(path, source_field=fields[0], target_field=fields[1])


def test_read_jsonl_no_valid_pair_reports_counts(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", ["oops", '{"a": 1, "b": 2}'])
    with pytest.raises(ValueError, match="no valid pair.*invalid_json=1"):
        read_jsonl(path, source_field="a", target_field="b")


@pytest.mark.parametrize("kwargs, argument", [
    (dict(source_field="", target_field="b"), "source_field"),
    (dict(source_field="a", target_field=3), "target_field"),
])
def test_read_jsonl_bad_field_arguments(tmp_path, kwargs, argument):
    path = _write_jsonl(tmp_path / "d.jsonl", ['{"a": "x", "b": "y"}'])
    with pytest.raises(ValueError, match=f"`{argument}`"):
        read_jsonl(path, **kwargs)


def test_load_corpus_field_rules(tmp_path):
    jsonl = _write_jsonl(tmp_path / "d.jsonl", ['{"a": "x", "b": "y"}'])
    tsv = tmp_path / "d.tsv"
    tsv.write_text("x\ty\n", "utf-8")
    with pytest.raises(ValueError, match="`source_field` is required"):
        load_corpus(str(jsonl))
    with pytest.raises(ValueError, match="`target_field` is required"):
        load_corpus(str(jsonl), source_field="a")
    for spec in (str(tsv), "bundled:debian", "bundled:de"):
        with pytest.raises(ValueError, match="`source_field`.*'a'"):
            load_corpus(spec, source_field="a")
    with pytest.raises(ValueError, match="`target_field`.*'b'"):
        load_corpus(str(tsv), target_field="b")
    assert load_corpus(str(tsv)).pairs() == [("x", "y")]
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_corpus(str(tmp_path / "nope.jsonl"), source_field="a",
                    target_field="b")


# ---------------------------------------------------- bundled Debian corpus

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def debian_splits():
    return {split: debian_corpus(split) for split in SPLITS}


def test_debian_splits_are_disjoint_and_clean(debian_splits):
    for split, corpus in debian_splits.items():
        assert len(corpus) >= (1000 if split != "train" else 20_000)
        assert corpus.name == f"debian-descriptions[{split}]"
        assert (corpus.source_language, corpus.target_language) == (
            "en", "en")
        for text in corpus.sources + corpus.targets:
            assert text and text == " ".join(text.split())
        # A description is longer than its synopsis.
        assert sum(map(len, corpus.sources)) > 5 * sum(
            map(len, corpus.targets))
    sources = {split: set(c.sources) for split, c in debian_splits.items()}
    pairs = {split: set(c.pairs()) for split, c in debian_splits.items()}
    for i, first in enumerate(SPLITS):
        assert len(sources[first]) == len(debian_splits[first])
        for second in SPLITS[i + 1:]:
            assert not sources[first] & sources[second]
            assert not pairs[first] & pairs[second]


def test_load_corpus_bundled_debian(debian_splits):
    corpus = load_corpus("bundled:debian", split="test")
    assert corpus.pairs() == debian_splits["test"].pairs()
    with pytest.raises(ValueError, match="`split`.*'dev'"):
        load_corpus("bundled:debian", split="dev")


def test_debian_files_ship_as_package_data():
    folder = (importlib.resources.files("keras_transformer.data")
              / "debian_descriptions")
    for name in [f"{split}.tsv.xz" for split in SPLITS] + ["README.md"]:
        assert folder.joinpath(name).is_file()
    # Declared as a package with its data, so an install neither warns
    # nor leaves the files out.
    import configparser

    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    package = "keras_transformer.data.debian_descriptions"
    assert package in setup["options"]["packages"].split()
    assert setup["options.package_data"][package].split() == [
        "*.tsv.xz", "README.md"]


# ------------------------------------------------------- the corpus builder


@pytest.fixture(scope="module")
def builder():
    path = ROOT / "examples" / "build_debian_corpus.py"
    spec = importlib.util.spec_from_file_location("build_debian_corpus",
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PACKAGES = """\
Package: tool
Version: 1.0-1
Description: a tool
Description-md5: m1

Package: tool-doc
Source: tool (1.0-1)
Description-md5: m2

Package: libthing1
Source: thing
Description-md5: m3
"""

LONG = " Word one two three four five six seven eight nine ten eleven."

TRANSLATION = f"""\
Package: tool
Description-md5: m1
Description-en: Does   things
{LONG}
 .
  * first bullet
 - second bullet
 o third bullet

Package: tool-doc
Description-md5: m2
Description-en: documentation for tool
 Too short to keep.

Package: libthing1
Description-md5: m3
Description-en: thing library
{LONG}

Package: libthing1
Description-md5: other-md5
Description-en: not in Packages
{LONG}

Package: gone
Description-md5: m9
Description-en: not in Packages either
{LONG}
"""


def test_parse_stanzas_and_sources(builder):
    stanzas = list(builder.parse_stanzas(TRANSLATION))
    assert len(stanzas) == 5
    assert stanzas[1]["Description-en"] == (
        "documentation for tool\n Too short to keep.")
    assert builder.package_sources(PACKAGES) == {
        ("tool", "m1"): "tool", ("tool-doc", "m2"): "tool",
        ("libthing1", "m3"): "thing",
    }


def test_flatten_and_split_description(builder):
    synopsis, text = builder.split_description(
        "Does   things\n One\ttwo\n .\n  * first\n - sec-ond\n o third\n"
        " other words")
    assert synopsis == "Does things"
    assert text == "One two first sec-ond third other words"
    assert builder.flatten_description([" .", " ."]) == ""


def test_build_pairs_drops_and_deduplicates(builder):
    splits, stats = builder.build_pairs(TRANSLATION,
                                        builder.package_sources(PACKAGES))
    pairs = [pair for split in splits.values() for pair in split]
    assert sorted(pairs) == [
        ("thing", LONG.strip(), "thing library"),
        ("tool", LONG.strip() + " first bullet second bullet third bullet",
         "Does things"),
    ]
    assert (stats["read"], stats["joined"], stats["dropped_not_in_packages"],
            stats["dropped_short_description"], stats["duplicates"],
            stats["kept"]) == (5, 3, 2, 1, 0, 2)


def test_split_of_is_a_fixed_keyed_hash(builder):
    # Sentinels: the split must not change across platforms or versions.
    assert [builder.split_of(name) for name in (
        "bash", "python3-defaults", "src1", "src2")] == [
        "train", "validation", "test", "validation"]


def _stanzas_for(names):
    packages, translation = [], []
    for i, source in enumerate(names):
        packages.append(f"Package: bin{i}\nSource: {source}\n"
                        f"Description-md5: h{i}\n")
        translation.append(f"Package: bin{i}\nDescription-md5: h{i}\n"
                           f"Description-en: synopsis {i}\n{LONG} {i}\n")
        # A second binary of the same source, with the same description.
        packages.append(f"Package: dup{i}\nSource: {source}\n"
                        f"Description-md5: d{i}\n")
        translation.append(f"Package: dup{i}\nDescription-md5: d{i}\n"
                           f"Description-en: other {i}\n{LONG} {i}\n")
    return "\n".join(packages), "\n".join(translation)


def test_main_writes_three_disjoint_splits(builder, tmp_path):
    # By the keyed hash, src1 is in test, src2 in validation, the rest in
    # train.
    names = ["src0", "src1", "src2", "src3", "src4", "src6", "src7"]
    packages, translation = _stanzas_for(names)
    (tmp_path / "Packages").write_text(packages, "utf-8")
    (tmp_path / "Translation-en.xz").write_bytes(
        lzma.compress(translation.encode("utf-8")))
    out = tmp_path / "out"
    builder.main(["--translation", str(tmp_path / "Translation-en.xz"),
                  "--packages", str(tmp_path / "Packages"),
                  "--out", str(out), "--max-train-pairs", "5"])
    lines = {}
    for split in SPLITS:
        text = lzma.decompress((out / f"{split}.tsv.xz").read_bytes())
        lines[split] = text.decode("utf-8").splitlines()
    assert lines["test"] == [f"{LONG.strip()} 1\tsynopsis 1"]
    assert lines["validation"] == [f"{LONG.strip()} 2\tsynopsis 2"]
    assert len(lines["train"]) == 5  # the cap, out of 5 sources
    assert all(line.count("\t") == 1 for line in lines["train"])


@pytest.mark.skipif(shutil.which("lz4") is None, reason="needs lz4")
def test_read_text_lz4(builder, tmp_path):
    plain = tmp_path / "Packages"
    plain.write_text(PACKAGES, "utf-8")
    subprocess.run(["lz4", "-q", str(plain), str(plain) + ".lz4"],
                   check=True)
    assert builder.read_text(str(plain) + ".lz4") == PACKAGES
    assert builder.read_text(plain) == PACKAGES
