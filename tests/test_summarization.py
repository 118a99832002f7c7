"""Summarization end to end: a run's task, long sources, the rules in every
runtime, ROUGE from the CLI.

One tiny summarization run with copy attention (as the summarization
preset has it), trained from the command line on a JSONL file of Debian
package descriptions (`bundled:debian`), serves the module (its tests are
marked slow; the others train nothing). Its exports (SavedModel, ONNX
token and text graphs, int8) carry the copy path; CTranslate2 has none, so
the rules are checked there on the pytest run's translation run.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.cli import main
from keras_transformer.config import TransformerConfig
from keras_transformer.contract import SearchSettings
from keras_transformer.data import debian_corpus, encode_pairs, make_dataset
from keras_transformer.run_directory import RunDirectory
from keras_transformer.text.special_tokens import END_ID, PAD_ID

SOURCE_LENGTH, TARGET_LENGTH = 48, 16


def _write_jsonl(path, corpus, count):
    with open(path, "w", encoding="utf-8") as file:
        for source, target in corpus.pairs()[:count]:
            file.write(json.dumps({"description": source,
                                   "synopsis": target}) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def summarization_run(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("summarization")
    train = _write_jsonl(folder / "train.jsonl", debian_corpus("validation"),
                         400)
    test = _write_jsonl(folder / "test.jsonl", debian_corpus("test"), 24)
    run_dir = str(folder / "run")
    keras.utils.set_random_seed(0)
    fields = ["--source-field", "description", "--target-field", "synopsis"]
    assert main([
        "train", "--data", train, "--run", run_dir, "--task",
        "summarization", "--preset", "summarization", "--epochs", "2",
        "--set", "num_layers=2", "--set", "d_ff=128", "--set",
        "warmup_steps=400",
        "--vocab-size", "400", "--batch-tokens", "1024", "--average-last",
        "0", *fields, "--set", "max_length=48", "--set", "d_model=32",
        "--set", f"max_source_length={SOURCE_LENGTH}", "--set",
        f"max_target_length={TARGET_LENGTH}"]) == 0
    return {"run": run_dir, "test": test, "fields": fields}


@pytest.mark.slow
def test_run_knows_its_task_and_lengths(summarization_run):
    run = RunDirectory(summarization_run["run"])
    config = run.read_config()
    assert config.task == "summarization"
    assert (config.source_length, config.target_length) == (
        SOURCE_LENGTH, TARGET_LENGTH)
    data = run.read_json("metrics.json")["data"]
    # Long descriptions are truncated by default for summarization, and
    # counted.
    assert data["task"] == "summarization"
    assert data["truncated_sources"] > 0
    assert "max_source_length=48" in data["length"]


@pytest.mark.slow
def test_cli_summarize_and_evaluate_report_rouge(summarization_run, capsys):
    run, test, fields = (summarization_run[k] for k in ("run", "test",
                                                        "fields"))
    capsys.readouterr()
    assert main(["summarize", "--run", run, "--greedy",
                 "A library for reading and writing compressed files."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["evaluate", "--run", run, "--data", test, *fields,
                 "--min-length", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROUGE-1 ") and "ROUGE-L" in out
    evaluation = RunDirectory(run).read_json("metrics.json")["evaluation"]
    assert evaluation["task"] == "summarization"
    assert evaluation["num_documents"] == 24
    assert 0.0 <= evaluation["rouge1"] <= 100.0
    # The run's defaults with the flag given: bigram blocking, the
    # model's target length as the limit, the minimum length.
    assert evaluation["search"]["no_repeat_ngram_size"] == 2
    assert evaluation["search"]["max_output_tokens"] == TARGET_LENGTH
    assert evaluation["search"]["min_length"] == 2


@pytest.mark.slow
def test_evaluate_names_missing_jsonl_fields(summarization_run, capsys):
    assert main(["evaluate", "--run", summarization_run["run"], "--data",
                 summarization_run["test"]]) == 2
    assert "source_field" in capsys.readouterr().err


def _rows(ids):
    """Token rows up to (not including) [END]."""
    rows = []
    for row in np.asarray(ids):
        row = list(row)
        rows.append(row[:row.index(END_ID)] if END_ID in row else
                    [t for t in row if t != PAD_ID])
    return rows


@pytest.mark.slow
def test_rules_hold_and_every_runtime_agrees(summarization_run, tmp_path):
    from keras_transformer.export import export_run
    from keras_transformer.runs import load_translator

    run = summarization_run["run"]
    config = RunDirectory(run).read_config()
    settings = SearchSettings.for_config(config, min_length=5,
                                         no_repeat_ngram_size=2)
    translator = load_translator(run, settings=settings)
    texts = debian_corpus("test").sources[:16]
    source_ids = translator.source_ids(tf.constant(texts))
    for beam in (1, 4):
        ids, _ = translator.search_tokens(source_ids, beam)
        for row in _rows(ids[:, 0]):
            assert len(row) >= 5
            bigrams = list(zip(row, row[1:]))
            assert len(bigrams) == len(set(bigrams)), row
        assert ids.shape[-1] <= TARGET_LENGTH

    report = export_run(run, str(tmp_path), "all", texts=texts,
                        settings=settings)
    saved = report["saved_model"]
    assert saved["identical"] == saved["comparisons"] > 0
    check = report["onnx"]["verification"]
    for mode in ("beam", "greedy"):
        assert check["identical"][mode] == check["sentences"]
        assert check["saved_model_identical"][mode] == check["sentences"]
        assert check["text"]["identical"][mode] == check["text"][
            "sentences"]
    with open(os.path.join(tmp_path, "onnx", "onnx_config.json"),
              encoding="utf-8") as file:
        exported = json.load(file)["search_settings"]
    assert exported == settings.to_dict()
    # The copy path sums the weights of repeated source tokens in the loop
    # body (ScatterND with reduction "add"; a plain one would overwrite).
    import onnx

    from keras_transformer.export.onnx.graph import graphs

    model = onnx.load(os.path.join(tmp_path, "onnx", "greedy.onnx"))
    summing = [node for graph, parents in graphs(model.graph) if parents
               for node in graph.node if node.op_type == "ScatterND"
               and any(a.name == "reduction" and a.s == b"add"
                       for a in node.attribute)]
    assert summing


@pytest.mark.slow
def test_max_output_tokens_replaces_source_plus_extra(summarization_run):
    from keras_transformer.runs import load_translator

    run = summarization_run["run"]
    config = RunDirectory(run).read_config()
    short = load_translator(run, settings=SearchSettings.for_config(
        config, max_output_tokens=3, min_length=5))
    ids, _ = short.search_tokens(short.source_ids(tf.constant(
        ["a long description " * 5])), 1)
    assert ids.shape[-1] == 3  # min_length cannot outlast the limit
    follow = load_translator(run, settings=SearchSettings(
        max_output_tokens=None, extra_length=0, min_length=40))
    ids, _ = follow.search_tokens(follow.source_ids(tf.constant(["zlib"])),
                                  1)
    # "source + 0": the source's pieces and [END].
    assert ids.shape[-1] == len(follow.source_ids(
        tf.constant(["zlib"])).numpy()[0])


def test_search_settings_for_each_task():
    translation = SearchSettings.for_config(TransformerConfig())
    assert translation == SearchSettings()
    config = TransformerConfig.from_preset("summarization")
    summary = SearchSettings.for_config(config, beam_size=2)
    assert (summary.max_output_tokens, summary.no_repeat_ngram_size,
            summary.beam_size, summary.length_penalty) == (128, 2, 2, 1.5)
    assert summary.output_limit(64) == 64
    assert SearchSettings.from_dict(summary.to_dict()) == summary
    with pytest.raises(ValueError, match="`min_length`"):
        SearchSettings(min_length=-1)
    with pytest.raises(ValueError, match="`task`"):
        TransformerConfig(task="chat")
    with pytest.raises(ValueError, match="`max_source_length`"):
        TransformerConfig(max_length=64, max_source_length=65)
    old = dict(TransformerConfig().to_dict())
    for key in ("task", "max_source_length", "max_target_length"):
        del old[key]  # a run saved before this release
    assert TransformerConfig.from_dict(old).task == "translation"


class _Words:
    """One id per word: a tokenizer whose lengths are easy to set."""

    def tokenize(self, texts):
        words = tf.strings.split(texts)
        return tf.ragged.map_flat_values(
            lambda w: tf.strings.to_hash_bucket_fast(w, 100) + 4, words)


def test_long_sources_batch_within_the_token_budget():
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(5, 1500, size=120)]
    pairs = [(" ".join(["w"] * n), "s " * int(rng.integers(1, 200)))
             for n in lengths]
    config = dataclasses.replace(TransformerConfig.from_preset(
        "summarization"))
    encoded = encode_pairs(pairs, _Words(), _Words(), max_length=1024,
                           max_source_length=config.source_length,
                           max_target_length=config.target_length,
                           length_policy="truncate")
    assert encoded.stats.truncated_source == sum(n > 1023 for n in lengths)
    assert encoded.stats.kept == 120
    budget = 4096
    seen = 0
    for inputs, labels in make_dataset(encoded, batch_tokens=budget,
                                       shuffle=False):
        batch, source = inputs["encoder_inputs"].shape
        target = labels.shape[1]
        assert source <= 1024 and target <= 128
        assert batch * max(source, target) <= budget
        seen += batch
    assert seen == 120


def test_extractive_baselines():
    from keras_transformer.baselines import first_sentence, first_words

    assert first_sentence("Reads zip files. Also writes\nthem.") == (
        "Reads zip files.")
    assert first_sentence("  no end  at all ") == "no end at all"
    assert first_sentence("version 1.2 parser! More") == "version 1.2 parser!"
    assert first_sentence("我喜欢猫。你呢？") == "我喜欢猫。"
    assert first_words("a b  c d", 3) == "a b c"
    assert first_words("a", 5) == "a"
    with pytest.raises(ValueError, match="`count`"):
        first_words("a b", 0)


@pytest.mark.slow
def test_ctranslate2_applies_the_same_rules(trained_run, tmp_path):
    pytest.importorskip("ctranslate2")
    from keras_transformer.export import export_run

    settings = SearchSettings.for_config(
        RunDirectory(trained_run).read_config(), min_length=5,
        no_repeat_ngram_size=2)
    report = export_run(trained_run, str(tmp_path), "ctranslate2",
                        settings=settings)["ctranslate2"]
    # Greedy ids and texts; CTranslate2 renormalizes the probabilities
    # after a ban, so its scores differ where a rule acted.
    assert report["identical"] == report["sentences"] > 0
    assert report["text_agreement"] == 1.0


@pytest.mark.slow
def test_exports_without_a_copy_path_refuse_a_copy_model(summarization_run,
                                                        tmp_path):
    from keras_transformer.export import export_run
    from keras_transformer.export.onnx.beam_op import convert_beam_op
    from keras_transformer.runs import load_translator

    run = summarization_run["run"]
    assert RunDirectory(run).read_config().copy_attention
    translator = load_translator(run, settings=SearchSettings())
    with pytest.raises(ValueError, match="copy_attention=True"):
        convert_beam_op(translator)
    pytest.importorskip("ctranslate2")
    with pytest.raises(ValueError, match="copy_attention=True"):
        export_run(run, str(tmp_path), "ctranslate2", texts=["a b"])
    assert not os.path.exists(tmp_path / "ctranslate2" / "model.bin")


@pytest.mark.slow
def test_int8_export_of_a_copy_model_agrees(summarization_run, tmp_path):
    from keras_transformer.export.onnx.export import export_onnx
    from keras_transformer.runs import load_translator

    translator = load_translator(summarization_run["run"])
    report = export_onnx(translator, tmp_path, modes=("greedy",),
                         texts=debian_corpus("test").sources[:32],
                         quantize="int8")
    check = report["verification"]
    assert report["quantization"] == "int8"
    assert report["matmuls"]["greedy"]["loop_body"]["int8"] > 0
    # Verified against the float32 Translator at the int8 share (35 of 37
    # sentences identical when measured).
    from keras_transformer.contract import INT8_MIN_AGREEMENT

    assert check["min_agreement"] == INT8_MIN_AGREEMENT
    assert check["identical"]["greedy"] >= 0.9 * check["sentences"]
