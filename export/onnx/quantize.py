"""Smaller weights for an exported search graph: int8 and float16.

`quantize_search(model, "int8")` applies onnxruntime's dynamic
quantization (`onnxruntime.quantization.quantize_dynamic`) to the MatMuls
of the Loop body, the decoder step that runs once per output token: their
weights become int8 (signed, one scale per output column), and each
activation is quantized to uint8 on the fly. uint8 x int8 is the product
that AVX-512 VNNI (and AVX2) multiply natively, and that onnxruntime fuses
into `MatMulIntegerToFloat`. What computes in float32, and why:

- the output projection (the logits MatMul, the tied embedding
  transposed): it decides the argmax, and the misses of int8 are near-ties
  there;
- the main graph (the encoder and the cross-attention keys and values):
  it runs once per sentence, so int8 there saves little time, but its
  errors reach every decoder step;
- the embedding tables (Gather).

Those weights are still *stored* as int8 (`store_weights`: symmetric, one
scale per row of a table or output column of a matrix, rebuilt in float32
by constant nodes that onnxruntime folds when it loads the graph), so the
file is about 3.8x smaller than float32 instead of 1.3x.
`quantize_search(model, "float16")` only stores the weight matrices as
float16 (rebuilt the same way): 2x smaller, computed in float32.

The frontier, on the `small` English-German model of the 30-minute
recipe (benchmarks/RESULTS.md, "int8 ONNX"; 2,120 test sentences of the
.po corpus, translations identical to float32 greedy / beam, BLEU greedy
/ beam, file size against float32's 38.9 MB):

    float32                                 100 / 100       27.33 / 28.83  1
    float16 storage ("float16")             99.8 / 99.9     27.36 / 28.85  0.51
    int8 step only (the earlier "int8")     92.8 / 93.6     27.15 / 28.79  0.79
    int8 storage only, float32 compute      92.1 / 93.6     27.28 / 28.81  0.26
    ... of the tables alone                 95.1 / 95.1     27.58 / 28.86  0.69
    ... of the other matrices alone         93.7 / 94.4     27.38 / 28.83  0.58
    float16 tables, int8 matrices           93.8 / 94.4     27.24 / 28.85  0.37
    int8 step + int8 storage ("int8")       91.4 / 92.5     27.35 / 28.71  0.27

Rounding any group of this model's weights to int8, per channel, changes
5-8% of its translations (near-ties between two continuations; BLEU moves
by at most 0.3 either way), so no int8 point reaches 97% identical here;
float16 does, at half the size. Time against float32 (onnxruntime, 5
interleaved rounds, quiet machine): "int8" 0.83x greedy / 0.88x beam at
batch 1 and 0.92x / 0.86x at batch 32; "float16" runs as float32 does
(0.92-0.97x: its weights are float32 again once loaded).

Earlier measurements of the int8 step alone (before int8 storage), on a
"small" model of a smaller .po corpus (205 held-out sentences, ids equal
to float32, greedy / beam 4), with the file size against float32:

    all weight MatMuls int8        92.2% / 96.1%   0.58
    ... but the output projection  94.6% / 96.1%   0.53
    ... and the cross-attention K/V 95.1% / 97.1%  0.57
    decoder step only (this one)   96.1% / 97.1%   0.77

On the whole test split (579 sentences, batched by length) this one gave
94.0% / 96.4% equal translations (all MatMuls int8: 90.3% greedy), and
corpus BLEU 20.39 / 30.55 against float32's 20.02 / 30.57: the int8
activation scales are shared by a batch, so agreement moves with it.

(`reduce_range`, per-tensor scales or uint8 weights each lowered greedy
agreement by 1-4 points.) The time against float32 (onnxruntime, medians
of 4 interleaved runs on a loaded 2-core machine, so rough): greedy 0.75x
(batch 1) and 0.79x (batch 32), beam 0.52x (batch 1) but 1.28x (batch
32: not explained yet; the float32 output projection over 4 x 32 rows
is the suspect); all
weight MatMuls int8 gave 0.41x, 0.93x, 0.48x and 0.73x.

`quantize_dynamic` walks Loop bodies (`EnableSubgraph`), but on a tf2onnx
search graph it quantizes none of the decoder's MatMuls: TensorFlow's
`while_loop` passes every weight the body reads as a loop-carried value,
and the body reshapes it at each step, so no MatMul there has a constant
right-hand side. `export.onnx.lean` (applied by `convert_search` to every
graph) makes them constant: `hoist_loop_invariants` reads the weights
from the outer scope, `fold_weight_views` reshapes them once at export.
The tied embedding's Transpose is left alone: onnxruntime folds it when
it loads the graph, and the file holds the table once. One more rewrite
here, exact in float32:

- `_einsums_to_matmuls`: the encoder's projection Einsums
  ("abc,cde->abde", "abcd,cde->abe") become Reshape + MatMul (float32:
  the figures above were measured with them). Agreement moves by a few
  sentences with any change of float32 rounding before an int8 step (the
  dynamic activation scales): kept as Einsums, the same configuration
  measured 94.2% greedy.

References:
    onnxruntime, "Quantize ONNX models",
    https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html
"""

import collections
import os
import tempfile

import numpy as np
import onnx
from onnx import helper, numpy_helper

from keras_transformer.export.onnx.graph import (
    compact,
    drop_unused_initializers,
    graphs,
    name_dims,
)
from keras_transformer.export.onnx.lean import (
    fold_weight_views,
    hoist_loop_invariants,
)

QUANTIZATIONS = ("int8", "float16")
# Op types of a quantized MatMul, before and after onnxruntime's fusions.
QUANTIZED_MATMULS = ("MatMulInteger", "DynamicQuantizeMatMul",
                     "MatMulIntegerToFloat")
_QUANTIZED_OPS = ("MatMul",)
_EINSUMS = {"abc,cde->abde", "abcd,cde->abe"}


def check_quantize(quantize) -> str | None:
    """Returns `quantize` if it is None or one of `QUANTIZATIONS`."""
    if quantize is not None and (not isinstance(quantize, str)
                                 or quantize not in QUANTIZATIONS):
        raise ValueError(
            f"`quantize` must be None (float32) or one of {QUANTIZATIONS}. "
            f"Received: quantize={quantize!r}")
    return quantize


def quantize_search(model: onnx.ModelProto,
                    quantize: str = "int8") -> onnx.ModelProto:
    """Returns a copy of a search graph with smaller weights.

    Args:
        model: an `onnx.ModelProto` from `export.onnx.convert_search`.
        quantize: "int8" or "float16" (the module docstring compares them).

    Returns:
        A new `onnx.ModelProto` with the same inputs and outputs.
        "int8": every MatMul with a weight operand in the Loop body, but
        the output projection, is a `MatMulInteger` after a
        `DynamicQuantizeLinear`; every other weight matrix is stored as
        int8 with per-channel scales (`store_weights`) and computes in
        float32. "float16": every weight matrix is stored as float16 and
        computes in float32.

    Raises:
        ValueError: `quantize` is not one of `QUANTIZATIONS`.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if check_quantize(quantize) is None:
        raise ValueError(
            f"`quantize` must be one of {QUANTIZATIONS}. "
            f"Received: quantize={quantize!r}")
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    # `convert_search` made the step's weights constants of the Loop body
    # (`export.onnx.lean`); these are no-ops on its graphs.
    hoist_loop_invariants(prepared.graph)
    fold_weight_views(prepared.graph)
    _einsums_to_matmuls(prepared.graph)
    drop_unused_initializers(prepared.graph)
    if quantize == "float16":
        quantized = prepared
    else:
        # onnxruntime's pre-processing (shape inference, graph fusions) has
        # no effect on these graphs: mark it done, so the quantizer does
        # not log a warning to run it.
        onnx.helper.set_model_props(
            prepared, {"onnx.quant.pre_process": "onnxruntime.quant"})
        with tempfile.TemporaryDirectory(prefix="kt-quantize-") as tmp:
            path = os.path.join(tmp, "quantized.onnx")
            quantize_dynamic(
                prepared, path, weight_type=QuantType.QInt8,
                per_channel=True, op_types_to_quantize=list(_QUANTIZED_OPS),
                nodes_to_exclude=_float_matmuls(prepared.graph),
                extra_options={"EnableSubgraph": True,
                               "MatMulConstBOnly": True})
            quantized = onnx.load(path)
        # The quantizer drops the metadata and renames nothing else.
        quantized.producer_name = model.producer_name
        quantized.graph.name = model.graph.name
        del quantized.metadata_props[:]
    compact(quantized.graph)
    store_weights(quantized.graph, quantize)
    drop_unused_initializers(quantized.graph)
    name_dims(quantized.graph)
    onnx.checker.check_model(quantized)
    return quantized


def matmul_counts(model: onnx.ModelProto) -> dict:
    """Float and quantized MatMuls, in the main graph and in subgraphs.

    Returns:
        {"main": {"float": n, "int8": n}, "loop_body": {...}}: MatMul
        nodes against `QUANTIZED_MATMULS` nodes.
    """
    counts = {"main": collections.Counter(),
              "loop_body": collections.Counter()}
    for graph, parents in graphs(model.graph):
        where = counts["loop_body" if parents else "main"]
        for node in graph.node:
            if node.op_type == "MatMul":
                where["float"] += 1
            elif node.op_type in QUANTIZED_MATMULS:
                where["int8"] += 1
    return {key: {"float": value["float"], "int8": value["int8"]}
            for key, value in counts.items()}


def _float_matmuls(main):
    """Names of the MatMuls that keep float32 (see the module docstring)."""
    names = [node.name for node in main.node if node.op_type == "MatMul"]
    for graph, parents in graphs(main):
        matmuls = [node.name for node in graph.node
                   if node.op_type == "MatMul"]
        if parents and matmuls:
            # The output projection reads every decoder layer's output,
            # so in a topologically sorted body it is the last MatMul.
            names.append(matmuls[-1])
    return names


# -- a rewrite before quantization (exact in float32) ----------------------

def _einsums_to_matmuls(main):
    """The encoder's projection Einsums as Reshape + MatMul + Reshape."""
    weights = {t.name: t for t in main.initializer}
    nodes = []
    for node in main.node:
        equation = next((a.s.decode() for a in node.attribute
                         if a.name == "equation"), "")
        if (node.op_type != "Einsum" or equation not in _EINSUMS
                or node.input[1] not in weights):
            nodes.append(node)
            continue
        x, name, out = node.input[0], node.input[1], node.output[0]
        kernel = numpy_helper.to_array(weights[name])
        c, d, e = kernel.shape
        flat = f"{name}/matmul_kernel"
        main.initializer.append(numpy_helper.from_array(
            kernel.reshape(c, d * e) if equation == "abc,cde->abde"
            else kernel.reshape(c * d, e), flat))
        shapes = {"in": f"{out}/in_shape", "out": f"{out}/out_shape"}
        if equation == "abc,cde->abde":
            # (B, T, D) @ (D, H*K) -> (B, T, H, K)
            main.initializer.append(numpy_helper.from_array(
                np.array([0, 0, d, e], np.int64), shapes["out"]))
            nodes += [helper.make_node("MatMul", [x, flat], [f"{out}/flat"],
                                       name=f"{node.name}/matmul"),
                      helper.make_node("Reshape", [f"{out}/flat",
                                                   shapes["out"]], [out],
                                       name=f"{node.name}/reshape")]
        else:
            # (B, T, H, K) -> (B, T, H*K) @ (H*K, D) -> (B, T, D)
            main.initializer.append(numpy_helper.from_array(
                np.array([0, 0, c * d], np.int64), shapes["in"]))
            nodes += [helper.make_node("Reshape", [x, shapes["in"]],
                                       [f"{out}/flat"],
                                       name=f"{node.name}/reshape"),
                      helper.make_node("MatMul", [f"{out}/flat", flat],
                                       [out], name=f"{node.name}/matmul")]
    del main.node[:]
    main.node.extend(nodes)


# -- weights stored in fewer bits, computed in float32 ---------------------

# Op types that may read a stored weight. A table read by Gather (and the
# tied output projection, read through a Transpose) gets one int8 scale
# per row, i.e. per token; a MatMul's right-hand side one per output column.
_ROW_READERS = ("Gather", "Transpose")
_COLUMN_READERS = ("MatMul",)
_MIN_STORED_ELEMENTS = 4096
STORAGE_TYPES = ("int8", "float16")


def store_weights(main, dtype: str) -> int:
    """Stores the large float32 weights of `main` as int8 or float16.

    Each float32 initializer of the main graph that is a matrix of at
    least `_MIN_STORED_ELEMENTS` values and is read only as a MatMul's
    right operand or by Gather or Transpose nodes is replaced by a smaller
    constant and the nodes that rebuild it under its own name, so every
    reader is unchanged and computes in float32:

    - "int8": symmetric int8 values with one float32 scale per channel
      (per row of a table, per output column of a MatMul weight),
      `Cast` to float32 then `Mul` by the scales: about 4x smaller, each
      value within half a step (max|channel| / 254) of the float32 one;
    - "float16": the values in float16 and a `Cast` to float32: 2x
      smaller, float16's rounding.

    Both are made of constants only, so onnxruntime folds them once when
    it loads the graph (its constant folding; a `DequantizeLinear` is not
    folded by default, which is why it is not used here): the session
    holds the float32 weights and runs as fast as the float32 graph.

    Args:
        main: the main `onnx.GraphProto` (its initializers are rewritten).
        dtype: "int8" or "float16".

    Returns:
        The number of initializers stored in `dtype`.
    """
    if dtype not in STORAGE_TYPES:
        raise ValueError(f"`dtype` must be one of {STORAGE_TYPES}. "
                         f"Received: dtype={dtype!r}")
    readers = collections.defaultdict(list)
    for graph, _ in graphs(main):
        for node in graph.node:
            for index, name in enumerate(node.input):
                readers[name].append((node.op_type, index))
    stored, tensors, nodes = [], [], []
    for tensor in main.initializer:
        uses = readers.get(tensor.name, [])
        if (tensor.data_type != onnx.TensorProto.FLOAT
                or len(tensor.dims) != 2
                or np.prod(tensor.dims) < _MIN_STORED_ELEMENTS or not uses):
            continue
        if all(op in _ROW_READERS and index == 0 for op, index in uses):
            axis = 0
        elif all(op in _COLUMN_READERS and index == 1 for op, index in uses):
            axis = 1
        else:
            continue
        name, weight = tensor.name, numpy_helper.to_array(tensor)
        stored.append(tensor)
        cast = helper.make_node("Cast", [f"{name}/{dtype}"], [name],
                                name=f"{name}/cast", to=onnx.TensorProto.FLOAT)
        if dtype == "float16":
            tensors.append(numpy_helper.from_array(
                weight.astype(np.float16), f"{name}/float16"))
            nodes.append(cast)
            continue
        scale = np.max(np.abs(weight), axis=1 - axis, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        values = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        cast.output[0] = f"{name}/float"
        tensors += [numpy_helper.from_array(values, f"{name}/int8"),
                    numpy_helper.from_array(scale, f"{name}/scale")]
        nodes += [cast, helper.make_node(
            "Mul", [f"{name}/float", f"{name}/scale"], [name],
            name=f"{name}/dequantize")]
    for tensor in stored:
        main.initializer.remove(tensor)
    main.initializer.extend(tensors)
    # Before every other node: the graph stays topologically sorted.
    existing = list(main.node)
    del main.node[:]
    main.node.extend(nodes + existing)
    return len(stored)
