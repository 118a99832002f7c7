"""Write a Translator's whole search as ONNX graphs, token and text level.

One graph runs the whole search (the encoder once, then the decoder loop
with its cache) and onnxruntime gives the same outputs as TensorFlow
(ARCHITECTURE.md, "Contracts"). `export_onnx` writes, into one directory:

- `beam.onnx`, `greedy.onnx` (token graphs): `Translator.translate_tokens`
  and `translate_tokens_greedy`, `source_ids` int32 [batch, source_length]
  -> `target_ids` int32 [batch, target_length], `score` float32 [batch];
- `beam_text.onnx`, `greedy_text.onnx` (text graphs): the same search
  between onnxruntime-extensions' SentencePiece tokenizer and decoder
  (`export.onnx.text_graph.build_text_model`), `text` string [batch] ->
  `translation` string [batch], `score` float32 [batch], with the input
  rules of `keras_transformer.contract` inside the graph;
- `source.model`, `target.model`: the SentencePiece models;
- `onnx_config.json`: the manifest of `contract.make_manifest` (reserved
  ids, limits, search settings, quantization) with the graph files of each
  kind, the opset and the inputs and outputs of both kinds;

then checks them with `export.onnx.verify.verify_onnx` (the text graphs in
a subprocess without TensorFlow). Each token graph is the search's
`tf.while_loop` as one ONNX `Loop` and holds every weight once: after
tf2onnx, `compact` folds the shapes of constants and keeps one copy of
equal constants; its dims are named `batch`, `source_length` and
`target_length`. Each text graph holds the weights once too (so a
directory holds them four times). `export.onnx.runtime.OnnxTranslator`
runs the directory with only numpy, onnxruntime and onnxruntime-extensions.
"""

import logging
import os
import time

import numpy as np
import onnx

from keras_transformer.checks import check_choice, check_int
from keras_transformer.contract import (
    ONNX_BEAM_OP_GRAPH,
    ONNX_FORMAT,
    ONNX_GRAPHS,
    ONNX_MANIFEST,
    ONNX_OPERATORS,
    ONNX_TEXT_GRAPHS,
    SCORE_TOLERANCE,
    SEARCH_MODES,
    SOURCE_MODEL,
    TARGET_MODEL,
    make_manifest,
    write_manifest,
)
from keras_transformer.export.onnx.beam_op import (
    convert_beam_op,
    verify_beam_op,
)
from keras_transformer.export.onnx.convert import (
    MAX_OPSET,
    MIN_OPSET,
    convert_search,
)
from keras_transformer.export.onnx.quantize import (
    check_quantize,
    matmul_counts,
    quantize_search,
)
from keras_transformer.export.onnx.text_graph import build_text_model
from keras_transformer.export.onnx.verify import (
    check_translator,
    graph_summary,
    verification_inputs,
    verify_onnx,
)
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

logger = logging.getLogger(__name__)
def export_onnx(translator, out_dir: str | os.PathLike,
                opset: int = MIN_OPSET,
                modes: tuple[str, ...] = SEARCH_MODES,
                texts: list[str] | None = None, source_ids=None,
                saved_model_dir: str | os.PathLike | None = None,
                verify: bool = True,
                score_tolerance: float = SCORE_TOLERANCE,
                quantize: str | None = None,
                min_agreement: float | None = None,
                beam_op: bool = False,
                operators: str = "onnxruntime") -> dict:
    """Writes the searches of `translator` as ONNX graphs and verifies them.

    Writes, for each of `modes`, `ONNX_GRAPHS[mode]` (token graph) and
    `ONNX_TEXT_GRAPHS[mode]` (text graph), then the SentencePiece models
    `SOURCE_MODEL`, `TARGET_MODEL` and, last, `ONNX_MANIFEST` into `out_dir`
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
        quantize: None (float32 weights, the default), "int8" or
            "float16": each token graph goes through
            `export.onnx.quantize.quantize_search` before the text graph
            embeds it ("int8": the decoder step's MatMuls in int8 and every
            other weight stored as int8, about 3.8x smaller; "float16":
            the weights stored as float16, 2x smaller, computed in
            float32). A quantized export cannot give the float32 ids on
            every sentence: `verify_onnx` then requires the TensorFlow ids
            on at least `min_agreement` of them instead of all.
        min_agreement: float in (0, 1], the share of sentences a quantized
            export must translate as TensorFlow does. Defaults to
            `contract.QUANTIZED_MIN_AGREEMENT[quantize]` (int8 0.8,
            float16 0.95).
        beam_op: bool, also write `export.onnx.beam_op.ONNX_BEAM_OP_GRAPH`,
            the beam search as onnxruntime's BeamSearch op (opt-in: it
            ranks by log P / length^alpha, not GNMT; see that module),
            verified against the Translator at length_penalty 0 (float32
            only). Defaults to False.
        operators: "onnxruntime" (the default: the greedy search's
            decoder step uses onnxruntime's fused `com.microsoft`
            attention, `export.onnx.fuse`; the beam search stays standard)
            or "standard" (standard ONNX operators only: for
            onnxruntime-web, which the web export needs, and other
            engines). Named in `onnx_config.json` as "operators".

    Returns:
        A report dict: `out_dir`, `opset`, `files` (name -> bytes),
        `variables_bytes` (the model's weights), `weights_bytes` (mode ->
        bytes of constants in the token graph), `nodes` and `op_types`
        (mode -> count by op type in the token graph, subgraphs included),
        `text_nodes` and `text_op_types` (the same for the text graph),
        `conversion_seconds` (mode -> seconds, both graphs),
        `quantization` (None, "int8" or "float16"), `float32_bytes`
        (mode -> bytes of the token graph before quantization),
        `matmuls` (mode -> `export.onnx.quantize.matmul_counts` of the
        token graph),
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
    check_choice("operators", operators, ONNX_OPERATORS)
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
            not modes or not all(isinstance(mode, str) and mode in ONNX_GRAPHS
                                 for mode in modes)
            or len(set(modes)) != len(modes)):
        raise ValueError(
            "`modes` must be a non-empty tuple of distinct names from "
            f"{sorted(ONNX_GRAPHS)}. Received: modes={modes!r}")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, ONNX_MANIFEST)
    if os.path.exists(config_path):  # Until the new graphs are complete.
        os.remove(config_path)
    report = {"out_dir": out_dir, "opset": opset, "operators": operators,
              "files": {},
              "variables_bytes": sum(
                  int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
                  for v in translator.model.weights),
              "weights_bytes": {}, "nodes": {}, "op_types": {},
              "text_nodes": {}, "text_op_types": {},
              "conversion_seconds": {}, "quantization": quantize,
              "matmuls": {}, "float32_bytes": {}}
    for mode in modes:
        start = time.perf_counter()
        model = convert_search(translator, mode, opset, operators)
        if quantize is not None:
            report["float32_bytes"][mode] = model.ByteSize()
            model = quantize_search(model, quantize)
        report["matmuls"][mode] = matmul_counts(model)
        onnx.save(model, os.path.join(out_dir, ONNX_GRAPHS[mode]))
        text_model = build_text_model(
            model, *protos, max_source_tokens=int(translator.source_limit),
            source_vocab_size=int(translator.source_vocab_size),
            end_id=END_ID, pad_id=PAD_ID, start_id=START_ID,
            name=f"{mode}_text_search")
        onnx.checker.check_model(text_model)
        onnx.save(text_model, os.path.join(out_dir, ONNX_TEXT_GRAPHS[mode]))
        report["conversion_seconds"][mode] = round(
            time.perf_counter() - start, 2)
        summary = graph_summary(model)
        for key in ("weights_bytes", "nodes", "op_types"):
            report[key][mode] = summary[key]
        summary = graph_summary(text_model)
        report["text_nodes"][mode] = summary["nodes"]
        report["text_op_types"][mode] = summary["op_types"]
        logger.info("Wrote %s and %s in %.1f s.", ONNX_GRAPHS[mode],
                    ONNX_TEXT_GRAPHS[mode], report["conversion_seconds"][mode])
    translator.source_tokenizer.save(os.path.join(out_dir, SOURCE_MODEL))
    translator.target_tokenizer.save(os.path.join(out_dir, TARGET_MODEL))
    report["beam_op"] = None
    if beam_op:
        start = time.perf_counter()
        onnx.save(convert_beam_op(translator, opset),
                  os.path.join(out_dir, ONNX_BEAM_OP_GRAPH))
        report["conversion_seconds"]["beam_op"] = round(
            time.perf_counter() - start, 2)
        report["files"][ONNX_BEAM_OP_GRAPH] = os.path.getsize(
            os.path.join(out_dir, ONNX_BEAM_OP_GRAPH))
        report["beam_op"] = {}
        if verify:
            ids, _ = verification_inputs(translator, texts, source_ids)
            report["beam_op"] = verify_beam_op(
                os.path.join(out_dir, ONNX_BEAM_OP_GRAPH), translator, ids,
                score_tolerance=score_tolerance)
    # The configuration last: a directory with one lists complete graphs.
    config = _manifest(translator, opset, modes, quantize, operators)
    if beam_op:
        config["beam_op_graph"] = ONNX_BEAM_OP_GRAPH
    write_manifest(out_dir, ONNX_MANIFEST, config)
    for name in (*(ONNX_GRAPHS[mode] for mode in modes),
                 *(ONNX_TEXT_GRAPHS[mode] for mode in modes), SOURCE_MODEL,
                 TARGET_MODEL, ONNX_MANIFEST):
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


def _manifest(translator, opset, modes, quantize, operators):
    """What `OnnxTranslator` needs besides the graphs and models."""
    domains = {"text_graphs": "ai.onnx.contrib (onnxruntime-extensions)"}
    if operators == "onnxruntime":
        domains["graphs"] = ("com.microsoft (onnxruntime contrib "
                             "operators; greedy search)")
    return make_manifest(
        ONNX_FORMAT, max_length=translator.max_length,
        target_limit=translator.target_limit,
        max_source_tokens=translator.source_limit,
        source_vocab_size=translator.source_vocab_size,
        search_settings=translator.settings, quantization=quantize,
        opset=opset, operators=operators,
        graphs={mode: ONNX_GRAPHS[mode] for mode in modes},
        text_graphs={mode: ONNX_TEXT_GRAPHS[mode] for mode in modes},
        custom_op_domains=domains,
        inputs={"graphs": {"source_ids": "int32 [batch, source_length]"},
                "text_graphs": {"text": "string [batch]"}},
        outputs={"graphs": {"target_ids": "int32 [batch, target_length]",
                            "score": "float32 [batch]"},
                 "text_graphs": {"translation": "string [batch]",
                                 "score": "float32 [batch]"}},
        source_tokenizer=translator.source_tokenizer.config,
        target_tokenizer=translator.target_tokenizer.config)
