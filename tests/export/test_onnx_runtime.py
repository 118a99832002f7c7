"""Tests for the ONNX export: export/onnx.py, onnx_verify.py, onnx_runtime.py.

A 1-layer model with SentencePiece tokenizers, trained for seconds to
reverse digit words, is exported once per module (with a SavedModel, and
verified on 200 held-out sentences plus the bad-input cases). Text graphs
run only in subprocesses: onnxruntime-extensions crashes a process that has
imported TensorFlow (this one has).
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from onnx import helper, numpy_helper

from keras_transformer.config import TransformerConfig
from keras_transformer.contract import SearchSettings
from keras_transformer.export.onnx import convert as onnx_convert
from keras_transformer.export.onnx import export as onnx_export
from keras_transformer.export.onnx import graph as onnx_graph
from keras_transformer.export.onnx.runtime import (
    OnnxTranslator,
    make_session,
    read_config,
    run_search,
    text_feed,
)
from keras_transformer.export.onnx.verify import bad_input_texts, verify_onnx
from keras_transformer.export.onnx.verify import (
    graph_summary as onnx_verify_summary,
)
from keras_transformer.export.saved_model import export_saved_model
from keras_transformer.model import build_transformer
from keras_transformer.text.sentencepiece_model import learn_tokenizer_models
from keras_transformer.text.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
)
from keras_transformer.text.special_tokens import END_ID, START_ID
from keras_transformer.translator import Translator

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven",
         "eight", "nine")
MAX_LENGTH = 24
ALL_FILES = ["beam.onnx", "beam_text.onnx", "greedy.onnx",
             "greedy_text.onnx", "onnx_config.json", "source.model",
             "target.model"]
INVALID_UTF8 = b"\xff\xfe nine four \xc3( \xed\xa0\x80 \xe2\x82 \xf0\x9f\x98"


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
    """A 1-layer model trained briefly to reverse digit words, exported.

    The SavedModel and the ONNX graphs are written once; the export's
    verification runs on 200 held-out sentences plus the bad inputs.
    """
    keras.utils.set_random_seed(0)
    sources, targets = reverse_task(1600, seed=0)
    source_model, target_model = learn_tokenizer_models(
        sources[:200], targets[:200], vocab_size=300)
    source_tokenizer = SentencePieceTokenizer(source_model)
    target_tokenizer = SentencePieceTokenizer(target_model)
    source = source_tokenizer.tokenize(tf.constant(sources)).to_list()
    target = target_tokenizer.tokenize(tf.constant(targets)).to_list()
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=source_tokenizer.vocab_size,
        target_vocab_size=target_tokenizer.vocab_size, num_layers=1,
        d_model=64, num_heads=2, d_ff=512, dropout_rate=0.0,
        max_length=MAX_LENGTH)
    model = build_transformer(config)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True, ignore_class=0),
                  jit_compile=False)
    width = max(map(len, source + target)) + 1
    model.fit({"encoder_inputs": padded([r + [END_ID] for r in source],
                                        width),
               "decoder_inputs": padded([[START_ID] + r for r in target],
                                        width)},
              padded([r + [END_ID] for r in target], width), batch_size=64,
              epochs=3, verbose=0)
    translator = Translator(model, source_tokenizer, target_tokenizer)
    texts, _ = reverse_task(200, seed=1)
    root = tmp_path_factory.mktemp("export")
    saved_model_dir = export_saved_model(translator, str(root / "saved"))
    onnx_dir = root / "onnx"
    report = onnx_export.export_onnx(translator, onnx_dir, texts=texts,
                                     saved_model_dir=saved_model_dir)
    return types.SimpleNamespace(
        translator=translator, texts=texts, onnx_dir=onnx_dir,
        saved_model_dir=saved_model_dir, report=report,
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
    assert onnx_verify_summary(model)["largest_duplicate_bytes"] == 64
    onnx_graph.compact(model.graph)
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), before)
    summary = onnx_verify_summary(model)
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
    onnx_graph.compact(model.graph)
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), before)
    assert sorted(t.name for t in model.graph.initializer) == [
        "steps", "v_a", "w"]
    for node in model.graph.node[1:]:
        body = node.attribute[0].g
        assert len(body.initializer) == 0
        assert body.node[0].input[1] == "v_a"


def test_graph_summary_counts_subgraph_ops():
    summary = onnx_verify_summary(loop_model())
    assert summary["opset"] == 17
    assert summary["nodes"] == 7
    assert summary["op_types"]["MatMul"] == 3


def dims(value):
    return [d.dim_param or d.dim_value for d in
            value.type.tensor_type.shape.dim]


def test_name_dims_renames_tf2onnx_dims_everywhere():
    value = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["b_in"], ["b_out"]),
         helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [value("i", onnx.TensorProto.INT64, []),
         value("c_in", onnx.TensorProto.BOOL, []),
         value("b_in", onnx.TensorProto.INT32, ["unk__7", "unk__9"])],
        [value("c_out", onnx.TensorProto.BOOL, []),
         value("b_out", onnx.TensorProto.INT32, ["unk__7", "unk__9"])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "", "source_ids"], ["target_ids"],
                          body=body),
         helper.make_node("ReduceSum", ["target_ids"], ["sum"], keepdims=0),
         helper.make_node("Cast", ["sum"], ["score"],
                          to=onnx.TensorProto.FLOAT)], "main",
        [value("source_ids", onnx.TensorProto.INT32, ["unk__7", None])],
        [value("target_ids", onnx.TensorProto.INT32, ["unk__3", "unk__9"]),
         value("score", onnx.TensorProto.FLOAT, [5])],
        [numpy_helper.from_array(np.array(1, np.int64), "n")],
        value_info=[value("sum", onnx.TensorProto.INT32, ["unk__9"])])
    onnx_graph.name_dims(graph)
    assert dims(graph.input[0]) == ["batch", "source_length"]
    assert dims(graph.output[0]) == ["batch", "target_length"]
    assert dims(graph.output[1]) == [5]  # A size stays.
    # unk__7 was named first as the batch, unk__9 as the target length.
    body = graph.node[0].attribute[0].g
    assert dims(body.input[2]) == ["batch", "target_length"]
    assert dims(graph.value_info[0]) == ["target_length"]


def test_text_feed_keeps_the_bytes_of_every_text():
    feed = text_feed(["one", b"two", "caf\u00e9 \U0001f600"])
    assert feed.dtype == object
    assert feed.tolist() == ["one", "two", "caf\u00e9 \U0001f600"]
    # Invalid UTF-8 anywhere: every text goes as its bytes.
    escaped = INVALID_UTF8.decode("utf-8", "surrogateescape")
    feed = text_feed(["caf\u00e9", INVALID_UTF8, escaped, "\ud800"])
    assert feed.dtype.kind == "S"
    assert feed.tolist() == ["caf\u00e9".encode(), INVALID_UTF8,
                             INVALID_UTF8, b"\xed\xa0\x80"]


def test_make_session_refuses_extensions_where_tensorflow_is(tmp_path):
    assert "tensorflow" in sys.modules
    with pytest.raises(RuntimeError, match="TensorFlow"):
        make_session(tmp_path / "beam_text.onnx", extensions=True)


def fake_translator(**kwargs):
    tokenizer = types.SimpleNamespace(model_proto=b"spm")
    names = ("translate_tokens", "translate_tokens_greedy", "translate",
             "translate_greedy", "source_ids", "model", "settings",
             "source_limit", "max_length", "source_vocab_size")
    return types.SimpleNamespace(
        **dict.fromkeys(names), source_tokenizer=tokenizer,
        target_tokenizer=tokenizer, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(opset=16), "`opset`"), (dict(opset=19), "`opset`"),
    (dict(opset=True), "`opset`"), (dict(modes=()), "`modes`"),
    (dict(modes="beam"), "`modes`"), (dict(modes=("beam", "beam")),
                                      "`modes`"),
    (dict(modes=("sampling",)), "`modes`")])
def test_export_rejects_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises((ValueError, TypeError), match=match):
        onnx_export.export_onnx(fake_translator(), tmp_path, **kwargs)
    assert not os.listdir(tmp_path)


def test_export_rejects_non_translator_and_other_tokenizers(tmp_path):
    with pytest.raises(TypeError, match="`translator`"):
        onnx_export.export_onnx(object(), tmp_path)
    wordpiece = fake_translator()
    wordpiece.target_tokenizer = types.SimpleNamespace(vocabulary=["a"])
    with pytest.raises(TypeError, match="target_tokenizer of type"):
        onnx_export.export_onnx(wordpiece, tmp_path)
    assert not os.listdir(tmp_path)


def test_convert_rejects_unknown_mode():
    with pytest.raises(ValueError, match="`mode`"):
        onnx_convert.convert_search(fake_translator(), "sampling")


def test_runtime_rejects_directory_without_export(tmp_path):
    with pytest.raises(ValueError, match="`onnx_dir`"):
        OnnxTranslator(tmp_path / "missing")
    with pytest.raises(ValueError, match="`onnx_dir`"):
        OnnxTranslator(tmp_path)
    config = tmp_path / "onnx_config.json"
    config.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="another format"):
        read_config(tmp_path)
    # A version-1 export: token graphs and vocabulary files only.
    config.write_text(json.dumps({
        "format": "keras-transformer-onnx", "version": 1,
        "graphs": {"beam": "beam.onnx"}}))
    with pytest.raises(ValueError, match="version-2 export"):
        OnnxTranslator(tmp_path)


# -- export of a trained model (slow) ---------------------------------------

@pytest.mark.slow
def test_export_report_and_parity_counts(trained):
    report = trained.report
    assert report["opset"] == 17
    assert sorted(report["files"]) == ALL_FILES == sorted(
        os.listdir(trained.onnx_dir))
    for name, size in report["files"].items():
        assert size == os.path.getsize(trained.onnx_dir / name) > 0
    verification = report["verification"]
    sentences = len(trained.texts) + 5  # The five bad-input cases.
    both = {"beam": sentences, "greedy": sentences}
    print("token graphs:", verification["identical"],
          verification["saved_model_identical"],
          verification["max_score_difference"])
    print("text graphs:", verification["text"])
    assert verification["sentences"] == sentences >= 205
    assert verification["identical"] == both
    assert verification["saved_model_identical"] == both
    text = verification["text"]
    assert text["sentences"] == sentences
    assert text["identical"] == both
    assert text["saved_model_identical"] == both
    assert max(verification["max_score_difference"].values()) < 1e-3
    assert max(text["max_score_difference"].values()) < 1e-3
    assert verification["mismatches"] == []
    for mode in ("beam", "greedy"):
        assert report["op_types"][mode]["Loop"] == 1
        assert sum(report["op_types"][mode].values()) == report["nodes"][mode]
        ops = report["text_op_types"][mode]
        assert ops["Loop"] == 2  # The search and the detokenizer.
        assert ops["SentencepieceTokenizer"] == ops[
            "SentencepieceDecoder"] == 1
        assert report["text_nodes"][mode] == sum(ops.values())
    assert "TopK" in report["op_types"]["beam"]
    assert "ArgMax" in report["op_types"]["greedy"]
    for mode in ("beam", "greedy"):
        # export.onnx_lean: every LayerNorm of the 1 + 1 layers is one node.
        assert report["op_types"][mode]["LayerNormalization"] == 5


@pytest.mark.slow
def test_bad_input_cases(trained):
    translator = trained.translator
    cases = bad_input_texts(translator, trained.texts)
    assert len(cases) == 5
    empty, blank, long_text, unseen, invalid = cases
    assert empty == "" and not blank.strip() and len(set(blank)) >= 4
    tokens = translator.source_tokenizer.tokenize(tf.constant(
        [long_text, unseen]))
    assert len(tokens[0]) > translator.source_limit
    # Emoji and other characters without a piece: byte pieces (4-259).
    assert any(ord(c) > 0xFFFF for c in unseen)
    assert any(4 <= i < 4 + 256 for i in tokens[1].numpy().tolist())
    with pytest.raises(UnicodeDecodeError):
        invalid.decode("utf-8")


@pytest.mark.slow
def test_config_and_models(trained):
    config = read_config(trained.onnx_dir)
    translator = trained.translator
    assert (config["format"], config["version"], config["opset"]) == (
        "keras-transformer-onnx", 2, 17)
    assert config["graphs"] == {"beam": "beam.onnx", "greedy": "greedy.onnx"}
    assert config["text_graphs"] == {"beam": "beam_text.onnx",
                                     "greedy": "greedy_text.onnx"}
    for key, tokenizer in (("source_model", translator.source_tokenizer),
                           ("target_model", translator.target_tokenizer)):
        path = trained.onnx_dir / config[key]
        assert path.read_bytes() == tokenizer.model_proto
    assert config["source_tokenizer"] == translator.source_tokenizer.config
    assert config["max_length"] == MAX_LENGTH
    assert config["max_source_tokens"] == translator.source_limit == 23
    assert config["source_vocab_size"] == translator.source_vocab_size
    assert config["search_settings"] == translator.settings.to_dict() == {
        "beam_size": 4, "length_penalty": 0.6, "extra_length": 50,
        "max_source_tokens": None, "max_output_tokens": None,
        "min_length": 0, "no_repeat_ngram_size": 0}
    assert (config["pad_id"], config["unk_id"], config["start_id"],
            config["end_id"]) == (0, 1, 2, 3)
    assert config["inputs"] == {
        "graphs": {"source_ids": "int32 [batch, source_length]"},
        "text_graphs": {"text": "string [batch]"}}
    assert config["outputs"] == {
        "graphs": {"target_ids": "int32 [batch, target_length]",
                   "score": "float32 [batch]"},
        "text_graphs": {"translation": "string [batch]",
                        "score": "float32 [batch]"}}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_token_graph_is_one_loop_with_named_dims(trained, mode):
    model = onnx.load(trained.onnx_dir / f"{mode}.onnx")
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    assert [(i.name, dims(i)) for i in model.graph.input] == [
        ("source_ids", ["batch", "source_length"])]
    assert model.graph.input[0].type.tensor_type.elem_type == (
        onnx.TensorProto.INT32)
    assert sorted((o.name, dims(o)) for o in model.graph.output) == [
        ("score", ["batch"]), ("target_ids", ["batch", "target_length"])]
    assert [n.op_type for n in model.graph.node].count("Loop") == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_text_graph_interface(trained, mode):
    model = onnx.load(trained.onnx_dir / f"{mode}_text.onnx")
    onnx.checker.check_model(model)
    assert [(i.name, i.type.tensor_type.elem_type, dims(i))
            for i in model.graph.input] == [
        ("text", onnx.TensorProto.STRING, ["batch"])]
    assert [(o.name, o.type.tensor_type.elem_type, dims(o))
            for o in model.graph.output] == [
        ("translation", onnx.TensorProto.STRING, ["batch"]),
        ("score", onnx.TensorProto.FLOAT, ["batch"])]
    opsets = {o.domain: o.version for o in model.opset_import}
    assert (opsets[""], opsets["ai.onnx.contrib"]) == (17, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["beam.onnx", "greedy.onnx",
                                  "beam_text.onnx"])
def test_file_holds_each_weight_once(trained, name):
    path = trained.onnx_dir / name
    model = onnx.load(path)
    values = [numpy_helper.to_array(tensor)
              for graph, _ in onnx_graph.graphs(model.graph)
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
        assert copies == 1, variable.path
    weights = sum(v.nbytes for v in values)
    positional_table = MAX_LENGTH * 64 * 4
    assert weights <= variables_bytes + positional_table + 4096
    # A text graph also holds the two SentencePiece models.
    models = 0 if "text" not in name else sum(
        os.path.getsize(trained.onnx_dir / f) for f in ("source.model",
                                                        "target.model"))
    assert os.path.getsize(path) <= 1.3 * variables_bytes + models


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_onnxruntime_ids_equal_translator_ids(trained, mode):
    texts, expected_texts = reverse_task(56, seed=2)
    ids = trained.translator.source_ids(tf.constant(texts)).numpy()
    function = {"beam": trained.translator.translate_tokens,
                "greedy": trained.translator.translate_tokens_greedy}[mode]
    expected = function(ids)
    got = trained.runtime.translate_tokens(ids, mode)
    assert got["target_ids"].dtype == np.int32
    np.testing.assert_array_equal(got["target_ids"],
                                  expected["target_ids"].numpy())
    np.testing.assert_allclose(got["score"], expected["score"].numpy(),
                               atol=1e-4)
    # The model learned the task: many outputs are the reversed words.
    translations = trained.translator.target_tokenizer.detokenize(
        got["target_ids"]).numpy()
    correct = sum(t.decode() == r for t, r in zip(translations,
                                                  expected_texts))
    assert correct >= len(texts) // 4


@pytest.mark.slow
def test_runtime_token_errors_and_empty_inputs(trained):
    runtime, translator = trained.runtime, trained.translator
    size = translator.source_vocab_size
    with pytest.raises(ValueError, match="`source_ids`.*containing 1000"):
        runtime.translate_tokens([[4, 1000, 3]])
    with pytest.raises(ValueError, match=f"`source_ids`.*containing {size}"):
        runtime.translate_tokens(np.array([[4, size, 3]], np.int64),
                                 "greedy")
    with pytest.raises(ValueError, match="`source_ids`.*containing -1"):
        runtime.translate_tokens([[-1, 3]])
    with pytest.raises(ValueError, match="`source_ids` must be a 2-D"):
        runtime.translate_tokens(np.zeros([3], np.int32))
    with pytest.raises(ValueError, match="`source_ids` must be a 2-D"):
        runtime.translate_tokens(np.zeros([1, 2], np.float32))
    with pytest.raises(ValueError, match="`mode`.*mode='top'"):
        runtime.translate_tokens(np.zeros([1, 2], np.int32), "top")
    empty = runtime.translate_tokens(np.zeros([0, 3], np.int32))
    assert empty["target_ids"].shape == (0, 0)
    assert empty["score"].shape == (0,)
    # No columns: the empty-input rule, as in TensorFlow.
    for mode, function in (("beam", translator.translate_tokens),
                           ("greedy", translator.translate_tokens_greedy)):
        got = runtime.translate_tokens(np.zeros([2, 0], np.int32), mode)
        expected = function(tf.zeros([2, 0], tf.int32))
        assert got["target_ids"].shape == expected["target_ids"].shape
        assert got["target_ids"].shape == (2, 0)
        assert got["score"].tolist() == expected["score"].numpy().tolist()
        # Rows of only [END] and padding: no token, score 0.
        got = runtime.translate_tokens([[END_ID, 0], [5, END_ID]], mode)
        assert got["target_ids"][0].tolist() == [0] * got[
            "target_ids"].shape[1]
        assert got["score"][0] == 0.0 and got["score"][1] != 0.0


@pytest.mark.slow
@pytest.mark.parametrize("texts, greedy, error, match", [
    (None, False, TypeError, "`texts`"),
    (5, False, TypeError, "`texts`"),
    ([1, "one"], False, TypeError, r"texts\[0\]"),
    (["one", None], True, TypeError, r"texts\[1\]"),
    ("one", "yes", TypeError, "`greedy`")])
def test_runtime_rejects_bad_texts(trained, texts, greedy, error, match):
    with pytest.raises(error, match=match):
        trained.runtime(texts, greedy=greedy)


@pytest.mark.slow
def test_runtime_refuses_text_graphs_where_tensorflow_is(trained, tmp_path):
    with pytest.raises(RuntimeError, match="TensorFlow"):
        trained.runtime(["one two"])
    copy = tmp_path / "copy"
    shutil.copytree(trained.onnx_dir, copy)
    os.remove(copy / "greedy_text.onnx")
    with pytest.raises(ValueError, match="greedy text graph"):
        OnnxTranslator(copy)


# The TensorFlow-free runtime: `import tensorflow` fails in this process.
RUNTIME_SCRIPT = r"""
import sys
sys.modules["tensorflow"] = None
sys.modules["keras"] = None
import base64, json
try:
    import tensorflow
    blocked = False
except ImportError:
    blocked = True
import numpy as np
from keras_transformer.export.onnx.runtime import OnnxTranslator

request = json.load(open(sys.argv[1], encoding="utf-8"))
def text(entry):
    if isinstance(entry, str):
        return entry
    data = base64.b64decode(entry["base64"])
    return data.decode("utf-8", "surrogateescape") if entry["str"] else data
texts = [text(entry) for entry in request["texts"]]
runtime = OnnxTranslator(request["onnx_dir"])
out = {"blocked": blocked}
for mode in ("beam", "greedy"):
    out[mode] = runtime(texts, greedy=mode == "greedy")
    result = runtime.translate_tokens(np.array(request["ids"]), mode)
    out[mode + "_tokens"] = {key: value.tolist()
                             for key, value in result.items()}
out["single"] = runtime(texts[0], greedy=True)
out["empty"] = [runtime([]), runtime([], greedy=True)]
errors = []
for call in (lambda: runtime.translate_tokens([[4, 100000, 3]]),
             lambda: runtime.translate_tokens([[3]], mode="top"),
             lambda: runtime(["one"], greedy=None),
             lambda: runtime([b"one", 2])):
    try:
        call()
        errors.append(None)
    except (TypeError, ValueError) as error:
        errors.append(f"{type(error).__name__}: {error}")
out["errors"] = errors
out["modules"] = sorted(name for name, module in sys.modules.items()
                        if module is not None and name.split(".")[0] in (
                            "tensorflow", "keras", "tensorflow_text",
                            "tf2onnx"))
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""


def run_script(script, request, tmp_path):
    request_path, answer_path = tmp_path / "request.json", tmp_path / "a.json"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    process = subprocess.run(
        [sys.executable, "-c", script, str(request_path), str(answer_path)],
        capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(answer_path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_tensorflow_free_runtime_equals_translator(trained, tmp_path):
    translator = trained.translator
    texts = trained.texts[:30] + bad_input_texts(translator, trained.texts)
    texts += ["  nine\u3000four\t", INVALID_UTF8, "\u2603"]
    # Invalid UTF-8 as bytes, and as the str Python decodes them to.
    entries = [t if isinstance(t, str) else
               {"base64": base64.b64encode(t).decode(), "str": False}
               for t in texts]
    entries.append({"base64": base64.b64encode(INVALID_UTF8).decode(),
                    "str": True})
    strings = [t.encode() if isinstance(t, str) else t for t in texts]
    strings.append(INVALID_UTF8)
    ids = translator.source_ids(tf.constant(strings[:40])).numpy()
    got = run_script(RUNTIME_SCRIPT, {
        "onnx_dir": str(trained.onnx_dir), "texts": entries,
        "ids": ids.tolist()}, tmp_path)
    assert got["blocked"] and got["modules"] == []
    for mode, function, tokens in (
            ("beam", translator.translate, translator.translate_tokens),
            ("greedy", translator.translate_greedy,
             translator.translate_tokens_greedy)):
        expected = function(tf.constant(strings))
        assert [t for t, _ in got[mode]] == [
            t.decode() for t in expected["translation"].numpy()]
        np.testing.assert_allclose([s for _, s in got[mode]],
                                   expected["score"].numpy(), atol=1e-4)
        expected = tokens(ids)
        assert got[mode + "_tokens"]["target_ids"] == expected[
            "target_ids"].numpy().tolist()
        np.testing.assert_allclose(got[mode + "_tokens"]["score"],
                                   expected["score"].numpy(), atol=1e-4)
    # Bytes and their surrogate-escaped str give the same translation.
    assert got["beam"][-1] == got["beam"][-3]
    assert got["beam"][len(trained.texts[:30])] == ["", 0.0]
    assert got["single"][0] == got["greedy"][0][0]
    assert got["single"][1] == pytest.approx(got["greedy"][0][1], abs=1e-4)
    assert got["empty"] == [[], []]
    assert got["errors"][0].startswith("ValueError: `source_ids`")
    assert "containing 100000" in got["errors"][0]
    assert got["errors"][1].startswith("ValueError: `mode`")
    assert got["errors"][2].startswith("TypeError: `greedy`")
    assert got["errors"][3].startswith("TypeError: `texts` must contain")


def tamper(onnx_dir, out_dir, name):
    """Copies the export with the largest weight of `name` reversed."""
    shutil.copytree(onnx_dir, out_dir)
    path = out_dir / name
    model = onnx.load(path)
    largest = max(model.graph.initializer,
                  key=lambda t: numpy_helper.to_array(t).size)
    value = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array(value[::-1].copy(),
                                             largest.name))
    onnx.save(model, path)
    config = read_config(out_dir)
    config["graphs"] = {"beam": "beam.onnx"}
    config["text_graphs"] = {"beam": "beam_text.onnx"}
    (out_dir / "onnx_config.json").write_text(json.dumps(config))


@pytest.mark.slow
def test_verification_raises_on_a_tampered_token_graph(trained, tmp_path):
    tampered = tmp_path / "tampered"
    tamper(trained.onnx_dir, tampered, "beam.onnx")
    texts = trained.texts[:16]
    with pytest.raises(ValueError, match="ONNX graph 'beam.onnx' differs"):
        verify_onnx(tampered, trained.translator, texts=texts)
    report = verify_onnx(tampered, trained.translator, texts=texts,
                         strict=False)
    assert report["identical"]["beam"] < len(texts)
    assert report["text"]["identical"] == {"beam": len(texts) + 5}
    assert len(report["mismatches"]) == len(texts) + 5 - report[
        "identical"]["beam"]


@pytest.mark.slow
def test_verification_raises_on_a_tampered_text_graph(trained, tmp_path):
    tampered = tmp_path / "tampered"
    tamper(trained.onnx_dir, tampered, "beam_text.onnx")
    with pytest.raises(ValueError,
                       match="ONNX graph 'beam_text.onnx' differs from the "
                             "Translator's translate"):
        verify_onnx(tampered, trained.translator, texts=trained.texts[:16])


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(texts=[]), ValueError, "`texts`"),
    (dict(texts="one"), TypeError, "`texts`"),
    (dict(texts=["one"], source_ids=[[4, 3]]), ValueError, "`source_ids`"),
    (dict(source_ids=[4, 3]), ValueError, "`source_ids`"),
    (dict(texts=["one"], batch_size=0), ValueError, "`batch_size`")])
def test_verification_rejects_bad_arguments(trained, kwargs, error, match):
    with pytest.raises(error, match=match):
        verify_onnx(trained.onnx_dir, trained.translator, **kwargs)


@pytest.mark.slow
def test_export_of_one_search_with_opset_18(trained, tmp_path):
    report = onnx_export.export_onnx(trained.translator, tmp_path,
                                     opset=18, modes=("greedy",),
                                     verify=False)
    assert report["verification"] is None
    assert sorted(os.listdir(tmp_path)) == sorted(report["files"]) == [
        "greedy.onnx", "greedy_text.onnx", "onnx_config.json",
        "source.model", "target.model"]
    for name in ("greedy.onnx", "greedy_text.onnx"):
        model = onnx.load(tmp_path / name)
        assert [o.version for o in model.opset_import
                if o.domain == ""] == [18]
    runtime = OnnxTranslator(tmp_path)
    assert runtime.modes == ("greedy",)
    with pytest.raises(ValueError, match="`mode`"):
        runtime.translate_tokens([[4, 3]])
    # Token ids from source ids, text in a subprocess, both as TensorFlow.
    ids = trained.translator.source_ids(
        tf.constant(trained.texts[:20])).numpy()
    report = verify_onnx(tmp_path, trained.translator,
                         texts=trained.texts[:20] + [INVALID_UTF8])
    assert report["identical"] == report["text"]["identical"] == {
        "greedy": 26}
    assert report["text"]["saved_model_identical"] == {"greedy": None}
    report = verify_onnx(tmp_path, trained.translator, source_ids=ids,
                         saved_model_dir=trained.saved_model_dir)
    assert report["identical"] == report["saved_model_identical"] == {
        "greedy": 20}
    assert report["text"]["identical"] == report["text"][
        "saved_model_identical"] == {"greedy": 64 + 5}


@pytest.mark.slow
def test_readme_python_example_runs_without_tensorflow(trained):
    import re
    import subprocess
    import sys

    readme = open(os.path.join(os.path.dirname(__file__), os.pardir,
                               "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## ONNX\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("exported/onnx", str(trained.onnx_dir))
    script = ("import json, sys\nsys.modules['tensorflow'] = None\n" + code +
              "\nassert 'keras' not in sys.modules\n"
              "print(json.dumps([[str(t) for t in translation],"
              " score.tolist()]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, check=True)
    translations, scores = json.loads(out.stdout.strip().splitlines()[-1])
    expected = trained.translator.translate(tf.constant(["forty-two", ""]))
    assert translations == [t.decode() for t in
                            expected["translation"].numpy()]
    np.testing.assert_allclose(scores, expected["score"].numpy(), atol=1e-3)
    assert translations[1] == "" and scores[1] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_raw_token_graph_rejects_ids_outside_the_vocabulary(trained, mode):
    # Without our Python helper too: the graph itself fails, in a node
    # named after the rule (onnxruntime names the failing node).
    session = ort.InferenceSession(str(trained.onnx_dir / f"{mode}.onnx"))
    vocab = trained.translator.source_vocab_size
    for bad in (vocab, vocab + 7, -2):
        with pytest.raises(Exception, match="source_ids_in_vocabulary"):
            session.run(["target_ids"], {
                "source_ids": np.array([[5, bad, END_ID]], np.int32)})
    ids, = session.run(["target_ids"], {
        "source_ids": np.array([[5, 6, END_ID]], np.int32)})
    assert ids.shape[0] == 1


@pytest.mark.slow
def test_beam_op_graph_equals_the_translator_at_length_penalty_0(
        trained, tmp_path):
    """The opt-in BeamSearch-op file: verified ids, then run by hand."""
    from keras_transformer.contract import ONNX_BEAM_OP_GRAPH

    report = onnx_export.export_onnx(
        trained.translator, tmp_path, modes=("beam",), texts=trained.texts,
        beam_op=True)
    # The verification sentences (the texts and the bad inputs): at least
    # 95% the Translator's ids at alpha 0.
    checked = report["beam_op"]
    assert checked["sentences"] == report["verification"]["sentences"]
    assert checked["identical"] >= 0.95 * checked["sentences"]
    assert len(checked["mismatches"]) == min(
        5, checked["sentences"] - checked["identical"])
    assert checked["max_score_difference"] < 1e-3
    config = json.loads((tmp_path / "onnx_config.json").read_text())
    assert config["beam_op_graph"] == ONNX_BEAM_OP_GRAPH
    # At the translator's alpha (0.6) it ranks by log P / length^alpha:
    # where it picks our hypothesis, the two scores are the same log P.
    session = make_session(tmp_path / ONNX_BEAM_OP_GRAPH)
    ids = trained.translator.source_ids(
        tf.constant(trained.texts[:32])).numpy()
    got = run_search(session, ids)
    expected = trained.translator.translate_tokens(ids)
    width = max(got["target_ids"].shape[1], expected["target_ids"].shape[1])
    same = (padded(got["target_ids"].tolist(), width) == padded(
        expected["target_ids"].numpy().tolist(), width)).all(axis=1)
    assert same.mean() >= 0.9
    lengths = (got["target_ids"] != 0).sum(axis=1)
    np.testing.assert_allclose(
        (got["score"] * lengths ** 0.6)[same],
        (expected["score"].numpy() * ((5 + lengths) / 6) ** 0.6)[same],
        rtol=1e-4)


def test_beam_op_rejects_rules_it_cannot_follow(trained):
    from keras_transformer.export.onnx.beam_op import convert_beam_op

    translator = Translator(
        trained.translator.model, trained.translator.source_tokenizer,
        trained.translator.target_tokenizer,
        settings=SearchSettings(no_repeat_ngram_size=2))
    with pytest.raises(ValueError, match="no_repeat_ngram_size=2"):
        convert_beam_op(translator)
    with pytest.raises(ValueError, match="beam_op"):
        onnx_export.export_onnx(trained.translator, "unused",
                                beam_op=True, quantize="int8")
