"""Convert a Translator's search to one ONNX graph with tf2onnx.

One graph runs the whole search: the search's `tf.while_loop` becomes one
ONNX `Loop` (the encoder once, then the decoder step with its cache), and
the graph holds every weight once. After tf2onnx, `graph.compact` folds
the shapes of constants and keeps one copy of equal constants,
`lean.lean_search` trims the decoder step, `fuse.fuse_search` replaces
node groups by onnxruntime's fused operators (or, for engines without
them, only by standard ones: `operators`), and `graph.name_dims` names the
dims `batch`, `source_length` and `target_length`.
"""

import collections

import numpy as np
import onnx
import tensorflow as tf

from keras_transformer.checks import check_choice
from keras_transformer.contract import ONNX_OPERATORS, SEARCH_MODES
from keras_transformer.export.onnx.fuse import CONTRIB_DOMAIN, fuse_search
from keras_transformer.export.onnx.graph import compact, graphs, name_dims
from keras_transformer.export.onnx.lean import lean_search

# tf2onnx 1.17 writes opsets up to 18.
MIN_OPSET, MAX_OPSET = 17, 18

# The Translator's tf.function each search mode converts.
SEARCH_FUNCTIONS = {"beam": "translate_tokens",
                    "greedy": "translate_tokens_greedy"}


def _optimizers():
    """The tf2onnx graph passes run after conversion, in order.

    tf2onnx's default list has a dozen passes and re-runs all of them, on
    a deep copy of the graph, until none changes it: on a beam search that
    takes ~10x the conversion itself (45 s instead of 5 s for a 2-layer
    model). These four remove what the Keras trace leaves behind (Identity
    chains, constant subgraphs, redundant reshapes, duplicated nodes);
    onnxruntime's own graph optimizer does the rest when a session starts.
    """
    from tf2onnx import optimizer

    return collections.OrderedDict([
        ("fold_constants", optimizer.ConstFoldOptimizer),
        ("remove_identity", optimizer.IdentityOptimizer),
        ("reshape_optimizer", optimizer.ReshapeOptimizer),
        ("merge_duplication", optimizer.MergeDuplicatedNodesOptimizer),
    ])


def function_to_onnx(function, opset: int, doc: str,
                     graph_name: str = "keras_transformer"
                     ) -> onnx.ModelProto:
    """tf2onnx's conversion of a `tf.function` with an input signature.

    The steps of `tf2onnx.convert.from_function` (freeze the traced
    function, convert the graph, optimize with `_optimizers`); inputs and
    outputs keep the names of the signature and of the returned dict.
    """
    from tf2onnx import optimizer, tf_loader, tfonnx
    from tf2onnx.convert import tensor_names_from_structed

    concrete = function.get_concrete_function()
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    renames = tensor_names_from_structed(concrete, inputs, outputs)
    with tf.device("/cpu:0"):
        graph_def = tf_loader.from_function(concrete, inputs, outputs)
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(graph_def, name="")
            graph = tfonnx.process_tf_graph(
                tf_graph, opset=opset, input_names=inputs,
                output_names=outputs, tensors_to_rename=renames,
                custom_op_handlers={"Erfc": (_erfc, [])})
    graph = optimizer.optimize_graph(graph, catch_errors=False,
                                     optimizers=_optimizers())
    return graph.make_model(doc, graph_name=graph_name)


def convert_search(translator, mode: str = "beam",
                   opset: int = MIN_OPSET,
                   operators: str = "onnxruntime") -> onnx.ModelProto:
    """Converts one search of `translator` to an ONNX model with tf2onnx.

    The steps of `tf2onnx.convert.from_function` (freeze the traced
    function, convert the graph, optimize), with the passes of
    `_optimizers`, then `compact`, the leaner decoder step of
    `lean.lean_search` and the fused nodes of `fuse.fuse_search`.

    Args:
        translator: a `keras_transformer.Translator`.
        mode: "beam" or "greedy".
        opset: int, the ONNX opset, 17 or 18. Defaults to 17.
        operators: "onnxruntime" (the default: onnxruntime's fused
            `com.microsoft` attention in the greedy search's decoder step,
            which only onnxruntime runs; the beam search stays standard)
            or "standard" (standard ONNX operators only, for
            onnxruntime-web and other engines).

    Returns:
        An `onnx.ModelProto` with input `source_ids` int32 [batch,
        source_length] and outputs `target_ids` int32 [batch,
        target_length], `score` float32 [batch].
    """
    if mode not in SEARCH_MODES:
        raise ValueError(
            f"`mode` must be one of {sorted(SEARCH_MODES)}. "
            f"Received: mode={mode!r}")
    check_choice("operators", operators, ONNX_OPERATORS)
    function = getattr(translator, SEARCH_FUNCTIONS[mode])
    model = function_to_onnx(function, opset,
                             f"keras-transformer {mode} search",
                             f"{mode}_search")
    compact(model.graph)
    lean_search(model)
    # The beam graph keeps standard operators: in two harness runs its
    # fused form was 1.16-1.30x slower at batch 1 (benchmarks/RESULTS.md,
    # "Two runs of 2026-12-08").
    fuse_search(model, contrib=operators == "onnxruntime" and mode == "greedy")
    name_dims(model.graph)
    # tf2onnx leaves an op it cannot convert in the graph, under its
    # TensorFlow name.
    unknown = sorted({node.op_type for graph, _ in graphs(model.graph)
                      for node in graph.node
                      if node.domain != CONTRIB_DOMAIN
                      and not onnx.defs.has(node.op_type, node.domain)})
    if unknown:
        raise ValueError(
            f"tf2onnx cannot convert the TensorFlow ops {unknown} of the "
            f"{mode} search to ONNX opset {opset}. Received: "
            f"translator with model {translator.model.name!r}")
    onnx.checker.check_model(model)
    return model


def _erfc(ctx, node, name, args):
    """TF Erfc as 1 - Erf (ONNX has no Erfc); exact GELU uses it."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"),
                         np.array(1, dtype))
    node.type = "Erf"
    complement = ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(f"{name}_erfc"))
    ctx.replace_inputs(complement, [one.output[0], node.output[0]])
    return complement
