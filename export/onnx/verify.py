"""Check an ONNX export against the TensorFlow Translator (and SavedModel).

`verify_onnx` runs every graph that `export.onnx.export_onnx` wrote and
compares it with TensorFlow on the same sentences: the given texts plus
`bad_input_texts` (empty, whitespace of several kinds, a text longer than
`max_source_tokens`, characters without a piece, invalid UTF-8):

- the token graphs in this process, against the Translator's
  `translate_tokens` / `translate_tokens_greedy` (and the SavedModel's):
  equal token ids;
- the text graphs in a subprocess (`python -m
  keras_transformer.export.onnx.text_check`) that imports no TensorFlow
  (onnxruntime-extensions crashes a process that has), through
  `OnnxTranslator`, against the Translator's `translate` /
  `translate_greedy` (and the SavedModel's `serving_default` /
  `translate_greedy` signatures): equal strings. Both get invalid UTF-8
  as the same raw bytes (`runtime.text_feed`).

Each comparison is an `export.parity` report (under `parity`): scores
must be within `score_tolerance` (onnxruntime sums in another order than
TensorFlow). A quantized export (`"quantization": "int8"` or `"float16"` in its
manifest, `export.onnx.quantize`) cannot match float32 TensorFlow on every
sentence: its ids (or strings) must equal TensorFlow's on at least
`min_agreement` of the sentences (`QUANTIZED_MIN_AGREEMENT` by default), and
its scores are reported, not checked. `graph_summary` counts what a
graph holds (op types, constant bytes, duplicated constants) for the
export's report.
"""

import base64
import collections
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import tensorflow as tf
from onnx import numpy_helper

from keras_transformer.checks import check_float, check_int
from keras_transformer.contract import (
    QUANTIZED_MIN_AGREEMENT,
    SCORE_TOLERANCE,
)
from keras_transformer.export import parity
from keras_transformer.export.onnx.convert import SEARCH_FUNCTIONS
from keras_transformer.export.onnx.graph import graphs
from keras_transformer.export.onnx.runtime import (
    check_texts,
    make_session,
    read_config,
    run_search,
)
from keras_transformer.text.special_tokens import PAD_ID, RESERVED_TOKENS

# The Translator's tf.functions that each text graph is checked against.
TEXT_FUNCTIONS = {"beam": "translate", "greedy": "translate_greedy"}
TEXT_SIGNATURES = {"beam": "serving_default", "greedy": "translate_greedy"}
DEFAULT_NUM_SENTENCES = 64
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def check_translator(translator) -> None:
    """Raises TypeError unless `translator` looks like a `Translator`."""
    needed = (*SEARCH_FUNCTIONS.values(), *TEXT_FUNCTIONS.values(),
              "source_ids", "source_tokenizer", "target_tokenizer", "model",
              "settings", "source_limit", "max_length", "source_vocab_size")
    if not all(hasattr(translator, name) for name in needed):
        raise TypeError(
            "`translator` must be a keras_transformer Translator. "
            f"Received: translator={translator!r:.80}")


def default_texts(translator, count: int = DEFAULT_NUM_SENTENCES,
                  seed: int = 0) -> list[str]:
    """A built-in verification set that suits any source vocabulary.

    `count` random sequences of 1 to 39 source pieces (no reserved nor
    byte pieces; longer than `max_source_tokens` when that is short),
    detokenized to text.
    """
    rng = np.random.default_rng(seed)
    vocabulary = translator.source_tokenizer.vocabulary
    pieces = np.array([i for i, piece in enumerate(vocabulary)
                       if i >= len(RESERVED_TOKENS)
                       and not _BYTE_PIECE.fullmatch(piece)], np.int32)
    longest = min(40, translator.source_limit + 5)
    rows = [rng.choice(pieces, size=int(rng.integers(1, longest)))
            for _ in range(count)]
    ids = np.zeros([len(rows), max(map(len, rows))], np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    texts = translator.source_tokenizer.detokenize(tf.constant(ids))
    return [t.decode("utf-8", "replace") for t in texts.numpy()]


def bad_input_texts(translator, texts=()) -> list:
    """The input-rule cases every verification adds to its texts.

    An empty text, whitespace of several kinds, a text longer than
    `max_source_tokens` tokens, characters without a piece (emoji), and
    bytes that are not valid UTF-8 (a str in the middle).
    """
    def count(text):
        tokens = translator.source_tokenizer.tokenize(tf.constant([text]))
        return int(tokens.row_lengths()[0])

    words = next((t for t in texts if isinstance(t, str) and count(t)),
                 "a b c")
    long_text = words
    for _ in range(32):  # Doubling: a few steps.
        if count(long_text) > translator.source_limit:
            break
        long_text = f"{long_text} {long_text}"
    return ["", "  \t\u3000 \n\u00a0", long_text,
            f"\u2603 {words} \U0001f600\U0001f408 \u03a9\u1680\u16a0",
            b"\xff\xfe " + words.encode("utf-8")
            + b" \xc3( \xed\xa0\x80 \xe2\x82 \xf0\x9f\x98"]


def verify_onnx(onnx_dir: str | os.PathLike, translator,
                texts=None, source_ids=None,
                saved_model_dir: str | os.PathLike | None = None,
                batch_size: int = 32, score_tolerance: float = SCORE_TOLERANCE,
                strict: bool = True,
                min_agreement: float | None = None) -> dict:
    """Runs the exported graphs in onnxruntime and compares with TensorFlow.

    Args:
        onnx_dir: a directory written by `export_onnx`.
        translator: the `Translator` that was exported.
        texts: sequence of str (or bytes), the sentences; the
            `bad_input_texts` are added. Defaults to `default_texts`.
        source_ids: int array (N, S) of ids, instead of `texts`, for the
            token graphs (the text graphs get `default_texts`).
        saved_model_dir: optional path of a SavedModel of the same
            translator (`export.saved_model.export_saved_model`).
        batch_size: int, sentences per run. Defaults to 32.
        score_tolerance: float, the largest allowed score difference.
            Defaults to `contract.SCORE_TOLERANCE`.
        strict: bool, raise on the first difference (default); if False,
            the differences are listed under `mismatches`.
        min_agreement: optional float in (0, 1]: below 1, the ids (and
            strings) must equal TensorFlow's on at least this share of
            the sentences, scores are not checked and the differences are
            listed under `mismatches`. Defaults to 1 for a float32 export
            and `QUANTIZED_MIN_AGREEMENT[quantization]` for a quantized
            one.

    Returns:
        A report dict: `sentences`; `identical` (mode -> sentences whose
        ids equal the Translator's); `saved_model_identical` (the same for
        the SavedModel, or None); `max_score_difference` (mode -> float);
        `onnxruntime_seconds` and `tensorflow_seconds` (mode -> seconds);
        `parity` (mode -> {"translator", "saved_model"}: the
        `export.parity` report of each comparison, "saved_model" None
        without a SavedModel); `text` (the same figures for the text
        graphs: `sentences`, `identical`, `saved_model_identical` (mode
        -> count, or None without a SavedModel), `max_score_difference`,
        `onnxruntime_seconds` (in the subprocess), `tensorflow_seconds`,
        `parity`); `mismatches` (the differing rows of every comparison,
        each with its `graph` and `reference`); `quantization` (the
        export's, or None), `min_agreement` and `agreement` (graph file ->
        share of sentences equal to the Translator's).

    Raises:
        ValueError: outputs or scores differ (naming the graph, the
            sentence and both outputs), fewer than `min_agreement` of
            the sentences agree, or an argument is invalid.
        RuntimeError: the text-graph subprocess failed.
    """
    check_translator(translator)
    config = read_config(onnx_dir)
    check_int("batch_size", batch_size, 1)
    quantization = config.get("quantization")
    if min_agreement is None:
        min_agreement = QUANTIZED_MIN_AGREEMENT.get(quantization, 1.0)
    min_agreement = check_float("min_agreement", min_agreement, 0.0)
    if not 0.0 < min_agreement <= 1.0:
        raise ValueError(
            "`min_agreement` must be a share in (0, 1]. Received: "
            f"min_agreement={min_agreement}")
    if min_agreement < 1.0:  # Count the differences, check the share.
        score_tolerance = None
    ids, texts = verification_inputs(translator, texts, source_ids)
    saved = (tf.saved_model.load(os.fspath(saved_model_dir))
             if saved_model_dir is not None else None)
    report = {"sentences": len(ids), "identical": {},
              "saved_model_identical": None if saved is None else {},
              "max_score_difference": {}, "onnxruntime_seconds": {},
              "tensorflow_seconds": {}, "parity": {}, "mismatches": [],
              "quantization": quantization, "min_agreement": min_agreement}
    checker = _Checker(report["mismatches"], min_agreement, score_tolerance,
                       strict or min_agreement < 1.0)
    for mode, name in sorted(config["graphs"].items()):
        session = make_session(os.path.join(os.fspath(onnx_dir), name))
        timer = time.perf_counter()
        got = _run_batches(lambda batch: run_search(session, batch), ids,
                           batch_size)
        report["onnxruntime_seconds"][mode] = time.perf_counter() - timer
        function = SEARCH_FUNCTIONS[mode]
        references = {"identical": (f"the Translator's {function}",
                                    getattr(translator, function))}
        if saved is not None:
            references["saved_model_identical"] = (
                f"the SavedModel's {function}", getattr(saved, function))
        _compare_references(
            report, checker, mode, name, references, got, texts,
            lambda search: _run_batches(search, ids, batch_size))
    if config.get("text_graphs"):
        text_texts = texts if texts is not None else (
            default_texts(translator) + bad_input_texts(translator))
        report["text"] = _verify_text(onnx_dir, config, translator,
                                      text_texts, saved, batch_size, checker)
    report["agreement"] = _agreement(report, config)
    return report


def _agreement(report, config):
    """Share of sentences equal to the Translator's, per graph file."""
    shares = {}
    for kind, part in (("graphs", report), ("text_graphs",
                                            report.get("text"))):
        for mode, found in (part or {}).get("parity", {}).items():
            shares[config[kind][mode]] = found["translator"]["share"]
    return shares


class _Checker:
    """Compares a graph's rows with a reference's (`export.parity`)."""

    def __init__(self, mismatches, min_agreement, score_tolerance, check):
        self.mismatches = mismatches
        self.min_agreement = min_agreement
        self.score_tolerance = score_tolerance
        self.check = check

    def compare(self, part, key, mode, graph, reference, got, expected,
                texts):
        """Records in `part` (the token or text report) one comparison."""
        result = parity.compare(
            got[0], expected[0], got[1], expected[1], inputs=texts,
            min_agreement=self.min_agreement,
            score_tolerance=self.score_tolerance, keep=None)
        if self.check:
            parity.check(result, f"ONNX graph {graph!r}", reference)
        part[key][mode] = result["identical"]
        part["parity"].setdefault(mode, {"saved_model": None})[
            "translator" if key == "identical" else "saved_model"] = result
        part["max_score_difference"][mode] = max(
            part["max_score_difference"].get(mode, 0.0),
            result["max_score_difference"])
        self.mismatches.extend({"graph": graph, "reference": reference,
                                **mismatch}
                               for mismatch in result["mismatches"])


def _compare_references(report, checker, mode, name, references, got,
                        texts, run):
    """Runs each TensorFlow reference (`run(function)`) and compares the
    graph's outputs `got` with it; times the Translator's run."""
    for key, (reference, function) in references.items():
        timer = time.perf_counter()
        expected = run(function)
        if key == "identical":
            report["tensorflow_seconds"][mode] = time.perf_counter() - timer
        checker.compare(report, key, mode, name, reference, got, expected,
                        texts)


def _verify_text(onnx_dir, config, translator, texts, saved, batch_size,
                 checker):
    """Checks the text graphs (in a subprocess) against TensorFlow."""
    modes = sorted(config["text_graphs"])
    strings = [t.encode("utf-8") if isinstance(t, str) else t
               for t in texts]
    answer = _run_text_check(onnx_dir, modes, texts, batch_size)
    report = {"sentences": len(texts), "identical": {},
              "saved_model_identical": {mode: None for mode in modes},
              "max_score_difference": {}, "onnxruntime_seconds": {},
              "tensorflow_seconds": {}, "parity": {}}
    for mode in modes:
        name = config["text_graphs"][mode]
        result = answer["results"][mode]
        report["onnxruntime_seconds"][mode] = result["seconds"]
        got = (result["translation"], np.array(result["score"], np.float64))
        references = {"identical": (
            f"the Translator's {TEXT_FUNCTIONS[mode]}",
            getattr(translator, TEXT_FUNCTIONS[mode]))}
        if saved is not None:
            signature = TEXT_SIGNATURES[mode]
            if signature not in saved.signatures:
                raise ValueError(
                    f"`saved_model_dir` must hold a SavedModel with the "
                    f"signature {signature!r}. Received: signatures "
                    f"{sorted(saved.signatures)}")
            references["saved_model_identical"] = (
                f"the SavedModel's {signature}",
                lambda text, s=saved.signatures[signature]: s(text=text))
        _compare_references(
            report, checker, mode, name, references, got, texts,
            lambda translate: _translate_batches(translate, strings,
                                                 batch_size))
    return report


def _run_text_check(onnx_dir, modes, texts, batch_size):
    """Runs `export.onnx.text_check` in a subprocess; returns its answer."""
    entries = [t if isinstance(t, str) else
               {"base64": base64.b64encode(t).decode("ascii")}
               for t in texts]
    with tempfile.TemporaryDirectory() as tmp:
        request = os.path.join(tmp, "request.json")
        answer = os.path.join(tmp, "answer.json")
        with open(request, "w", encoding="utf-8") as file:
            json.dump({"onnx_dir": os.path.abspath(os.fspath(onnx_dir)),
                       "modes": modes, "batch_size": batch_size,
                       "texts": entries}, file)
        process = subprocess.run(
            [sys.executable, "-m", "keras_transformer.export.onnx.text_check",
             request, answer], capture_output=True, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if process.returncode:
            raise RuntimeError(
                "Running the ONNX text graphs in a subprocess without "
                f"TensorFlow failed (status {process.returncode}):\n"
                f"{process.stderr[-3000:]}")
        with open(answer, encoding="utf-8") as file:
            return json.load(file)


def _translate_batches(translate, strings, batch_size):
    """TensorFlow translations by batches: (list of str, scores)."""
    translations, scores = [], []
    for start in range(0, len(strings), batch_size):
        result = translate(tf.constant(strings[start:start + batch_size],
                                       tf.string))
        translations += [t.decode("utf-8", "replace")
                         for t in result["translation"].numpy()]
        scores += result["score"].numpy().tolist()
    return translations, np.array(scores, np.float64)


def _run_batches(search, ids, batch_size):
    """Runs `search` by batches: per-row id lists without padding, scores."""
    rows, scores = [], []
    for start in range(0, len(ids), batch_size):
        result = search(ids[start:start + batch_size])
        for row in np.asarray(result["target_ids"]).tolist():
            while row and row[-1] == PAD_ID:
                row.pop()
            rows.append(row)
        scores.extend(np.asarray(result["score"]).tolist())
    return rows, np.array(scores, np.float64)


def verification_inputs(translator, texts, source_ids):
    """Returns (ids int32 (N, S), texts with the bad inputs, or None)."""
    if texts is not None and source_ids is not None:
        raise ValueError(
            "Pass `texts` or `source_ids`, not both. Received: "
            f"texts={texts!r:.60}, source_ids={source_ids!r:.60}")
    if source_ids is None:
        texts = default_texts(translator) if texts is None else texts
        texts = check_texts(texts)
        if not texts:
            raise ValueError("`texts` must not be empty. Received: texts=[]")
        texts = texts + bad_input_texts(translator, texts)
        strings = [t.encode("utf-8") if isinstance(t, str) else t
                   for t in texts]
        ids = translator.source_ids(tf.constant(strings, tf.string))
        return np.asarray(ids, np.int32), texts
    ids = np.asarray(source_ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or not np.issubdtype(
            ids.dtype, np.integer):
        raise ValueError(
            "`source_ids` must be a non-empty 2-D array of integer ids. "
            f"Received: source_ids with shape {ids.shape} and dtype "
            f"{ids.dtype}")
    return ids.astype(np.int32), None


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
    for graph, _ in graphs(model.graph):
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
