"""int8 weights for the decoder step of an exported search graph.

`quantize_search(model, "int8")` applies onnxruntime's dynamic quantization
(`onnxruntime.quantization.quantize_dynamic`) to the MatMuls of the Loop
body, the decoder step that runs once per output token: their weights
become int8 (signed, one scale per output column), and each activation is
quantized to uint8 on the fly. uint8 x int8 is the product that AVX-512
VNNI (and AVX2) multiply natively, and that onnxruntime fuses into
`MatMulIntegerToFloat`. What stays float32, and why:

- the output projection (the logits MatMul, the tied embedding
  transposed): it decides the argmax, and the misses of int8 are near-ties
  there;
- the main graph (the encoder and the cross-attention keys and values):
  it runs once per sentence, so int8 there saves little time, but its
  errors reach every decoder step;
- the embedding tables (Gather): in int8 (one scale per table) they made
  the "small" model 3.2x smaller instead of 1.6x, but flipped 2-4% more
  of its translations.

Measured on the "small" model trained on the .po corpus of
`benchmarks/po_corpus.py` (205 held-out sentences, ids equal to float32,
greedy / beam 4), with the file size against float32:

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

QUANTIZATIONS = ("int8",)
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
    """Returns a copy of a search graph with int8 MatMul weights.

    Args:
        model: an `onnx.ModelProto` from `export.onnx.convert_search`.
        quantize: str, the quantization; only "int8" for now.

    Returns:
        A new `onnx.ModelProto` with the same inputs and outputs; every
        MatMul with a weight operand in the Loop body, but the output
        projection, is a `MatMulInteger` after a `DynamicQuantizeLinear`.
        The main graph keeps float32 (the module docstring says why).

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
    # onnxruntime's pre-processing (shape inference, graph fusions) has no
    # effect on these graphs: mark it done, so the quantizer does not log
    # a warning to run it.
    onnx.helper.set_model_props(
        prepared, {"onnx.quant.pre_process": "onnxruntime.quant"})
    with tempfile.TemporaryDirectory(prefix="kt-quantize-") as tmp:
        path = os.path.join(tmp, "quantized.onnx")
        quantize_dynamic(
            prepared, path, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=list(_QUANTIZED_OPS),
            nodes_to_exclude=_float_matmuls(prepared.graph),
            extra_options={"EnableSubgraph": True,
                           "MatMulConstBOnly": True})
        quantized = onnx.load(path)
    # The quantizer drops the metadata and renames nothing else.
    quantized.producer_name = model.producer_name
    quantized.graph.name = model.graph.name
    del quantized.metadata_props[:]
    compact(quantized.graph)
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
