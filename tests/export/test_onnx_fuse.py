"""`export.onnx.fuse`: onnxruntime's fused operators in the search graph.

References: the graph before the rewrites (run by onnxruntime) and the
Keras Translator, on the searches of a random 2-layer model (every source
runs to the output limit); a hand-built graph for the select rewrite, and
a residual LayerNorm for the (measured, not applied)
SkipLayerNormalization rewrite. The fused kernels compute in another
order, so scores are held to 1e-4 and ids must be equal. The trained run's
export (the default, onnxruntime operators) is checked against Keras in
test_onnx_export.py."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from keras_transformer.export.onnx import fuse
from keras_transformer.export.onnx.graph import graphs

LAYERS = 2


def _session(model):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _run(model, feeds):
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _op_counts(model):
    counts = {}
    for graph, _ in graphs(model.graph):
        for node in graph.node:
            key = (node.domain or "", node.op_type)
            counts[key] = counts.get(key, 0) + 1
    return counts


def _select_model(dtype):
    """y = Cast(c) * a + Cast(Not(c)) * b, as tf2onnx writes SelectV2."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [
        helper.make_node("Not", ["c"], ["n"]),
        helper.make_node("Cast", ["n"], ["cn"], to=elem),
        helper.make_node("Cast", ["c"], ["cc"], to=elem),
        helper.make_node("Mul", ["cc", "a"], ["ma"]),
        helper.make_node("Mul", ["b", "cn"], ["mb"]),
        helper.make_node("Add", ["mb", "ma"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "select",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [None, 3]),
         helper.make_tensor_value_info("a", elem, [None, 3]),
         helper.make_tensor_value_info("b", elem, [None, 3])],
        [helper.make_tensor_value_info("y", elem, [None, 3])])
    return helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_where_selects_replaces_the_arithmetic_select(dtype):
    model = _select_model(dtype)
    rng = np.random.default_rng(0)
    feeds = {"c": rng.random((4, 3)) < 0.5,
             "a": rng.integers(-50, 50, (4, 3)).astype(dtype),
             "b": rng.integers(-50, 50, (4, 3)).astype(dtype)}
    expected = np.where(feeds["c"], feeds["a"], feeds["b"])
    np.testing.assert_array_equal(_run(model, feeds)["y"], expected)
    assert fuse.where_selects(model.graph) == 1
    fuse.drop_dead_nodes(model.graph)
    assert [n.op_type for n in model.graph.node] == ["Where"]
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(_run(model, feeds)["y"], expected)


def test_where_selects_keeps_a_select_of_two_conditions():
    model = _select_model(np.float32)
    # Cast(c) * a + Cast(Not(d)) * b is no select of one condition.
    model.graph.node[0].input[0] = "d"
    model.graph.input.append(
        helper.make_tensor_value_info("d", TensorProto.BOOL, [None, 3]))
    assert fuse.where_selects(model.graph) == 0
    assert len(model.graph.node) == 6


@pytest.fixture(scope="module")
def random_searches():
    """A random 2-layer model's Translator and its searches converted with
    standard operators (one conversion per mode)."""
    from keras_transformer.benchmarks import ours
    from keras_transformer.config import TransformerConfig
    from keras_transformer.export.onnx.convert import convert_search
    from keras_transformer.text.special_tokens import END_ID

    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=400, target_vocab_size=400,
        num_layers=LAYERS, d_model=32, num_heads=4, d_ff=64,
        dropout_rate=0.0, max_length=40)
    tokenizer = ours.synthetic_tokenizer(400)
    model = ours.build_model(config)
    ours.suppress_token(model, END_ID)
    translator = ours.make_translator(model, tokenizer, extra_length=6)
    return translator, {mode: convert_search(translator, mode,
                                             operators="standard")
                        for mode in ("greedy", "beam")}


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_fused_and_standard_searches_give_the_translators_ids(
        random_searches, mode):
    import tensorflow as tf

    translator, converted = random_searches
    standard = converted[mode]
    fused = onnx.ModelProto()
    fused.CopyFrom(standard)
    counts = fuse.fuse_search(fused)
    # Two attentions per decoder layer (the selects are already Where).
    assert counts == {"where": 0, "attention": 2 * LAYERS}
    ops = _op_counts(fused)
    assert ops[("com.microsoft", "MultiHeadAttention")] == 2 * LAYERS
    # The encoder's attention (no cache, whole sequences) stays as it is.
    assert ops[("", "Softmax")] == LAYERS
    assert {o.domain: o.version for o in fused.opset_import}[
        "com.microsoft"] == 1
    onnx.checker.check_model(fused)
    plain = _op_counts(standard)
    assert not any(domain for domain, _ in plain)
    assert plain[("", "Where")] > 0
    assert plain[("", "LayerNormalization")] == ops[
        ("", "LayerNormalization")] > 0
    assert sum(ops.values()) <= sum(plain.values()) - 2 * LAYERS * 8

    rng = np.random.default_rng(3)
    for batch, length in ((1, 5), (3, 9)):
        source = rng.integers(4, 400, (batch, length)).astype(np.int32)
        source[:, -1] = 3
        search = (translator.translate_tokens_greedy if mode == "greedy"
                  else translator.translate_tokens)
        expected = search(tf.constant(source))
        for graph in (standard, fused):
            out = _run(graph, {"source_ids": source})
            np.testing.assert_array_equal(
                out["target_ids"], expected["target_ids"].numpy())
            np.testing.assert_allclose(out["score"],
                                       expected["score"].numpy(), atol=1e-4)


def test_convert_search_rejects_unknown_operators(random_searches):
    from keras_transformer.export.onnx.convert import convert_search

    translator, _ = random_searches
    with pytest.raises(ValueError, match="`operators`"):
        convert_search(translator, "greedy", operators="contrib")


def test_skip_layer_norm_rewrite_matches_the_residual_layer_norm():
    # LayerNorm(x + (y + bias)) over the last axis, as ResidualNorm's graph
    # is after export.onnx.lean: one SkipLayerNormalization, within 1e-5.
    rng = np.random.default_rng(1)
    d = 16
    weights = {name: rng.normal(size=d).astype(np.float32)
               for name in ("bias", "gamma", "beta")}
    nodes = [helper.make_node("Add", ["y", "bias"], ["biased"]),
             helper.make_node("Add", ["x", "biased"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"],
                              ["out"], axis=2, epsilon=1e-6)]
    graph = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None, d])
         for n in ("x", "y")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                       [None, None, d])],
        [onnx.numpy_helper.from_array(v, n) for n, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    feeds = {n: rng.normal(size=(2, 3, d)).astype(np.float32)
             for n in ("x", "y")}
    total = feeds["x"] + feeds["y"] + weights["bias"]
    mean = total.mean(-1, keepdims=True)
    variance = ((total - mean) ** 2).mean(-1, keepdims=True)
    expected = ((total - mean) / np.sqrt(variance + 1e-6) * weights["gamma"]
                + weights["beta"])
    values = {n: v for n, v in weights.items()}
    assert fuse.fuse_skip_layer_norms(model.graph, values) == 1
    fuse.drop_dead_nodes(model.graph)
    assert [(n.domain, n.op_type) for n in model.graph.node] == [
        ("com.microsoft", "SkipLayerNormalization")]
    assert list(model.graph.node[0].input) == ["x", "y", "gamma", "beta",
                                               "bias"]
    np.testing.assert_allclose(_run(model, feeds)["out"], expected,
                               atol=1e-5)
