"""`export.onnx.graph`: the clean-up passes (`compact`, `name_dims`) and
`export.onnx.verify.graph_summary`, on small hand-made graphs (fast)."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from keras_transformer.export.onnx import graph as onnx_graph
from keras_transformer.export.onnx.verify import graph_summary
from tests.export.onnx_helpers import dims

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
    assert graph_summary(model)["largest_duplicate_bytes"] == 64
    onnx_graph.compact(model.graph)
    onnx.checker.check_model(model)
    np.testing.assert_array_equal(run(model, x), before)
    summary = graph_summary(model)
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
    summary = graph_summary(loop_model())
    assert summary["opset"] == 17
    assert summary["nodes"] == 7
    assert summary["op_types"]["MatMul"] == 3


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
