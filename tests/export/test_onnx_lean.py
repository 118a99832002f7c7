"""The leaner decoder step's ONNX rewrites, on hand-built graphs.

References are numpy formulas and the graph before the rewrite, run by
onnxruntime; tolerances are stated where a rewrite is not exact.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from keras_transformer.export.onnx import lean
from tests.export.test_onnx_quantize import carried_weight_loop

D = 8
EPSILON = 1e-6


def _run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _layer_norm_nodes(x, out, prefix, axes=(-1,)):
    """The nine nodes tf2onnx writes for `ResidualNorm._normalize`."""
    p = prefix
    return [
        helper.make_node("ReduceMean", [x], [f"{p}m"], axes=list(axes)),
        helper.make_node("Sub", [x, f"{p}m"], [f"{p}c"]),
        helper.make_node("Mul", [f"{p}c", f"{p}c"], [f"{p}sq"]),
        helper.make_node("ReduceMean", [f"{p}sq"], [f"{p}v"],
                         axes=list(axes)),
        helper.make_node("Add", [f"{p}v", "eps"], [f"{p}ve"]),
        helper.make_node("Sqrt", [f"{p}ve"], [f"{p}s"]),
        helper.make_node("Div", [f"{p}c", f"{p}s"], [f"{p}n"]),
        helper.make_node("Mul", [f"{p}n", "gamma"], [f"{p}g"]),
        helper.make_node("Add", [f"{p}g", "beta"], [out]),
    ]


def _model(nodes, outputs=("y",), loop=False):
    """x (B, T, D) -> y, in the main graph or inside a one-step Loop."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.normal(size=D).astype(np.float32),
                                "gamma"),
        numpy_helper.from_array(rng.normal(size=D).astype(np.float32),
                                "beta"),
        numpy_helper.from_array(np.array(EPSILON, np.float32), "eps")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None, D])
    if not loop:
        graph = helper.make_graph(
            nodes, "main", [x], [helper.make_tensor_value_info(
                name, TensorProto.FLOAT, [None, None, D])
                for name in outputs],
            initializers)
        return helper.make_model(graph, opset_imports=[
            helper.make_opsetid("", 17)])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), *nodes],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         *[helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                         [None, None, D])
           for name in outputs]])
    initializers += [numpy_helper.from_array(np.array(1, np.int64), "one"),
                     numpy_helper.from_array(np.array(True), "true")]
    graph = helper.make_graph(
        [helper.make_node("Loop", ["one", "true"],
                          [f"scan_{name}" for name in outputs], body=body)],
        "main", [x], [helper.make_tensor_value_info(
            f"scan_{name}", TensorProto.FLOAT, [1, None, None, D])
            for name in outputs],
        initializers)
    return helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])


def _numpy_layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("axes", [(-1,), (2,)])
def test_layer_norm_becomes_one_node_with_the_same_outputs(loop, axes):
    model = _model(_layer_norm_nodes("x", "y", "a/", axes), loop=loop)
    x = np.random.default_rng(1).normal(
        3.0, 2.0, size=(2, 3, D)).astype(np.float32)
    before = _run(model, {"x": x})[0]
    assert lean.fuse_layer_norms(model.graph) == 1
    onnx.checker.check_model(model)
    graph = (model.graph.node[0].attribute[0].g if loop else model.graph)
    assert [n.op_type for n in graph.node if n.op_type != "Identity"] == [
        "LayerNormalization"]
    after = _run(model, {"x": x})[0]
    gamma, beta = (numpy_helper.to_array(t) for t in model.graph.initializer
                   if t.name in ("gamma", "beta"))
    expected = _numpy_layer_norm(x, gamma, beta)
    # onnxruntime's kernel takes the variance as E[x^2] - E[x]^2.
    np.testing.assert_allclose(after.reshape(x.shape), expected, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_layer_norm_with_a_shared_intermediate_is_left_alone():
    # The centered values also leave the graph: fusing would lose them.
    nodes = _layer_norm_nodes("x", "y", "a/")
    model = _model(nodes, outputs=("y", "a/c"))
    assert lean.fuse_layer_norms(model.graph) == 0
    assert len(model.graph.node) == 9


def test_layer_norm_over_two_axes_is_left_alone():
    model = _model(_layer_norm_nodes("x", "y", "a/", axes=(1, 2)))
    assert lean.fuse_layer_norms(model.graph) == 0


def test_two_layer_norms_in_a_row_both_fuse():
    nodes = (_layer_norm_nodes("x", "h", "a/")
             + _layer_norm_nodes("h", "y", "b/"))
    model = _model(nodes)
    x = np.random.default_rng(2).normal(size=(1, 1, D)).astype(np.float32)
    before = _run(model, {"x": x})[0]
    assert lean.fuse_layer_norms(model.graph) == 2
    np.testing.assert_allclose(_run(model, {"x": x})[0], before, rtol=1e-5,
                               atol=1e-5)


def test_carried_weights_leave_the_loop_reshaped_once():
    model = carried_weight_loop()
    x = np.random.default_rng(3).normal(size=(1, 8)).astype(np.float32)
    before = _run(model, {"x": x})[0]
    lean.hoist_loop_invariants(model.graph)
    lean.fold_weight_views(model.graph)
    onnx.checker.check_model(model)
    loop = model.graph.node[0]
    body = loop.attribute[0].g
    assert list(loop.input) == ["steps", "", "x"]
    assert [n.op_type for n in body.node] == ["MatMul", "MatMul", "Identity"]
    weights = {t.name: numpy_helper.to_array(t)
               for t in model.graph.initializer}
    np.testing.assert_array_equal(weights["w_flat"],
                                  weights["weight"].reshape(8, 8))
    after = _run(model, {"x": x})[0]
    # The same products; onnxruntime prepacks a constant weight, whose
    # kernel sums in another order: float32 rounding apart (~1e-7).
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)
    expected = x
    for _ in range(3):
        expected = expected @ weights["w_flat"] @ weights["projection"]
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-6)
