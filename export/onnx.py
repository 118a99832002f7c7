"""Write a Translator's whole search as ONNX graphs, token and text level.

DESIGN.md, "Export contracts": one graph runs the whole search (the encoder
once, then the decoder loop with its cache) and onnxruntime gives the same
outputs as TensorFlow. `export_onnx` writes, into one directory:

- `beam.onnx`, `greedy.onnx` (token graphs): `Translator.translate_tokens`
  and `translate_tokens_greedy`, `source_ids` int32 [batch, source_length]
  -> `target_ids` int32 [batch, target_length], `score` float32 [batch];
- `beam_text.onnx`, `greedy_text.onnx` (text graphs): the same search
  between onnxruntime-extensions' SentencePiece tokenizer and decoder
  (`export.onnx_text.build_text_model`), `text` string [batch] ->
  `translation` string [batch], `score` float32 [batch], with the input
  rules of `keras_transformer.inference` inside the graph;
- `source.model`, `target.model`: the SentencePiece models;
- `onnx_config.json` (version 2): the graph files of each kind, the model
  files, reserved ids, `max_length`, `max_source_tokens`,
  `source_vocab_size`, the search settings, the opset and the inputs and
  outputs of both kinds;

then checks them with `export.onnx_verify.verify_onnx` (the text graphs in
a subprocess without TensorFlow). Each token graph is the search's
`tf.while_loop` as one ONNX `Loop` and holds every weight once: after
tf2onnx, `_compact` folds the shapes of constants and keeps one copy of
equal constants; its dims are named `batch`, `source_length` and
`target_length`. Each text graph holds the weights once too (so a
directory holds them four times). `export.onnx_runtime.OnnxTranslator`
runs the directory with only numpy, onnxruntime and onnxruntime-extensions.
"""

import collections
import json
import logging
import os
import time

import numpy as np
import onnx
import tensorflow as tf
from keras_transformer.export.onnx_beam_op import (
    ORT_BEAM_FILE,
    convert_beam_op,
    verify_beam_op,
)
from keras_transformer.export.onnx_graph import (  # noqa: F401
    DIM_NAMES,
    _compact,
    _graphs,
    _name_dims,
)
from keras_transformer.export.onnx_lean import lean_search
from keras_transformer.export.onnx_quantize import (
    check_quantize,
    matmul_counts,
    quantize_search,
)
from keras_transformer.export.onnx_runtime import (
    CONFIG_FILE,
    FORMAT,
    GRAPH_FILES,
    SOURCE_MODEL,
    TARGET_MODEL,
    TEXT_GRAPH_FILES,
    VERSION,
)
from keras_transformer.export.onnx_text import build_text_model
from keras_transformer.export.onnx_verify import (
    SEARCH_FUNCTIONS,
    _verification_inputs,
    check_translator,
    graph_summary,
    verify_onnx,
)

from keras_transformer.checks import check_int
from keras_transformer.text.special_tokens import (
    END_ID,
    PAD_ID,
    START_ID,
    UNK_ID,
)

__all__ = ["convert_search", "export_onnx", "graph_summary", "verify_onnx"]

logger = logging.getLogger(__name__)

# The names of the token graphs' dims (tf2onnx leaves "unk__NNN").
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
                   opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Converts one search of `translator` to an ONNX model with tf2onnx.

    The steps of `tf2onnx.convert.from_function` (freeze the traced
    function, convert the graph, optimize), with the passes of
    `_optimizers`, then `_compact` and the leaner decoder step of
    `export.onnx_lean.lean_search`.

    Args:
        translator: a `keras_transformer.Translator`.
        mode: "beam" or "greedy".
        opset: int, the ONNX opset, 17 or 18. Defaults to 17.

    Returns:
        An `onnx.ModelProto` with input `source_ids` int32 [batch,
        source_length] and outputs `target_ids` int32 [batch,
        target_length], `score` float32 [batch].
    """
    if mode not in GRAPH_FILES:
        raise ValueError(
            f"`mode` must be one of {sorted(GRAPH_FILES)}. "
            f"Received: mode={mode!r}")
    function = getattr(translator, SEARCH_FUNCTIONS[mode])
    model = function_to_onnx(function, opset,
                             f"keras-transformer {mode} search",
                             f"{mode}_search")
    _compact(model.graph)
    lean_search(model)
    _name_dims(model.graph)
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


# -- export ---------------------------------------------------------------

def export_onnx(translator, out_dir: str | os.PathLike,
                opset: int = MIN_OPSET,
                modes: tuple[str, ...] = ("beam", "greedy"),
                texts: list[str] | None = None, source_ids=None,
                saved_model_dir: str | os.PathLike | None = None,
                verify: bool = True,
                score_tolerance: float = 1e-3,
                quantize: str | None = None,
                min_agreement: float = 0.95,
                beam_op: bool = False) -> dict:
    """Writes the searches of `translator` as ONNX graphs and verifies them.

    Writes, for each of `modes`, `GRAPH_FILES[mode]` (token graph) and
    `TEXT_GRAPH_FILES[mode]` (text graph), then the SentencePiece models
    `SOURCE_MODEL`, `TARGET_MODEL` and, last, `CONFIG_FILE` into `out_dir`
    (created if missing; files of the same names are replaced). Then,
    unless `verify=False`, runs `verify_onnx`.

    Args:
        translator: a `keras_transformer.Translator` with
            `SentencePieceTokenizer`s.
        out_dir: path of the output directory.
        opset: int, the ONNX opset, 17 or 18. Defaults to 17.
        modes: the searches to write, "beam" and/or "greedy".
        texts, source_ids, saved_model_dir, score_tolerance: as in
            `verify_onnx`.
        verify: bool, run `verify_onnx`. Defaults to True.
        quantize: None (float32 weights, the default) or "int8": each
            token graph goes through `export.onnx_quantize.quantize_search`
            (int8 MatMul weights, Loop body included) before the text graph
            embeds it. An int8 export cannot give the float32 ids on every
            sentence: `verify_onnx` then requires the TensorFlow ids on at
            least `min_agreement` of them instead of all.
        min_agreement: float in (0, 1], the share of sentences an int8
            export must translate as TensorFlow does. Defaults to 0.95.
        beam_op: bool, also write `export.onnx_beam_op.ORT_BEAM_FILE`,
            the beam search as onnxruntime's BeamSearch op (opt-in: it
            ranks by log P / length^alpha, not GNMT; see that module),
            verified against the Translator at length_penalty 0 (float32
            only). Defaults to False.

    Returns:
        A report dict: `out_dir`, `opset`, `files` (name -> bytes),
        `variables_bytes` (the model's weights), `weights_bytes` (mode ->
        bytes of constants in the token graph), `nodes` and `op_types`
        (mode -> count by op type in the token graph, subgraphs included),
        `text_nodes` and `text_op_types` (the same for the text graph),
        `conversion_seconds` (mode -> seconds, both graphs),
        `quantization` (None or "int8"), `float32_bytes` (mode -> bytes
        of the token graph before quantization), `matmuls` (mode ->
        `export.onnx_quantize.matmul_counts` of the token graph),
        `verification` (the `verify_onnx` report, or None) and
        `beam_op` (None, or `verify_beam_op`'s report, or {} unverified).

    Raises:
        TypeError: `translator` is not a Translator with SentencePiece
            tokenizers.
        ValueError: an invalid argument, or the verification found a
            difference.
        RuntimeError: the text graphs could not run in a subprocess.

    Example:
    >>> report = export_onnx(translator, "export/onnx")
    >>> report["verification"]["identical"]
    {'beam': 69, 'greedy': 69}
    >>> report["verification"]["text"]["identical"]
    {'beam': 69, 'greedy': 69}
    """
    check_translator(translator)
    check_quantize(quantize)
    if not isinstance(beam_op, bool) or (beam_op and quantize is not None):
        raise ValueError(
            "`beam_op` must be a bool, and False with `quantize`. Received: "
            f"beam_op={beam_op!r}, quantize={quantize!r}")
    protos = [_model_proto(translator, side) for side in ("source", "target")]
    if check_int("opset", opset, MIN_OPSET) > MAX_OPSET:
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
    config_path = os.path.join(out_dir, CONFIG_FILE)
    if os.path.exists(config_path):  # Until the new graphs are complete.
        os.remove(config_path)
    report = {"out_dir": out_dir, "opset": opset, "files": {},
              "variables_bytes": sum(
                  int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                  for v in translator.model.weights),
              "weights_bytes": {}, "nodes": {}, "op_types": {},
              "text_nodes": {}, "text_op_types": {},
              "conversion_seconds": {}, "quantization": quantize,
              "matmuls": {}, "float32_bytes": {}}
    for mode in modes:
        start = time.perf_counter()
        model = convert_search(translator, mode, opset)
        if quantize is not None:
            report["float32_bytes"][mode] = model.ByteSize()
            model = quantize_search(model, quantize)
        report["matmuls"][mode] = matmul_counts(model)
        onnx.save(model, os.path.join(out_dir, GRAPH_FILES[mode]))
        text_model = build_text_model(
            model, *protos, max_source_tokens=int(translator.source_limit),
            source_vocab_size=int(translator.source_vocab_size),
            end_id=END_ID, pad_id=PAD_ID, start_id=START_ID,
            name=f"{mode}_text_search")
        onnx.checker.check_model(text_model)
        onnx.save(text_model, os.path.join(out_dir, TEXT_GRAPH_FILES[mode]))
        report["conversion_seconds"][mode] = round(
            time.perf_counter() - start, 2)
        summary = graph_summary(model)
        for key in ("weights_bytes", "nodes", "op_types"):
            report[key][mode] = summary[key]
        summary = graph_summary(text_model)
        report["text_nodes"][mode] = summary["nodes"]
        report["text_op_types"][mode] = summary["op_types"]
        logger.info("Wrote %s and %s in %.1f s.", GRAPH_FILES[mode],
                    TEXT_GRAPH_FILES[mode], report["conversion_seconds"][mode])
    translator.source_tokenizer.save(os.path.join(out_dir, SOURCE_MODEL))
    translator.target_tokenizer.save(os.path.join(out_dir, TARGET_MODEL))
    report["beam_op"] = None
    if beam_op:
        start = time.perf_counter()
        onnx.save(convert_beam_op(translator, opset),
                  os.path.join(out_dir, ORT_BEAM_FILE))
        report["conversion_seconds"]["beam_op"] = round(
            time.perf_counter() - start, 2)
        report["files"][ORT_BEAM_FILE] = os.path.getsize(
            os.path.join(out_dir, ORT_BEAM_FILE))
        report["beam_op"] = {}
        if verify:
            ids, _ = _verification_inputs(translator, texts, source_ids)
            report["beam_op"] = verify_beam_op(
                os.path.join(out_dir, ORT_BEAM_FILE), translator, ids,
                score_tolerance=score_tolerance)
    # The configuration last: a directory with one lists complete graphs.
    config = _runtime_config(translator, opset, modes, quantize)
    if beam_op:
        config["beam_op_graph"] = ORT_BEAM_FILE
    with open(config_path, "w", encoding="utf-8") as file:
        json.dump(config, file, indent=2, sort_keys=True)
    for name in (*(GRAPH_FILES[mode] for mode in modes),
                 *(TEXT_GRAPH_FILES[mode] for mode in modes), SOURCE_MODEL,
                 TARGET_MODEL, CONFIG_FILE):
        report["files"][name] = os.path.getsize(os.path.join(out_dir, name))
    report["verification"] = verify_onnx(
        out_dir, translator, texts=texts, source_ids=source_ids,
        saved_model_dir=saved_model_dir,
        score_tolerance=score_tolerance,
        min_agreement=1.0 if quantize is None else min_agreement,
    ) if verify else None
    return report


def _model_proto(translator, side):
    """The serialized SentencePiece model of one side's tokenizer."""
    tokenizer = getattr(translator, f"{side}_tokenizer")
    proto = getattr(tokenizer, "model_proto", None)
    if not isinstance(proto, bytes):
        raise TypeError(
            f"`translator` must have SentencePiece tokenizers (with a "
            f"`model_proto`). Received: translator.{side}_tokenizer of type "
            f"{type(tokenizer).__name__}")
    return proto


def _runtime_config(translator, opset, modes, quantize):
    """What `OnnxTranslator` needs besides the graphs and models."""
    return {
        "format": FORMAT, "version": VERSION, "opset": opset,
        "quantization": quantize,
        "graphs": {mode: GRAPH_FILES[mode] for mode in modes},
        "text_graphs": {mode: TEXT_GRAPH_FILES[mode] for mode in modes},
        "custom_op_domains": {"text_graphs": "ai.onnx.contrib "
                              "(onnxruntime-extensions)"},
        "inputs": {
            "graphs": {"source_ids": "int32 [batch, source_length]"},
            "text_graphs": {"text": "string [batch]"}},
        "outputs": {
            "graphs": {"target_ids": "int32 [batch, target_length]",
                       "score": "float32 [batch]"},
            "text_graphs": {"translation": "string [batch]",
                            "score": "float32 [batch]"}},
        "source_model": SOURCE_MODEL, "target_model": TARGET_MODEL,
        "source_tokenizer": translator.source_tokenizer.config,
        "target_tokenizer": translator.target_tokenizer.config,
        "pad_id": PAD_ID, "unk_id": UNK_ID, "start_id": START_ID,
        "end_id": END_ID, "max_length": int(translator.max_length),
        "max_source_tokens": int(translator.source_limit),
        "source_vocab_size": int(translator.source_vocab_size),
        "search_settings": translator.settings.to_dict(),
    }
