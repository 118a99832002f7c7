"""Write a Translator's whole search as ONNX graphs.

DESIGN.md, "Export contracts": one graph runs the whole search, from
`source_ids` int32 [B, S] to `target_ids` int32 [B, L] and `score` float32
[B] (the encoder once, then the decoder loop with its cache), and
onnxruntime gives the same token ids as TensorFlow. `export_onnx` writes,
into one directory:

- `beam.onnx`: `Translator.translate_tokens` (beam search with the
  translator's beam size and length penalty);
- `greedy.onnx`: `Translator.translate_tokens_greedy`;
- `source_vocab.txt`, `target_vocab.txt`: the vocabularies;
- `onnx_config.json`: tokenizer options, reserved ids, `max_length`, beam
  size, length penalty, extra length, opset and the graph files;

then checks them with `export.onnx_runtime.verify_onnx`. Each graph is the
search's `tf.while_loop` as one ONNX `Loop` and holds every weight once:
after tf2onnx, `_compact` folds the shapes of constants and keeps one copy
of equal constants. `export.onnx_runtime.OnnxTranslator` translates text
with the directory.
"""

import collections
import hashlib
import json
import logging
import os
import time

import numpy as np
import onnx
import tensorflow as tf
from onnx import numpy_helper

from keras_transformer.export.onnx_runtime import (
    CONFIG_FILE,
    FORMAT,
    SEARCH_FUNCTIONS,
    check_translator,
    verify_onnx,
)
from keras_transformer.text import END_ID, PAD_ID, START_ID, UNK_ID

logger = logging.getLogger(__name__)

GRAPH_FILES = {"beam": "beam.onnx", "greedy": "greedy.onnx"}
SOURCE_VOCAB = "source_vocab.txt"
TARGET_VOCAB = "target_vocab.txt"
MIN_OPSET, MAX_OPSET = 17, 18  # tf2onnx 1.17 writes opsets up to 18.


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


def convert_search(translator, mode: str = "beam",
                   opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Converts one search of `translator` to an ONNX model with tf2onnx.

    The steps of `tf2onnx.convert.from_function` (freeze the traced
    function, convert the graph, optimize), with the passes of
    `_optimizers`, then `_compact`.

    Args:
        translator: a `keras_transformer.Translator`.
        mode: "beam" or "greedy".
        opset: int, the ONNX opset, 17 or 18. Defaults to 17.

    Returns:
        An `onnx.ModelProto` with input `source_ids` int32 [B, S] and
        outputs `target_ids` int32 [B, L], `score` float32 [B].
    """
    from tf2onnx import optimizer, tf_loader, tfonnx
    from tf2onnx.convert import tensor_names_from_structed

    if mode not in GRAPH_FILES:
        raise ValueError(
            f"`mode` must be one of {sorted(GRAPH_FILES)}. "
            f"Received: mode={mode!r}")
    function = getattr(translator, SEARCH_FUNCTIONS[mode])
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
    model = graph.make_model(f"keras-transformer {mode} search",
                             graph_name=f"{mode}_search")
    _compact(model.graph)
    # tf2onnx leaves an op it cannot convert in the graph, under its
    # TensorFlow name.
    unknown = sorted({node.op_type for graph, _ in _graphs(model.graph)
                      for node in graph.node
                      if not onnx.defs.has(node.op_type, node.domain)})
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


# -- graph clean-up -------------------------------------------------------

def _graphs(graph, parents=()):
    """Yields (graph, parents) for `graph` and every subgraph inside it."""
    yield graph, parents
    for node in graph.node:
        for attribute in node.attribute:
            subgraphs = list(attribute.graphs)
            if attribute.type == onnx.AttributeProto.GRAPH:
                subgraphs.append(attribute.g)
            for subgraph in subgraphs:
                yield from _graphs(subgraph, parents + (graph,))


def _fold_constant_shapes(main):
    """Replaces Shape(initializer) by a constant: the weight stays once."""
    shapes = {}
    for graph, _ in _graphs(main):
        for tensor in graph.initializer:
            shapes[tensor.name] = list(tensor.dims)
    for graph, _ in _graphs(main):
        for node in graph.node:
            if node.op_type != "Shape" or node.input[0] not in shapes:
                continue
            attributes = {a.name: a.i for a in node.attribute}
            shape = shapes[node.input[0]]
            value = np.array(shape, np.int64)[
                attributes.get("start", 0):attributes.get("end", len(shape))]
            node.op_type = "Constant"
            del node.input[:]
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute(
                "value", numpy_helper.from_array(value)))


def _drop_unused_initializers(main):
    used = set()
    for graph, _ in _graphs(main):
        used.update(name for node in graph.node for name in node.input)
        used.update(output.name for output in graph.output)
    for graph, _ in _graphs(main):
        keep = [t for t in graph.initializer if t.name in used]
        if len(keep) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(keep)


def _deduplicate_initializers(main):
    """Keeps one copy of equal constants, in the main graph if shared."""
    outputs = {output.name for graph, _ in _graphs(main)
               for output in graph.output}
    groups = collections.defaultdict(list)
    for graph, parents in _graphs(main):
        for tensor in graph.initializer:
            if tensor.name in outputs:  # Its name must stay.
                continue
            value = numpy_helper.to_array(tensor)
            key = (value.dtype.str, value.shape,
                   hashlib.sha256(value.tobytes()).hexdigest())
            groups[key].append((len(parents), tensor.name, graph))
    renames = {}
    for copies in groups.values():
        if len(copies) < 2:
            continue
        copies.sort(key=lambda copy: copy[0])
        _, name, owner = copies[0]
        if owner is not main and any(g is not owner for _, _, g in copies):
            # Outer names are visible in every subgraph: hoist the copy.
            main.initializer.append(_pop_initializer(owner, name))
        for _, duplicate, graph in copies[1:]:
            renames[duplicate] = name
            _pop_initializer(graph, duplicate)
    for graph, _ in _graphs(main):
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renames:
                    node.input[i] = renames[name]


def _pop_initializer(graph, name):
    """Removes the initializer `name` from `graph` and returns a copy."""
    index = [tensor.name for tensor in graph.initializer].index(name)
    tensor = onnx.TensorProto()
    tensor.CopyFrom(graph.initializer[index])
    del graph.initializer[index]
    return tensor


def _compact(main):
    _fold_constant_shapes(main)
    _drop_unused_initializers(main)
    _deduplicate_initializers(main)


# -- export ---------------------------------------------------------------

def export_onnx(translator, out_dir: str | os.PathLike,
                opset: int = MIN_OPSET,
                modes: tuple[str, ...] = ("beam", "greedy"),
                texts: list[str] | None = None, source_ids=None,
                saved_model_dir: str | os.PathLike | None = None,
                verify: bool = True,
                score_tolerance: float = 1e-3) -> dict:
    """Writes the searches of `translator` as ONNX graphs and verifies them.

    Writes `GRAPH_FILES[mode]` for each of `modes`, the two vocabulary files
    and `CONFIG_FILE` into `out_dir` (created if missing; files of the same
    names are replaced). Then, unless `verify=False`, runs `verify_onnx`.

    Args:
        translator: a `keras_transformer.Translator`.
        out_dir: path of the output directory.
        opset: int, the ONNX opset, 17 or 18. Defaults to 17.
        modes: the searches to write, "beam" and/or "greedy".
        texts, source_ids, saved_model_dir, score_tolerance: as in
            `verify_onnx`.
        verify: bool, run `verify_onnx`. Defaults to True.

    Returns:
        A report dict: `out_dir`, `opset`, `files` (name -> bytes),
        `variables_bytes` (the model's weights), `weights_bytes` (mode ->
        bytes of constants in the graph), `nodes` and `op_types` (mode ->
        count by op type, subgraphs included), `conversion_seconds` (mode
        -> seconds) and `verification` (the `verify_onnx` report, or None).

    Raises:
        ValueError: an invalid argument, or the verification found a
            difference.

    Example:
    >>> report = export_onnx(translator, "export/onnx")
    >>> report["verification"]["identical"]
    {'beam': 64, 'greedy': 64}
    """
    check_translator(translator)
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
            MIN_OPSET <= opset <= MAX_OPSET):
        raise ValueError(
            f"`opset` must be an int from {MIN_OPSET} to {MAX_OPSET}. "
            f"Received: opset={opset!r}")
    if isinstance(modes, str) or not isinstance(modes, (tuple, list)) or (
            not modes or not all(isinstance(mode, str) and mode in GRAPH_FILES
                                 for mode in modes)
            or len(set(modes)) != len(modes)):
        raise ValueError(
            "`modes` must be a non-empty tuple of distinct names from "
            f"{sorted(GRAPH_FILES)}. Received: modes={modes!r}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    report = {"out_dir": out_dir, "opset": opset, "files": {},
              "variables_bytes": sum(
                  int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                  for v in translator.model.weights),
              "weights_bytes": {}, "nodes": {}, "op_types": {},
              "conversion_seconds": {}}
    for mode in modes:
        start = time.perf_counter()
        model = convert_search(translator, mode, opset)
        onnx.save(model, os.path.join(out_dir, GRAPH_FILES[mode]))
        report["conversion_seconds"][mode] = round(
            time.perf_counter() - start, 2)
        summary = graph_summary(model)
        for key in ("weights_bytes", "nodes", "op_types"):
            report[key][mode] = summary[key]
        logger.info("Wrote %s in %.1f s.", GRAPH_FILES[mode],
                    report["conversion_seconds"][mode])
    # The configuration last: a directory with one lists complete graphs.
    translator.source_tokenizer.save_vocabulary(
        os.path.join(out_dir, SOURCE_VOCAB))
    translator.target_tokenizer.save_vocabulary(
        os.path.join(out_dir, TARGET_VOCAB))
    with open(os.path.join(out_dir, CONFIG_FILE), "w",
              encoding="utf-8") as file:
        json.dump(_runtime_config(translator, opset, modes), file, indent=2,
                  sort_keys=True)
    for name in (*(GRAPH_FILES[mode] for mode in modes), SOURCE_VOCAB,
                 TARGET_VOCAB, CONFIG_FILE):
        report["files"][name] = os.path.getsize(os.path.join(out_dir, name))
    report["verification"] = verify_onnx(
        out_dir, translator, texts=texts, source_ids=source_ids,
        saved_model_dir=saved_model_dir,
        score_tolerance=score_tolerance) if verify else None
    return report


def _runtime_config(translator, opset, modes):
    """What `OnnxTranslator` needs besides the graphs and vocabularies."""
    return {
        "format": FORMAT, "version": 1, "opset": opset,
        "graphs": {mode: GRAPH_FILES[mode] for mode in modes},
        "inputs": {"source_ids": "int32 [batch, source_time]"},
        "outputs": {"target_ids": "int32 [batch, target_time]",
                    "score": "float32 [batch]"},
        "source_vocabulary": SOURCE_VOCAB,
        "target_vocabulary": TARGET_VOCAB,
        "source_tokenizer": translator.source_tokenizer.config,
        "target_tokenizer": translator.target_tokenizer.config,
        "pad_id": PAD_ID, "unk_id": UNK_ID, "start_id": START_ID,
        "end_id": END_ID, "max_length": int(translator.max_length),
        "search_settings": translator.settings.to_dict(),
        "max_source_tokens": int(translator.source_limit),
    }


def graph_summary(model: onnx.ModelProto | str | os.PathLike) -> dict:
    """Op types, node count, opset and constant bytes of an ONNX model.

    Args:
        model: an `onnx.ModelProto` or the path of a `.onnx` file.

    Returns:
        A dict: `opset` (of the default domain), `nodes`, `op_types`
        (op type -> count, subgraphs included, most frequent first),
        `weights_bytes` (bytes of all initializers and Constant nodes)
        and `largest_duplicate_bytes` (the bytes of the largest constant
        held more than once, 0 when none is).
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    counts = collections.Counter()
    weights, seen, duplicate = 0, set(), 0
    for graph, _ in _graphs(model.graph):
        tensors = list(graph.initializer)
        for node in graph.node:
            counts[node.op_type] += 1
            if node.op_type == "Constant":
                tensors.extend(a.t for a in node.attribute if a.name ==
                               "value")
        for tensor in tensors:
            value = numpy_helper.to_array(tensor)
            weights += value.nbytes
            key = (value.dtype.str, value.shape,
                   hashlib.sha256(value.tobytes()).hexdigest())
            if key in seen:
                duplicate = max(duplicate, value.nbytes)
            seen.add(key)
    opset = next(o.version for o in model.opset_import
                 if o.domain in ("", "ai.onnx"))
    return {"opset": opset, "nodes": sum(counts.values()),
            "op_types": dict(counts.most_common()),
            "weights_bytes": weights, "largest_duplicate_bytes": duplicate}
