"""Tests for export/onnx.py and export/onnx_runtime.py (ONNX export)."""

import json
import os
import shutil
import types

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from onnx import helper, numpy_helper

from keras_transformer.export import onnx as onnx_export
from keras_transformer.export.onnx_runtime import OnnxTranslator, read_config, verify_onnx
from keras_transformer.config import TransformerConfig
from keras_transformer.model import build_transformer
from keras_transformer.text import END_ID, UNK_ID, SubwordTokenizer
from keras_transformer.translator import Translator

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven",
         "eight", "nine")
MAX_LENGTH = 24


def reverse_task(num_pairs, seed):
    """Sentences of 1-6 digit words and the same words in reverse order."""
    rng = np.random.default_rng(seed)
    sources = [" ".join(WORDS[i] for i in rng.integers(0, 10, size=n))
               for n in rng.integers(1, 7, size=num_pairs)]
    return sources, [" ".join(s.split()[::-1]) for s in sources]


def padded(rows, width):
    out = np.zeros([len(rows), width], np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-layer model trained briefly to reverse digit words, exported."""
    keras.utils.set_random_seed(0)
    sources, targets = reverse_task(1600, seed=0)
    tokenizer = SubwordTokenizer.from_corpus(sources[:200], vocab_size=100)
    source = tokenizer.tokenize(tf.constant(sources)).to_list()
    target = tokenizer.tokenize(tf.constant(targets)).to_list()
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=tokenizer.vocab_size,
        target_vocab_size=tokenizer.vocab_size, num_layers=1, d_model=64,
        num_heads=2, d_ff=512, dropout_rate=0.0, max_length=MAX_LENGTH)
    model = build_transformer(config)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True, ignore_class=0),
                  jit_compile=False)
    model.fit({"encoder_inputs": padded([r + [END_ID] for r in source], 8),
               "decoder_inputs": padded([[2] + r for r in target], 8)},
              padded([r + [END_ID] for r in target], 8), batch_size=64,
              epochs=4, verbose=0)
    translator = Translator(model, tokenizer, tokenizer)
    texts, _ = reverse_task(60, seed=1)
    texts += ["", "   ", "three \u2603 one", " ".join(WORDS * 4)]
    onnx_dir = tmp_path_factory.mktemp("onnx")
    report = onnx_export.export_onnx(translator, onnx_dir, texts=texts)
    return types.SimpleNamespace(translator=translator, texts=texts,
                                 onnx_dir=onnx_dir, report=report,
                                 runtime=OnnxTranslator(onnx_dir))


# -- graph clean-up (fast) --------------------------------------------------

WEIGHT = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


def loop_body(suffix, weight_name, initializers=()):
    """x (4,) -> x @ weight, reshaped to the weight's last dimension."""
    def name(n):
        return f"{n}_{suffix}"

    value = helper.make_tensor_value_info
    return helper.make_graph(
        [helper.make_node("MatMul", [name("x_in"), weight_name],
                          [name("y")]),
         helper.make_node("Shape", [weight_name], [name("shape")], start=1),
         helper.make_node("Reshape", [name("y"), name("shape")],
                          [name("x_out")]),
         helper.make_node("Identity", [name("cond_in")], [name("cond_out")])],
        name("body"),
        [value(name("i"), onnx.TensorProto.INT64, []),
         value(name("cond_in"), onnx.TensorProto.BOOL, []),
         value(name("x_in"), onnx.TensorProto.FLOAT, [4])],
        [value(name("cond_out"), onnx.TensorProto.BOOL, []),
         value(name("x_out"), onnx.TensorProto.FLOAT, [4])],
        list(initializers))


def loop_model():
    """A Loop whose body repeats a main-graph weight and takes its shape."""
    weight = WEIGHT
    body = loop_body("a", "w_body", [
        numpy_helper.from_array(weight.T @ weight, "w_body")])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["x0"]),
         helper.make_node("MatMul", ["x0", "w_copy"], ["x1"]),
         helper.make_node("Loop", ["steps", "", "x1"], ["x_final"],
                          body=body)],
        "main",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("x_final", onnx.TensorProto.FLOAT,
                                       [4])],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(weight.T @ weight, "w_copy"),
         numpy_helper.from_array(np.array(3, np.int64), "steps")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("",
                                                                       17)])


def two_loops_model():
    """Two Loops whose bodies each hold the same weight; main has none."""
    square = WEIGHT.T @ WEIGHT
    nodes = [helper.make_node("MatMul", ["x", "w"], ["x0"])]
    for i, suffix in enumerate("ab"):
        body = loop_body(suffix, f"v_{suffix}",
                         [numpy_helper.from_array(square, f"v_{suffix}")])
        nodes.append(helper.make_node(
            "Loop", ["steps", "", f"x{i}"], [f"x{i + 1}"], body=body))
    graph = helper.make_graph(
        nodes, "main",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(WEIGHT, "w"),
         numpy_helper.from_array(np.array(2, np.int64), "steps")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("",
                                                                       17)])


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_compact_keeps_each_constant_once_and_the_outputs():
    model = loop_model()
    x = np.array([1.0, -2.0, 0.5], np.float32)
    before = run(model, x)
    assert onnx_export.graph_summary(model)["largest_duplicate_bytes"] == 64
    onnx_export._compact(model.graph)
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), before)
    summary = onnx_export.graph_summary(model)
    assert summary["largest_duplicate_bytes"] == 0
    # w (48 bytes), one copy of w^T w (64), steps (8), the folded shape (8).
    assert summary["weights_bytes"] == 48 + 64 + 8 + 8
    assert summary["op_types"] == {"MatMul": 3, "Loop": 1, "Constant": 1,
                                   "Reshape": 1, "Identity": 1}
    body = model.graph.node[2].attribute[0].g
    assert len(body.initializer) == 0  # Served from the main graph.


def test_compact_hoists_a_constant_shared_by_two_loops():
    model = two_loops_model()
    x = np.array([0.5, 1.0, -1.5], np.float32)
    before = run(model, x)
    onnx_export._compact(model.graph)
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), before)
    assert sorted(t.name for t in model.graph.initializer) == [
        "steps", "v_a", "w"]
    for node in model.graph.node[1:]:
        body = node.attribute[0].g
        assert len(body.initializer) == 0
        assert body.node[0].input[1] == "v_a"


def test_graph_summary_counts_subgraph_ops():
    summary = onnx_export.graph_summary(loop_model())
    assert summary["opset"] == 17
    assert summary["nodes"] == 7
    assert summary["op_types"]["MatMul"] == 3


def fake_translator():
    return types.SimpleNamespace(
        translate_tokens=None, translate_tokens_greedy=None, source_ids=None,
        source_tokenizer=None, target_tokenizer=None, model=None)


@pytest.mark.parametrize("kwargs, match", [
    (dict(opset=16), "`opset`"), (dict(opset=19), "`opset`"),
    (dict(opset=True), "`opset`"), (dict(modes=()), "`modes`"),
    (dict(modes="beam"), "`modes`"), (dict(modes=("beam", "beam")),
                                      "`modes`"),
    (dict(modes=("sampling",)), "`modes`")])
def test_export_rejects_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        onnx_export.export_onnx(fake_translator(), tmp_path, **kwargs)
    assert not os.listdir(tmp_path)


def test_export_rejects_non_translator(tmp_path):
    with pytest.raises(TypeError, match="`translator`"):
        onnx_export.export_onnx(object(), tmp_path)


def test_convert_rejects_unknown_mode():
    with pytest.raises(ValueError, match="`mode`"):
        onnx_export.convert_search(fake_translator(), "sampling")


def test_runtime_rejects_directory_without_export(tmp_path):
    with pytest.raises(ValueError, match="`onnx_dir`"):
        OnnxTranslator(tmp_path)
    (tmp_path / "onnx_config.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="`onnx_dir`"):
        read_config(tmp_path)


# -- export of a trained model (slow) ---------------------------------------

@pytest.mark.slow
def test_export_report(trained):
    report = trained.report
    assert report["opset"] == 17
    assert set(report["files"]) == {"beam.onnx", "greedy.onnx",
                                    "onnx_config.json", "source_vocab.txt",
                                    "target_vocab.txt"}
    verification = report["verification"]
    assert verification["sentences"] == len(trained.texts) >= 50
    assert verification["identical"] == {"beam": len(trained.texts),
                                         "greedy": len(trained.texts)}
    assert max(verification["max_score_difference"].values()) < 1e-3
    assert verification["mismatches"] == []
    for mode in ("beam", "greedy"):
        assert report["op_types"][mode]["Loop"] == 1
        assert sum(report["op_types"][mode].values()) == report["nodes"][mode]
    assert "TopK" in report["op_types"]["beam"]
    assert "ArgMax" in report["op_types"]["greedy"]


@pytest.mark.slow
def test_config_and_vocabularies(trained):
    config = read_config(trained.onnx_dir)
    translator = trained.translator
    assert config["graphs"] == {"beam": "beam.onnx", "greedy": "greedy.onnx"}
    assert config["max_length"] == MAX_LENGTH
    assert config["max_source_tokens"] == MAX_LENGTH - 1
    assert config["search_settings"] == {
        "beam_size": 4, "length_penalty": 0.6, "extra_length": 50,
        "max_source_tokens": None}
    assert (config["pad_id"], config["unk_id"], config["start_id"],
            config["end_id"]) == (0, 1, 2, 3)
    assert config["source_tokenizer"] == translator.source_tokenizer.config
    vocabulary = SubwordTokenizer.from_vocabulary_file(
        trained.onnx_dir / config["target_vocabulary"]).vocabulary
    assert vocabulary == translator.target_tokenizer.vocabulary


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_graph_is_one_loop_over_source_ids(trained, mode):
    model = onnx.load(trained.onnx_dir / f"{mode}.onnx")
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    assert [i.name for i in model.graph.input] == ["source_ids"]
    assert model.graph.input[0].type.tensor_type.elem_type == (
        onnx.TensorProto.INT32)
    assert sorted(o.name for o in model.graph.output) == ["score",
                                                          "target_ids"]
    assert [n.op_type for n in model.graph.node].count("Loop") == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_file_holds_each_weight_once(trained, mode):
    path = trained.onnx_dir / f"{mode}.onnx"
    model = onnx.load(path)
    values = [numpy_helper.to_array(tensor)
              for graph, _ in onnx_export._graphs(model.graph)
              for tensor in graph.initializer]
    variables = trained.translator.model.weights
    variables_bytes = sum(v.numpy().nbytes for v in variables)
    # Each weight matrix is in the file once, in any layout.
    for variable in variables:
        value = np.sort(variable.numpy().ravel())
        if value.size < 64:
            continue
        copies = sum(v.size == value.size and np.array_equal(
            np.sort(v.ravel()), value) for v in values)
        assert copies <= 1, variable.path
    weights = sum(v.nbytes for v in values)
    positional_table = MAX_LENGTH * 64 * 4
    assert weights <= variables_bytes + positional_table + 4096
    assert os.path.getsize(path) <= 1.3 * variables_bytes


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_onnxruntime_ids_equal_translator_ids(trained, mode):
    texts, _ = reverse_task(56, seed=2)
    ids = trained.translator.source_ids(tf.constant(texts)).numpy()
    function = {"beam": trained.translator.translate_tokens,
                "greedy": trained.translator.translate_tokens_greedy}[mode]
    expected = function(ids)
    got = trained.runtime.translate_tokens(ids, mode)
    np.testing.assert_array_equal(got["target_ids"],
                                  expected["target_ids"].numpy())
    np.testing.assert_allclose(got["score"], expected["score"].numpy(),
                               atol=1e-4)
    # The model learned the task: most outputs are the reversed words.
    reversed_words = [" ".join(t.split()[::-1]) for t in texts]
    translations = trained.runtime(texts, greedy=mode == "greedy")
    correct = sum(t == r for (t, _), r in zip(translations, reversed_words))
    assert correct >= len(texts) // 3


@pytest.mark.slow
def test_runtime_text_equals_translator_text(trained):
    texts = trained.texts
    for greedy in (False, True):
        expected = trained.translator(texts, beam_size=1 if greedy else None)
        got = trained.runtime(texts, greedy=greedy)
        assert [t for t, _ in got] == [t for t, _ in expected]
        np.testing.assert_allclose([s for _, s in got],
                                   [s for _, s in expected], atol=1e-4)


@pytest.mark.slow
def test_runtime_bad_inputs(trained):
    runtime, translator = trained.runtime, trained.translator
    assert runtime("") == ("", 0.0)
    assert runtime(" \t\n") == ("", 0.0)
    assert runtime([]) == []
    assert runtime([], greedy=True) == []
    # Invalid UTF-8 bytes: U+FFFD, which this vocabulary lacks -> [UNK].
    ids = runtime.source_ids([b"three \xff\xfe one"])
    assert ids.tolist() == translator.source_ids(
        tf.constant([b"three \xff\xfe one"])).numpy().tolist()
    assert UNK_ID in ids[0]
    got, expected = runtime(b"three \xff\xfe one"), translator(
        [b"three \xff\xfe one"])[0]
    assert got[0] == expected[0] and got[1] == pytest.approx(expected[1],
                                                             abs=1e-4)
    # Unknown characters.
    assert UNK_ID in runtime.source_ids(["\u2603 two"])[0]
    # Longer than max_length: truncated to max_length - 1 tokens + [END].
    long_text = " ".join(WORDS * 5)
    ids = runtime.source_ids([long_text, "one"])
    assert ids.shape == (2, MAX_LENGTH)
    assert ids[0, -1] == END_ID
    assert ids[1].tolist() == translator.source_ids(
        tf.constant(["one"])).numpy()[0].tolist() + [0] * (MAX_LENGTH - 2)
    assert runtime(long_text)[0] == translator(long_text)[0]
    # Mixed lengths in one batch equal one-by-one translation.
    batch = ["nine", "", "one two three four five six", "\u2603"]
    assert [t for t, _ in runtime(batch)] == [runtime(t)[0] for t in batch]
    assert runtime(batch)[1] == ("", 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("texts, error, match", [
    ("one", TypeError, "`texts`"), ([1, "one"], TypeError, r"texts\[0\]"),
    (None, TypeError, "`texts`")])
def test_runtime_rejects_bad_texts(trained, texts, error, match):
    with pytest.raises(error, match=match):
        trained.runtime.source_ids(texts)


@pytest.mark.slow
def test_runtime_rejects_bad_ids_and_modes(trained):
    with pytest.raises(ValueError, match="`source_ids`"):
        trained.runtime.translate_tokens(np.zeros([3], np.int32))
    with pytest.raises(ValueError, match="`source_ids`"):
        trained.runtime.translate_tokens([[4, 1000, 3]])
    with pytest.raises(ValueError, match="`source_ids`"):
        trained.runtime.translate_tokens([[-1, 3]])
    with pytest.raises(ValueError, match="`mode`"):
        trained.runtime.translate_tokens(np.zeros([1, 2], np.int32), "top")
    empty = trained.runtime.translate_tokens(np.zeros([0, 3], np.int32))
    assert empty["target_ids"].shape == (0, 0)
    assert empty["score"].shape == (0,)


def tamper(onnx_dir, out_dir):
    """Copies the export with the beam graph's largest weight permuted."""
    shutil.copytree(onnx_dir, out_dir)
    path = out_dir / "beam.onnx"
    model = onnx.load(path)
    largest = max(model.graph.initializer,
                  key=lambda t: numpy_helper.to_array(t).size)
    value = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array(value[::-1].copy(),
                                             largest.name))
    onnx.save(model, path)
    config = read_config(out_dir)
    config["graphs"] = {"beam": "beam.onnx"}
    (out_dir / "onnx_config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_verification_raises_on_a_tampered_graph(trained, tmp_path):
    tampered = tmp_path / "tampered"
    tamper(trained.onnx_dir, tampered)
    texts = trained.texts[:16]
    with pytest.raises(ValueError, match="ONNX graph 'beam.onnx' differs"):
        verify_onnx(tampered, trained.translator, texts=texts)
    report = verify_onnx(tampered, trained.translator,
                                     texts=texts, strict=False)
    assert report["identical"]["beam"] < len(texts)
    assert len(report["mismatches"]) == len(texts) - report["identical"][
        "beam"]


@pytest.mark.slow
def test_verification_with_ids_and_saved_model(trained, tmp_path):
    # A SavedModel of the same translator's token functions.
    saved = tmp_path / "saved"
    module = tf.Module()
    module.translate_tokens = trained.translator.translate_tokens
    module.translate_tokens_greedy = (
        trained.translator.translate_tokens_greedy)
    module.model = trained.translator.model
    tf.saved_model.save(module, str(saved))
    ids = trained.translator.source_ids(
        tf.constant(trained.texts[:20])).numpy()
    report = verify_onnx(trained.onnx_dir, trained.translator,
                                     source_ids=ids, saved_model_dir=saved)
    assert report["identical"] == {"beam": 20, "greedy": 20}
    assert report["saved_model_identical"] == {"beam": 20, "greedy": 20}


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(texts=[]), ValueError, "`texts`"),
    (dict(texts="one"), TypeError, "`texts`"),
    (dict(texts=["one"], source_ids=[[4, 3]]), ValueError, "`source_ids`"),
    (dict(source_ids=[4, 3]), ValueError, "`source_ids`"),
    (dict(texts=["one"], batch_size=0), ValueError, "`batch_size`")])
def test_verification_rejects_bad_arguments(trained, kwargs, error, match):
    with pytest.raises(error, match=match):
        verify_onnx(trained.onnx_dir, trained.translator,
                                **kwargs)


@pytest.mark.slow
def test_export_of_one_search_with_opset_18(trained, tmp_path):
    report = onnx_export.export_onnx(trained.translator, tmp_path,
                                     opset=18, modes=("greedy",),
                                     verify=False)
    assert report["verification"] is None
    assert sorted(os.listdir(tmp_path)) == sorted(report["files"]) == [
        "greedy.onnx", "onnx_config.json", "source_vocab.txt",
        "target_vocab.txt"]
    model = onnx.load(tmp_path / "greedy.onnx")
    assert [o.version for o in model.opset_import if o.domain == ""] == [18]
    runtime = OnnxTranslator(tmp_path)
    assert runtime.modes == ("greedy",)
    texts = trained.texts[:8]
    got, expected = (runtime(texts, greedy=True),
                     trained.runtime(texts, greedy=True))
    assert [t for t, _ in got] == [t for t, _ in expected]
    np.testing.assert_allclose([s for _, s in got],
                               [s for _, s in expected], atol=1e-5)
    with pytest.raises(ValueError, match="`mode`"):
        runtime(texts)
