"""`export.onnx.export`: the export directory, its report and its config.

The trained run's export (`onnx_export`, written once per pytest run in
`tests/export/conftest.py`, verified on the run's held-out sentences plus
the bad-input cases) is checked file by file; the argument checks run on
a stand-in translator (fast).
"""

import os
import types

import numpy as np
import onnx
import pytest
import tensorflow as tf
from onnx import numpy_helper

from keras_transformer.export.onnx import export as onnx_export_module
from keras_transformer.export.onnx import graph as onnx_graph
from keras_transformer.export.onnx.runtime import OnnxTranslator, read_config
from keras_transformer.export.onnx.verify import verify_onnx
from tests.export.onnx_helpers import (
    ALL_FILES,
    INVALID_UTF8,
    dims,
    fake_translator,
)


@pytest.mark.parametrize("kwargs, match", [
    (dict(opset=16), "`opset`"), (dict(opset=19), "`opset`"),
    (dict(opset=True), "`opset`"), (dict(modes=()), "`modes`"),
    (dict(modes="beam"), "`modes`"), (dict(modes=("beam", "beam")),
                                      "`modes`"),
    (dict(modes=("sampling",)), "`modes`")])
def test_export_rejects_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises((ValueError, TypeError), match=match):
        onnx_export_module.export_onnx(fake_translator(), tmp_path, **kwargs)
    assert not os.listdir(tmp_path)


def test_export_rejects_non_translator_and_other_tokenizers(tmp_path):
    with pytest.raises(TypeError, match="`translator`"):
        onnx_export_module.export_onnx(object(), tmp_path)
    wordpiece = fake_translator()
    wordpiece.target_tokenizer = types.SimpleNamespace(vocabulary=["a"])
    with pytest.raises(TypeError, match="target_tokenizer of type"):
        onnx_export_module.export_onnx(wordpiece, tmp_path)
    assert not os.listdir(tmp_path)


# -- the export of the trained run (slow) -----------------------------------

@pytest.mark.slow
def test_export_report_and_parity_counts(onnx_export):
    report = onnx_export.report
    assert report["opset"] == 17
    assert sorted(report["files"]) == ALL_FILES == sorted(
        os.listdir(onnx_export.onnx_dir))
    for name, size in report["files"].items():
        assert size == os.path.getsize(onnx_export.onnx_dir / name) > 0
    verification = report["verification"]
    sentences = len(onnx_export.texts) + 5  # The five bad-input cases.
    both = {"beam": sentences, "greedy": sentences}
    print("token graphs:", verification["identical"],
          verification["saved_model_identical"],
          verification["max_score_difference"])
    print("text graphs:", verification["text"])
    assert verification["sentences"] == sentences >= 55
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
    layers = onnx_export.translator.model.config.num_layers
    assert report["operators"] == "onnxruntime"
    for mode in ("beam", "greedy"):
        # export.onnx.lean and .fuse: every LayerNorm is one node, 2 per
        # encoder layer and 3 per decoder layer; in the greedy search each
        # decoder layer's two attentions are one node each (the beam
        # search keeps standard operators).
        ops = report["op_types"][mode]
        assert ops["LayerNormalization"] == 5 * layers
        assert ops.get("MultiHeadAttention", 0) == (
            2 * layers if mode == "greedy" else 0)


@pytest.mark.slow
def test_config_and_models(onnx_export):
    config = read_config(onnx_export.onnx_dir)
    translator = onnx_export.translator
    max_length = translator.model.config.max_length
    assert (config["format"], config["version"], config["opset"]) == (
        "keras-transformer-onnx", 3, 17)
    assert config["graphs"] == {"beam": "beam.onnx", "greedy": "greedy.onnx"}
    assert config["operators"] == "onnxruntime"
    assert config["custom_op_domains"] == {
        "graphs": "com.microsoft (onnxruntime contrib operators; greedy "
                  "search)",
        "text_graphs": "ai.onnx.contrib (onnxruntime-extensions)"}
    assert config["text_graphs"] == {"beam": "beam_text.onnx",
                                     "greedy": "greedy_text.onnx"}
    for key, tokenizer in (("source_model", translator.source_tokenizer),
                           ("target_model", translator.target_tokenizer)):
        path = onnx_export.onnx_dir / config[key]
        assert path.read_bytes() == tokenizer.model_proto
    assert config["source_tokenizer"] == translator.source_tokenizer.config
    assert config["max_length"] == max_length
    # Room for [END]: one token fewer than the model's length.
    assert config["max_source_tokens"] == translator.source_limit == (
        max_length - 1)
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
def test_text_graph_interface(onnx_export, mode):
    model = onnx.load(onnx_export.onnx_dir / f"{mode}_text.onnx")
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
def test_file_holds_each_weight_once(onnx_export, name):
    path = onnx_export.onnx_dir / name
    model = onnx.load(path)
    values = [numpy_helper.to_array(tensor)
              for graph, _ in onnx_graph.graphs(model.graph)
              for tensor in graph.initializer]
    variables = onnx_export.translator.model.weights
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
    config = onnx_export.translator.model.config
    positional_table = config.max_length * config.d_model * 4
    assert weights <= variables_bytes + positional_table + 4096
    # A text graph also holds the two SentencePiece models.
    models = 0 if "text" not in name else sum(
        os.path.getsize(onnx_export.onnx_dir / f) for f in ("source.model",
                                                            "target.model"))
    assert os.path.getsize(path) <= 1.3 * variables_bytes + models


@pytest.mark.slow
def test_export_of_one_search_with_opset_18(onnx_export, tmp_path):
    translator, texts = onnx_export.translator, onnx_export.texts
    report = onnx_export_module.export_onnx(translator, tmp_path, opset=18,
                                            modes=("greedy",), verify=False,
                                            operators="standard")
    assert report["verification"] is None
    # Standard operators only, named so in the config.
    assert read_config(tmp_path)["operators"] == "standard"
    assert "graphs" not in read_config(tmp_path)["custom_op_domains"]
    assert "MultiHeadAttention" not in report["op_types"]["greedy"]
    for name in ("greedy.onnx", "greedy_text.onnx"):
        assert "com.microsoft" not in {
            node.domain for graph, _ in onnx_graph.graphs(
                onnx.load(tmp_path / name).graph) for node in graph.node}
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
    ids = translator.source_ids(tf.constant(texts[:20])).numpy()
    report = verify_onnx(tmp_path, translator,
                         texts=texts[:20] + [INVALID_UTF8])
    assert report["identical"] == report["text"]["identical"] == {
        "greedy": 26}
    assert report["text"]["saved_model_identical"] == {"greedy": None}
    report = verify_onnx(tmp_path, translator, source_ids=ids,
                         saved_model_dir=onnx_export.saved_model_dir)
    assert report["identical"] == report["saved_model_identical"] == {
        "greedy": 20}
    assert report["text"]["identical"] == report["text"][
        "saved_model_identical"] == {"greedy": 64 + 5}
