"""Run the ONNX graphs that `export.onnx.export_onnx` wrote: onnxruntime.

`OnnxTranslator` translates text: tokenization and detokenization run in
Python with the package's own `SubwordTokenizer` (tensorflow-text ops,
rebuilt from the vocabulary files), the search runs in onnxruntime.
`verify_onnx` checks that onnxruntime gives the token ids of TensorFlow.
Inputs are cleaned exactly as by `keras_transformer.Translator.__call__`:

- a source longer than `max_length` is truncated to its first
  `max_length - 1` tokens (plus `[END]`);
- a text with no token (empty, or only whitespace of any kind) translates
  to "" with score 0.0;
- invalid UTF-8 bytes become U+FFFD, unknown characters `[UNK]`;
- an empty batch gives an empty list.
"""

import json
import os
import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import tensorflow as tf

from keras_transformer.text import PAD_ID, SubwordTokenizer

CONFIG_FILE = "onnx_config.json"
FORMAT = "keras-transformer-onnx"
# The Translator's tf.function that each search graph is made from.
SEARCH_FUNCTIONS = {"beam": "translate_tokens",
                    "greedy": "translate_tokens_greedy"}
DEFAULT_NUM_SENTENCES = 64
_OUTPUTS = ("target_ids", "score")


def read_config(onnx_dir: str | os.PathLike) -> dict:
    """Reads the `CONFIG_FILE` of an ONNX export directory."""
    path = os.path.join(os.fspath(onnx_dir), CONFIG_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"`onnx_dir` must be a directory written by export_onnx, with "
            f"{CONFIG_FILE}. Received: onnx_dir={os.fspath(onnx_dir)!r}")
    with open(path, encoding="utf-8") as file:
        config = json.load(file)
    if config.get("format") != FORMAT:
        raise ValueError(
            f"`onnx_dir` holds a {CONFIG_FILE} of another format "
            f"({config.get('format')!r}, expected {FORMAT!r}). "
            f"Received: onnx_dir={os.fspath(onnx_dir)!r}")
    return config


def make_session(path: str | os.PathLike,
                 providers: Sequence[str] | None = None
                 ) -> ort.InferenceSession:
    """An onnxruntime session, on the CPU unless `providers` are given."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Errors only.
    return ort.InferenceSession(
        os.fspath(path), options,
        providers=list(providers or ["CPUExecutionProvider"]))


def run_search(session: ort.InferenceSession, source_ids) -> dict:
    """Runs one search graph: {"target_ids" int32 (B, L), "score" (B,)}."""
    target_ids, score = session.run(
        list(_OUTPUTS), {"source_ids": np.asarray(source_ids, np.int32)})
    return {"target_ids": target_ids, "score": score}


class OnnxTranslator:
    """Text in, text out, with an exported ONNX search and onnxruntime.

    Args:
        onnx_dir: str, a directory written by `export.onnx.export_onnx`.
        providers: optional list of onnxruntime execution providers.
            Defaults to `["CPUExecutionProvider"]`.

    Attributes:
        config: the export's `onnx_config.json`.
        modes: the searches present, from "beam" and "greedy".

    Example:
    >>> translator = OnnxTranslator("export/onnx")
    >>> translator(["forty-two", "seven"])
    [('zweiundvierzig', -0.41), ('sieben', -0.12)]
    """

    def __init__(self, onnx_dir: str | os.PathLike,
                 providers: Sequence[str] | None = None):
        self.onnx_dir = os.fspath(onnx_dir)
        self.config = read_config(self.onnx_dir)
        self.modes = tuple(sorted(self.config["graphs"]))
        for mode in self.modes:
            path = self._path(self.config["graphs"][mode])
            if not os.path.isfile(path):
                raise ValueError(
                    f"`onnx_dir` lacks the {mode} graph {path!r}. "
                    f"Received: onnx_dir={self.onnx_dir!r}")
        self.source_tokenizer = SubwordTokenizer.from_vocabulary_file(
            self._path(self.config["source_vocabulary"]),
            **self.config["source_tokenizer"])
        self.target_tokenizer = SubwordTokenizer.from_vocabulary_file(
            self._path(self.config["target_vocabulary"]),
            **self.config["target_tokenizer"])
        self.max_length = int(self.config["max_length"])
        self._providers = providers
        self._sessions = {}

    def _path(self, name):
        return os.path.join(self.onnx_dir, name)

    def session(self, mode: str = "beam") -> ort.InferenceSession:
        """The onnxruntime session of `mode`, created on first use."""
        if mode not in self.modes:
            raise ValueError(
                f"`mode` must be one of the exported searches {self.modes}. "
                f"Received: mode={mode!r}")
        if mode not in self._sessions:
            self._sessions[mode] = make_session(
                self._path(self.config["graphs"][mode]), self._providers)
        return self._sessions[mode]

    def source_ids(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """Texts -> int32 (B, S): tokens, truncated, then [END], padded."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros([0, 1], np.int32)
        tokens = self.source_tokenizer.tokenize(tf.constant(texts, tf.string))
        rows = [row[:self.max_length - 1] + [self.config["end_id"]]
                for row in tokens.to_list()]
        ids = np.full([len(rows), max(map(len, rows))], self.config["pad_id"],
                      np.int32)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = row
        return ids

    def translate_tokens(self, source_ids, mode: str = "beam") -> dict:
        """Runs the `mode` graph on int ids (B, S) -> target_ids, score."""
        source_ids = np.asarray(source_ids)
        if source_ids.ndim != 2 or not np.issubdtype(source_ids.dtype,
                                                     np.integer):
            raise ValueError(
                "`source_ids` must be a 2-D array of integer ids. Received: "
                f"source_ids with shape {source_ids.shape} and dtype "
                f"{source_ids.dtype}")
        vocab_size = self.source_tokenizer.vocab_size
        if source_ids.size and (source_ids.min() < 0
                                or source_ids.max() >= vocab_size):
            raise ValueError(
                f"`source_ids` must be ids in [0, {vocab_size}), the source "
                f"vocabulary. Received: source_ids with values from "
                f"{source_ids.min()} to {source_ids.max()}")
        session = self.session(mode)
        if source_ids.shape[0] == 0:
            return {"target_ids": np.zeros([0, 0], np.int32),
                    "score": np.zeros([0], np.float32)}
        return run_search(session, source_ids)

    def __call__(self, texts: str | bytes | Sequence[str | bytes],
                 greedy: bool = False):
        """Translates a text or a list of texts.

        Args:
            texts: a str (or UTF-8 bytes), or a sequence of them.
            greedy: bool, greedy search instead of beam search.

        Returns:
            For one text, a pair `(translation, score)`; for a sequence,
            a list of such pairs.
        """
        single = isinstance(texts, (str, bytes))
        texts = _check_texts([texts] if single else texts)
        mode = "greedy" if greedy else "beam"
        session = self.session(mode)
        if not texts:
            return []
        source_ids = np.asarray(self.source_ids(texts))
        result = run_search(session, source_ids)
        strings = self.target_tokenizer.detokenize(
            tf.constant(result["target_ids"])).numpy()
        # A text with no token besides [END] translates to "" (Translator).
        empty = (source_ids != PAD_ID).sum(axis=1) <= 1
        pairs = [("", 0.0) if is_empty else
                 (string.decode("utf-8"), float(score))
                 for is_empty, string, score in zip(empty, strings,
                                                    result["score"])]
        return pairs[0] if single else pairs


def _check_texts(texts):
    if isinstance(texts, (str, bytes)) or not isinstance(
            texts, (Sequence, np.ndarray)):
        raise TypeError(
            "`texts` must be a sequence of str (or bytes). "
            f"Received: texts={texts!r:.80}")
    texts = list(texts.tolist() if isinstance(texts, np.ndarray) else texts)
    for i, text in enumerate(texts):
        if not isinstance(text, (str, bytes)):
            raise TypeError(
                "`texts` must contain only str or bytes. "
                f"Received: texts[{i}]={text!r:.80}")
    return texts


# -- verification ---------------------------------------------------------

def check_translator(translator) -> None:
    """Raises TypeError unless `translator` looks like a `Translator`."""
    needed = (*SEARCH_FUNCTIONS.values(), "source_ids", "source_tokenizer",
              "target_tokenizer", "model")
    if not all(hasattr(translator, name) for name in needed):
        raise TypeError(
            "`translator` must be a keras_transformer Translator. "
            f"Received: translator={translator!r:.80}")


def default_texts(translator, count: int = DEFAULT_NUM_SENTENCES,
                  seed: int = 0) -> list[str]:
    """A built-in verification set that suits any source vocabulary.

    `count - 3` random sequences of 1 to 39 source tokens (longer than
    `max_length` when that is short), detokenized to text, then three
    edge cases: an empty text, whitespace only, unknown characters.
    """
    rng = np.random.default_rng(seed)
    vocab_size = translator.source_tokenizer.vocab_size
    longest = min(40, translator.max_length + 4)
    rows = [rng.integers(4, vocab_size, size=int(rng.integers(1, longest)))
            for _ in range(count - 3)]
    ids = np.zeros([len(rows), max(map(len, rows))], np.int32)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
    texts = translator.source_tokenizer.detokenize(tf.constant(ids))
    return [t.decode("utf-8") for t in texts.numpy()] + [
        "", " \t ", "\u2603 \U0001f600"]


def verify_onnx(onnx_dir: str | os.PathLike, translator,
                texts: Sequence[str] | None = None, source_ids=None,
                saved_model_dir: str | os.PathLike | None = None,
                batch_size: int = 32, score_tolerance: float = 1e-3,
                strict: bool = True) -> dict:
    """Runs the exported graphs in onnxruntime and compares with TensorFlow.

    Each graph of `onnx_dir` translates the same source ids as the
    translator's tf.function of the same search (and, with
    `saved_model_dir`, as that SavedModel's): the token ids must be equal
    and the scores within `score_tolerance` (onnxruntime's kernels sum in
    another order than TensorFlow's).

    Args:
        onnx_dir: a directory written by `export_onnx`.
        translator: the `Translator` that was exported.
        texts: sequence of str, the sentences, tokenized with
            `translator.source_ids`. Defaults to `default_texts`.
        source_ids: int array (N, S) of ids, instead of `texts`.
        saved_model_dir: optional path of a SavedModel of the same
            translator (`export.saved_model.export_saved_model`).
        batch_size: int, sentences per run. Defaults to 32.
        score_tolerance: float, the largest allowed score difference.
            Defaults to 1e-3.
        strict: bool, raise on the first difference (default); if False,
            the differences are listed under `mismatches`.

    Returns:
        A report dict: `sentences`; `identical` (mode -> sentences whose
        ids equal the Translator's); `saved_model_identical` (the same for
        the SavedModel, or None); `max_score_difference` (mode -> float);
        `onnxruntime_seconds` and `tensorflow_seconds` (mode -> seconds,
        TensorFlow's first call includes tracing); `mismatches` (messages).

    Raises:
        ValueError: ids or scores differ (naming the graph, the sentence
            and both outputs), or an argument is invalid.
    """
    check_translator(translator)
    config = read_config(onnx_dir)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or (
            batch_size < 1):
        raise ValueError(
            "`batch_size` must be an int >= 1. "
            f"Received: batch_size={batch_size!r}")
    ids, texts = _verification_ids(translator, texts, source_ids)
    saved = (tf.saved_model.load(os.fspath(saved_model_dir))
             if saved_model_dir is not None else None)
    report = {"sentences": len(ids), "identical": {},
              "saved_model_identical": None if saved is None else {},
              "max_score_difference": {}, "onnxruntime_seconds": {},
              "tensorflow_seconds": {}, "mismatches": []}
    for mode, name in sorted(config["graphs"].items()):
        session = make_session(os.path.join(os.fspath(onnx_dir), name))
        timer = time.perf_counter()
        onnx_rows, onnx_scores = _run_batches(
            lambda batch: run_search(session, batch), ids, batch_size)
        report["onnxruntime_seconds"][mode] = time.perf_counter() - timer
        function = SEARCH_FUNCTIONS[mode]
        references = {"identical": (f"the Translator's {function}",
                                    getattr(translator, function))}
        if saved is not None:
            references["saved_model_identical"] = (
                f"the SavedModel's {function}", getattr(saved, function))
        for key, (reference, search) in references.items():
            timer = time.perf_counter()
            rows, scores = _run_batches(search, ids, batch_size)
            if key == "identical":
                report["tensorflow_seconds"][mode] = (
                    time.perf_counter() - timer)
            # Equal scores count as 0 apart, -inf (an empty beam) too.
            differences = np.where(onnx_scores == scores, 0.0,
                                   np.abs(onnx_scores - scores))
            report["max_score_difference"][mode] = max(
                report["max_score_difference"].get(mode, 0.0),
                float(np.max(differences)))
            report[key][mode] = 0
            for row, difference in enumerate(differences):
                if onnx_rows[row] == rows[row] and (
                        difference <= score_tolerance):
                    report[key][mode] += 1
                    continue
                text = "" if texts is None else f" ({texts[row]!r})"
                message = (
                    f"ONNX graph {name!r} differs from {reference} on "
                    f"sentence {row}{text}: onnxruntime gives ids "
                    f"{onnx_rows[row]} with score {onnx_scores[row]:.6f}, "
                    f"TensorFlow ids {rows[row]} with score "
                    f"{scores[row]:.6f} (score_tolerance={score_tolerance})")
                if strict:
                    raise ValueError(message)
                report["mismatches"].append(message)
    return report


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


def _verification_ids(translator, texts, source_ids):
    """Returns (ids int32 (N, S), texts or None) to verify with."""
    if texts is not None and source_ids is not None:
        raise ValueError(
            "Pass `texts` or `source_ids`, not both. Received: "
            f"texts={texts!r:.60}, source_ids={source_ids!r:.60}")
    if source_ids is None:
        texts = default_texts(translator) if texts is None else texts
        texts = _check_texts(texts)
        if not texts:
            raise ValueError("`texts` must not be empty. Received: texts=[]")
        ids = translator.source_ids(tf.constant(texts, tf.string))
        return np.asarray(ids, np.int32), texts
    ids = np.asarray(source_ids)
    if ids.ndim != 2 or ids.shape[0] == 0 or not np.issubdtype(
            ids.dtype, np.integer):
        raise ValueError(
            "`source_ids` must be a non-empty 2-D array of integer ids. "
            f"Received: source_ids with shape {ids.shape} and dtype "
            f"{ids.dtype}")
    return ids.astype(np.int32), None
