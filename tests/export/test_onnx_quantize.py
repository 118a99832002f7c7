"""Tests for the int8 ONNX export: export/onnx/quantize.py and its checks.

The rewrites are checked on small hand-made graphs (fast, no TensorFlow
model); the whole export on the pytest run's tiny trained run
(`conftest.trained_run`), verified on its held-out sentences. Text graphs
run only in subprocesses (onnxruntime-extensions crashes a process that
has imported TensorFlow).
"""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from keras_transformer.contract import INT8_MIN_AGREEMENT
from keras_transformer.export.onnx.quantize import (
    _einsums_to_matmuls,
    check_quantize,
    matmul_counts,
    quantize_search,
    store_weights,
)
from keras_transformer.export.onnx.verify import (
    _agreement,
    _Checker,
)


def _run(model, **feeds):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def carried_weight_loop(steps=3):
    """x (1, 8) -> (x @ W) @ P, `steps` times; W and P are carried values.

    As tf2onnx writes a `tf.while_loop`: the weights enter the Loop as
    carried values that the body passes through unchanged, and the body
    reshapes W (8, 2, 4) to (8, 8) at every step. P (8, 8), the last
    MatMul, stands for the output projection.
    """
    rng = np.random.default_rng(0)
    weight = (rng.normal(size=(8, 2, 4)) / 3).astype(np.float32)
    projection = (rng.normal(size=(8, 8)) / 3).astype(np.float32)
    value = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Reshape", ["w_in", "flat_shape"], ["w_flat"]),
         helper.make_node("MatMul", ["x_in", "w_flat"], ["h"],
                          name="hidden"),
         helper.make_node("MatMul", ["h", "p_in"], ["x_out"],
                          name="projection"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [value("i", TensorProto.INT64, []),
         value("cond_in", TensorProto.BOOL, []),
         value("x_in", TensorProto.FLOAT, [1, 8]),
         value("w_in", TensorProto.FLOAT, [8, 2, 4]),
         value("p_in", TensorProto.FLOAT, [8, 8])],
        [value("cond_out", TensorProto.BOOL, []),
         value("x_out", TensorProto.FLOAT, [1, 8]),
         value("w_in", TensorProto.FLOAT, [8, 2, 4]),
         value("p_in", TensorProto.FLOAT, [8, 8])],
        [numpy_helper.from_array(np.array([8, 8], np.int64), "flat_shape")])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["steps", "", "x", "weight", "projection"],
                          ["y", "weight_out", "projection_out"], body=body)],
        "search", [value("x", TensorProto.FLOAT, [1, 8])],
        [value("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(weight, "weight"),
         numpy_helper.from_array(projection, "projection"),
         numpy_helper.from_array(np.array(steps, np.int64), "steps")])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("quantize", ["int4", "INT8", 8, True, ""])
def test_check_quantize_names_the_argument(quantize):
    with pytest.raises(ValueError, match=r"`quantize` must be None .*"
                       r"Received: quantize="):
        check_quantize(quantize)


def test_check_quantize_accepts_none_int8_and_float16():
    assert check_quantize(None) is None
    assert check_quantize("int8") == "int8"
    assert check_quantize("float16") == "float16"
    with pytest.raises(ValueError, match="`quantize` must be one of"):
        quantize_search(carried_weight_loop(), None)


def test_quantize_search_quantizes_the_loop_body_matmul():
    model = carried_weight_loop()
    assert matmul_counts(model) == {"main": {"float": 0, "int8": 0},
                                    "loop_body": {"float": 2, "int8": 0}}
    quantized = quantize_search(model)
    # The output projection (the last MatMul) keeps float32.
    assert matmul_counts(quantized) == {"main": {"float": 0, "int8": 0},
                                        "loop_body": {"float": 1, "int8": 1}}
    loop = next(n for n in quantized.graph.node if n.op_type == "Loop")
    # The weights are read from the outer scope: their slots are gone.
    assert list(loop.input) == ["steps", "", "x"]
    assert [i.name for i in quantized.graph.input] == ["x"]
    x = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)
    (expected,) = _run(model, x=x)
    (got,) = _run(quantized, x=x)
    # Three steps of 8-bit products: about 1% of the values' scale.
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(
        expected).max())
    assert not np.array_equal(got, expected)  # Really int8.


@pytest.mark.parametrize("equation, x_shape, w_shape", [
    ("abc,cde->abde", (2, 3, 4), (4, 2, 5)),
    ("abcd,cde->abe", (2, 3, 2, 5), (2, 5, 4))])
def test_einsums_become_exact_matmuls(equation, x_shape, w_shape):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=w_shape).astype(np.float32)
    out_rank = len(equation.split("->")[1])
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation,
                          name="projection")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                            x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [None] * out_rank)],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])
    x = rng.normal(size=x_shape).astype(np.float32)
    (expected,) = _run(model, x=x)
    _einsums_to_matmuls(model.graph)
    assert [n.op_type for n in model.graph.node].count("MatMul") == 1
    assert "Einsum" not in [n.op_type for n in model.graph.node]
    (got,) = _run(model, x=x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def weight_readers(rng):
    """ids -> table rows (Gather), x @ W (MatMul), x @ table^T (the tied
    output projection, through a Transpose), and x + B (an Add: B is not a
    weight that `store_weights` may store)."""
    table = rng.normal(size=(96, 64)).astype(np.float32)
    # Channels of different ranges: one scale per channel matters.
    weight = (rng.normal(size=(64, 80)) * np.linspace(0.01, 3.0, 80)
              ).astype(np.float32)
    bias = rng.normal(size=(64, 64)).astype(np.float32)
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"]),
         helper.make_node("MatMul", ["x", "weight"], ["hidden"]),
         helper.make_node("Transpose", ["table"], ["table_t"]),
         helper.make_node("MatMul", ["x", "table_t"], ["logits"]),
         helper.make_node("Add", ["x", "bias"], ["shifted"])],
        "g", [value("ids", TensorProto.INT64, [5]),
              value("x", TensorProto.FLOAT, [64, 64])],
        [value(name, TensorProto.FLOAT, [None, None])
         for name in ("rows", "hidden", "logits", "shifted")],
        [numpy_helper.from_array(table, "table"),
         numpy_helper.from_array(weight, "weight"),
         numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])
    return model, {"table": table, "weight": weight, "bias": bias}


def _int8_reference(weight, axis):
    """Symmetric int8 with one scale per channel, in numpy."""
    scale = np.abs(weight).max(axis=1 - axis, keepdims=True) / 127
    return np.round(weight / scale).clip(-127, 127) * scale, scale


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_store_weights_against_numpy(dtype, tmp_path):
    rng = np.random.default_rng(0)
    model, weights = weight_readers(rng)
    ids = np.array([0, 5, 95, 5, 17])
    x = rng.normal(size=(64, 64)).astype(np.float32)
    float32_bytes = model.ByteSize()
    assert store_weights(model.graph, dtype) == 2  # Not the Add's bias.
    onnx.checker.check_model(model)
    stored = {t.name: t.data_type for t in model.graph.initializer}
    assert stored["bias"] == TensorProto.FLOAT
    kind = TensorProto.INT8 if dtype == "int8" else TensorProto.FLOAT16
    assert stored[f"table/{dtype}"] == stored[f"weight/{dtype}"] == kind
    assert "table" not in stored and "weight" not in stored
    # The two matrices in a quarter (int8, with their scales) or half of
    # their float32 bytes.
    matrices = weights["table"].nbytes + weights["weight"].nbytes
    saved = float32_bytes - model.ByteSize()
    assert saved > matrices * (0.7 if dtype == "int8" else 0.49)
    if dtype == "int8":
        (table, table_scale), (weight, weight_scale) = (
            _int8_reference(weights["table"], axis=0),
            _int8_reference(weights["weight"], axis=1))
        # Within half a step of its channel, and not float32.
        assert np.all(np.abs(table - weights["table"])
                      <= table_scale / 2 + 1e-7)
        assert np.all(np.abs(weight - weights["weight"])
                      <= weight_scale / 2 + 1e-7)
    else:
        table, weight = (weights[name].astype(np.float16).astype(np.float32)
                         for name in ("table", "weight"))
    rows, hidden, logits, shifted = _run(model, ids=ids, x=x)
    np.testing.assert_array_equal(rows, table[ids])
    np.testing.assert_allclose(hidden, x @ weight, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, x @ table.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(shifted, x + weights["bias"])
    assert not np.array_equal(rows, weights["table"][ids])
    # onnxruntime rebuilds the float32 weights once, when it loads the
    # graph: its optimized graph has none of the rebuilding nodes left.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options,
                         providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    assert sorted(n.op_type for n in optimized.graph.node) == [
        "Add", "Gather", "MatMul", "MatMul"]


def test_store_weights_names_a_bad_dtype():
    model, _ = weight_readers(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"`dtype` must be one of .*"
                       r"Received: dtype='int4'"):
        store_weights(model.graph, "int4")


def test_float16_search_keeps_float32_matmuls():
    model = carried_weight_loop()
    stored = quantize_search(model, "float16")
    assert matmul_counts(stored) == matmul_counts(model)
    x = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)
    (expected,) = _run(model, x=x)
    (got,) = _run(stored, x=x)
    np.testing.assert_allclose(got, expected, rtol=1e-2, atol=1e-3)


# -- int8 export of the tiny trained run (slow) -------------------------------

@pytest.fixture(scope="module")
def int8_export(translator, trained_run, tmp_path_factory):
    from keras_transformer.export import verification_texts
    from keras_transformer.export.onnx import export_onnx

    out_dir = tmp_path_factory.mktemp("onnx_int8")
    texts = verification_texts(trained_run)
    report = export_onnx(translator, out_dir, texts=texts, quantize="int8")
    return out_dir, report, texts


@pytest.mark.slow
def test_int8_export_quantizes_the_loop_body_and_agrees(int8_export):
    out_dir, report, texts = int8_export
    assert report["quantization"] == "int8"
    with open(os.path.join(out_dir, "onnx_config.json")) as file:
        assert json.load(file)["quantization"] == "int8"
    verification = report["verification"]
    print("int8 agreement:", verification["agreement"],
          "float32 bytes:", report["float32_bytes"],
          "files:", report["files"])
    assert verification["quantization"] == "int8"
    assert verification["min_agreement"] == INT8_MIN_AGREEMENT
    assert verification["sentences"] == len(texts) + 5  # + bad inputs
    assert len(verification["agreement"]) == 4  # token and text graphs
    assert min(verification["agreement"].values()) >= INT8_MIN_AGREEMENT
    for mode in ("beam", "greedy"):
        counts = report["matmuls"][mode]
        ops = report["op_types"][mode]
        # The decoder step's weight products are int8 (8 per layer: 4
        # self-attention, 2 cross-attention queries and outputs, 2 feed-
        # forward); the greedy search's attention products are inside the
        # fused MultiHeadAttention nodes (export/onnx/fuse.py); the
        # output projection stays float32, and so does the main graph
        # (export/onnx/quantize.py's docstring).
        layers = counts["loop_body"]["int8"] // 8
        assert counts["loop_body"]["int8"] == 8 * layers > 0
        # (The beam search keeps its 4 attention products per layer.)
        fused = ops.get("MultiHeadAttention", 0)
        assert fused == (2 * layers if mode == "greedy" else 0)
        assert counts["loop_body"]["float"] == (
            1 if mode == "greedy" else 4 * layers + 1)
        assert counts["main"]["int8"] == 0
        assert ops["DynamicQuantizeLinear"] > 0 and "Einsum" not in ops
        # Every other weight matrix is stored as int8 too.
        graph = f"{mode}.onnx"
        assert report["files"][graph] < report["float32_bytes"][mode] * 0.4


@pytest.mark.slow
def test_float16_export_halves_the_file_and_agrees(translator, trained_run,
                                                   tmp_path):
    from keras_transformer.contract import QUANTIZED_MIN_AGREEMENT
    from keras_transformer.export import verification_texts
    from keras_transformer.export.onnx import export_onnx

    report = export_onnx(translator, tmp_path, modes=("greedy",),
                         texts=verification_texts(trained_run),
                         quantize="float16")
    with open(tmp_path / "onnx_config.json") as file:
        assert json.load(file)["quantization"] == "float16"
    verification = report["verification"]
    assert verification["min_agreement"] == QUANTIZED_MIN_AGREEMENT[
        "float16"] == 0.95
    assert min(verification["agreement"].values()) >= 0.95
    # Every MatMul computes in float32; the weights are stored in float16.
    assert report["matmuls"]["greedy"]["loop_body"]["int8"] == 0
    assert report["op_types"]["greedy"]["Cast"] > 0
    assert (report["files"]["greedy.onnx"]
            < report["float32_bytes"]["greedy"] * 0.6)


def test_agreement_below_the_bar_is_an_error():
    config = {"quantization": "int8", "graphs": {"beam": "beam.onnx"},
              "text_graphs": {"beam": "beam_text.onnx"}}
    part = {"identical": {}, "max_score_difference": {}, "parity": {}}
    report = {**part, "mismatches": [], "text": {
        key: {} for key in part}}
    reference = "the Translator's translate"
    ids = ([[5, 3]] * 19 + [[6, 3]], np.zeros(20))
    texts = (["a"] * 3 + ["b"] * 2 + ["a"] * 15, np.zeros(20))
    checker = _Checker(report["mismatches"], 0.9, None, check=True)
    checker.compare(report, "identical", "beam", "beam.onnx", reference,
                    ids, ([[5, 3]] * 20, np.zeros(20)), None)
    checker.compare(report["text"], "identical", "beam", "beam_text.onnx",
                    reference, texts, (["a"] * 20, np.zeros(20)), None)
    assert _agreement(report, config) == {
        "beam.onnx": 0.95, "beam_text.onnx": 0.9}
    assert [m["row"] for m in report["mismatches"]] == [19, 3, 4]
    strict = _Checker([], 0.95, None, check=True)
    with pytest.raises(ValueError, match=r"ONNX graph 'beam_text.onnx' .*\("
                       r"90.0% identical, fewer than min_agreement=0.95.*"
                       r"row 3.*Received: min_agreement=0.95"):
        strict.compare(report["text"], "identical", "beam",
                       "beam_text.onnx", reference, texts,
                       (["a"] * 20, np.zeros(20)), None)


@pytest.mark.slow
def test_verification_rejects_a_bad_min_agreement(int8_export, translator):
    from keras_transformer.export.onnx.verify import verify_onnx

    out_dir, _, texts = int8_export
    for value in (0.0, 1.5):
        with pytest.raises(ValueError, match="`min_agreement` must be a "
                           "share in"):
            verify_onnx(out_dir, translator, texts=texts[:4],
                        min_agreement=value)
    with pytest.raises(TypeError, match="`min_agreement` must be a float"):
        verify_onnx(out_dir, translator, texts=texts[:4],
                    min_agreement="high")


@pytest.mark.slow
def test_quantization_benchmark_compares_with_float32(onnx_export,
                                                      int8_export,
                                                      corpus_files, capsys):
    from keras_transformer.benchmarks import quantization

    int8_dir = str(int8_export[0])
    assert quantization.main([str(onnx_export.onnx_dir), int8_dir,
                              "--test", str(corpus_files["test"]),
                              "--rounds", "1"]) == 0
    rows = [json.loads(line) for line in
            capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(row["quantization"], row["mode"]) for row in rows] == [
        ("float32", "greedy"), ("float32", "beam"),
        ("int8", "greedy"), ("int8", "beam")]
    float32, int8 = rows[0], rows[2]
    assert float32["identical_percent"] == 100.0
    assert float32["sentences"] == int8["sentences"] == 100
    assert int8["identical_percent"] >= 80
    assert int8["megabytes"] < float32["megabytes"] * 0.4
    assert abs(int8["bleu"] - float32["bleu"]) < 10
    assert all(row["batch1_ms"] > 0 and row["batch32_ms"] > 0
               for row in rows)
    with pytest.raises(SystemExit):  # The float32 reference comes first.
        quantization.main([int8_dir, "--test", str(corpus_files["test"])])
