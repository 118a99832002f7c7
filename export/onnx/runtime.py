"""Run an ONNX export without TensorFlow: numpy, onnxruntime, extensions.

`export.onnx.export_onnx` writes a directory that this module runs with
only `numpy`, `onnxruntime` and `onnxruntime-extensions` (it imports no
TensorFlow, Keras nor any module of the package that does):

- `beam.onnx`, `greedy.onnx`: token graphs, `source_ids` int32 [batch,
  source_length] -> `target_ids` int32 [batch, target_length], `score`
  float32 [batch];
- `beam_text.onnx`, `greedy_text.onnx`: text graphs, `text` string [batch]
  -> `translation` string [batch], `score` float32 [batch]: the token graph
  between onnxruntime-extensions' SentencePiece tokenizer and decoder
  (`export.onnx.text_graph`);
- `source.model`, `target.model`: the SentencePiece models;
- `onnx_config.json` (`contract.ONNX_MANIFEST`): the graphs, reserved ids,
  limits and search settings (`contract.make_manifest`).

`OnnxTranslator` translates text with the text graphs and token ids with
the token graphs. Inputs follow `keras_transformer.contract`'s rules, as
the TensorFlow `Translator` does:

- a source longer than `max_source_tokens` tokens is truncated to its first
  `max_source_tokens` (plus `[END]`);
- a text with no token (empty, or only whitespace of any kind) translates
  to "" with score 0.0; a row of ids with no token besides `[END]`, and a
  batch with no columns, gives no target token and score 0.0;
- invalid UTF-8 bytes become U+FFFD inside SentencePiece, one per byte,
  as in TensorFlow: bytes reach the graph as they are (a str as UTF-8, a
  lone surrogate as the byte it escapes, see `text_feed`); characters
  without a piece are spelled in byte pieces;
- a SentencePiece id at or above the source vocabulary size (a piece
  beyond the model's ids, in an imported Marian model) reads as `[UNK]`
  (`contract.known_token_ids`, inside the text graphs);
- an empty batch gives an empty batch;
- ids outside [0, source vocabulary size) are a ValueError naming
  `source_ids`.

One difference remains: the text graphs' SentencePiece op reads a text up
to its first NUL character (TensorFlow reads all of it).

onnxruntime-extensions crashes (segfault) a process that imported
TensorFlow before the extensions library was registered: `make_session`
raises RuntimeError instead of registering it in such a process.
"""

import os
import sys
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from keras_transformer.checks import check_texts
from keras_transformer.contract import (
    ONNX_FORMAT,
    ONNX_MANIFEST,
    TEXT_OUTPUTS,
    TOKEN_OUTPUTS,
    read_manifest,
)

# Version 2 exports (token and text graphs) load too.
_READABLE_VERSIONS = (2, 3)


def read_config(onnx_dir: str | os.PathLike) -> dict:
    """Reads the manifest (`ONNX_MANIFEST`) of an ONNX export directory.

    Args:
        onnx_dir: a directory written by `export.onnx.export_onnx`.

    Returns:
        The manifest, in the current schema (`contract.read_manifest`).

    Raises:
        ValueError: the directory has no such file, or one of another
            format.
    """
    return read_manifest(onnx_dir, ONNX_MANIFEST, ONNX_FORMAT, "onnx_dir")


def make_session(path: str | os.PathLike,
                 providers: Sequence[str] | None = None,
                 extensions: bool = False) -> ort.InferenceSession:
    """An onnxruntime session, on the CPU unless `providers` are given.

    Args:
        path: path of a `.onnx` file.
        providers: optional list of onnxruntime execution providers.
            Defaults to `["CPUExecutionProvider"]`.
        extensions: bool, register onnxruntime-extensions' custom ops (the
            text graphs need them). Raises RuntimeError if TensorFlow is
            imported: that combination crashes the process. Defaults to
            False.

    Returns:
        An `onnxruntime.InferenceSession`.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3  # Errors only.
    if extensions:
        if sys.modules.get("tensorflow") is not None:
            raise RuntimeError(
                "onnxruntime-extensions crashes a process that has imported "
                "TensorFlow: run the text graphs in a process without "
                f"TensorFlow. Received: path={os.fspath(path)!r}")
        import onnxruntime_extensions

        options.register_custom_ops_library(
            onnxruntime_extensions.get_library_path())
    return ort.InferenceSession(
        os.fspath(path), options,
        providers=list(providers or ["CPUExecutionProvider"]))


def run_search(session: ort.InferenceSession, source_ids) -> dict:
    """Runs one token graph: {"target_ids" int32 (B, L), "score" (B,)}."""
    outputs = session.run(list(TOKEN_OUTPUTS),
                          {"source_ids": np.asarray(source_ids, np.int32)})
    return dict(zip(TOKEN_OUTPUTS, outputs))


def run_text(session: ort.InferenceSession,
             texts: Sequence[str | bytes]) -> dict:
    """Runs one text graph: {"translation" list of str, "score" (B,)}."""
    translation, score = session.run(list(TEXT_OUTPUTS),
                                     {"text": text_feed(texts)})
    return {"translation": [str(t) for t in translation.tolist()],
            "score": score}


def text_feed(texts: Sequence[str | bytes]) -> np.ndarray:
    """The `text` input of a text graph: the texts' bytes, unchanged.

    onnxruntime feeds an object array of str as UTF-8 and a `numpy.bytes_`
    array byte for byte (it turns a bytes object into its repr): texts
    that are all valid UTF-8 go as str, otherwise all go as bytes (a
    fixed-width array, as wide as the longest text), so that SentencePiece
    sees invalid bytes as TensorFlow does. A str with lone surrogates is
    encoded with "surrogateescape" (the bytes Python decoded it from),
    else "surrogatepass".
    """
    data = []
    for text in texts:
        if isinstance(text, str):
            try:
                text = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                text = text.encode("utf-8", "surrogatepass")
        data.append(bytes(text))
    try:
        return np.array([d.decode("utf-8") for d in data], dtype=object)
    except UnicodeDecodeError:
        return np.array(data, dtype=np.bytes_)


class OnnxTranslator:
    """Text in, text out, with an exported ONNX search and onnxruntime.

    Needs only `numpy`, `onnxruntime` and `onnxruntime-extensions`; text
    translation runs in a process that has not imported TensorFlow.

    Args:
        onnx_dir: str, a directory written by `export.onnx.export_onnx`.
        providers: optional list of onnxruntime execution providers.
            Defaults to `["CPUExecutionProvider"]`.

    Attributes:
        config: the export's `onnx_config.json`.
        modes: the searches present, from "beam" and "greedy".
        source_vocab_size: int, ids of `source_ids` are below it.

    Example:
    >>> translator = OnnxTranslator("export/onnx")
    >>> translator(["forty-two", "seven"])
    [('zweiundvierzig', -0.41), ('sieben', -0.12)]
    """

    def __init__(self, onnx_dir: str | os.PathLike,
                 providers: Sequence[str] | None = None):
        self.onnx_dir = os.fspath(onnx_dir)
        self.config = read_config(self.onnx_dir)
        graphs = self.config.get("graphs") or {}
        text_graphs = self.config.get("text_graphs")
        if self.config.get("version") not in _READABLE_VERSIONS or (
                not isinstance(text_graphs, dict)
                or set(text_graphs) != set(graphs)):
            raise ValueError(
                "`onnx_dir` must hold a version-2 or later export (token and "
                "text graphs); export it again with this package. Received: "
                f"onnx_dir={self.onnx_dir!r} (version "
                f"{self.config.get('version')!r})")
        self.modes = tuple(sorted(graphs))
        for mode in self.modes:
            for kind, name in (("", graphs[mode]),
                               (" text", text_graphs[mode])):
                if not os.path.isfile(self._path(name)):
                    raise ValueError(
                        f"`onnx_dir` lacks the {mode}{kind} graph {name!r}. "
                        f"Received: onnx_dir={self.onnx_dir!r}")
        self.source_vocab_size = int(self.config["source_vocab_size"])
        self.max_length = int(self.config["max_length"])
        self._providers = providers
        self._sessions = {}

    def _path(self, name):
        return os.path.join(self.onnx_dir, name)

    def _check_mode(self, mode):
        if not isinstance(mode, str) or mode not in self.modes:
            raise ValueError(
                f"`mode` must be one of the exported searches {self.modes}. "
                f"Received: mode={mode!r}")

    def session(self, mode: str = "beam",
                text: bool = False) -> ort.InferenceSession:
        """The session of the `mode` token (or text) graph, made once."""
        self._check_mode(mode)
        key = (mode, bool(text))
        if key not in self._sessions:
            files = self.config["text_graphs" if text else "graphs"]
            self._sessions[key] = make_session(
                self._path(files[mode]), self._providers, extensions=text)
        return self._sessions[key]

    def translate_tokens(self, source_ids, mode: str = "beam") -> dict:
        """Runs the `mode` token graph on int ids (B, S).

        Args:
            source_ids: integer array (B, S), rows as
                `Translator.source_ids` makes them (tokens, `[END]`, pad).
            mode: "beam" or "greedy". Defaults to "beam".

        Returns:
            {"target_ids": int32 (B, L), "score": float32 (B,)}.
        """
        self._check_mode(mode)
        source_ids = np.asarray(source_ids)
        integer = np.issubdtype(source_ids.dtype, np.integer)
        if source_ids.ndim != 2 or not (integer or source_ids.size == 0):
            raise ValueError(
                "`source_ids` must be a 2-D array of integer ids. Received: "
                f"source_ids with shape {source_ids.shape} and dtype "
                f"{source_ids.dtype}")
        if integer:
            bad = source_ids[(source_ids < 0)
                             | (source_ids >= self.source_vocab_size)]
            if bad.size:
                raise ValueError(
                    f"`source_ids` must be token ids in [0, "
                    f"{self.source_vocab_size}), the source vocabulary. "
                    f"Received: source_ids containing {bad[0]}")
        rows, columns = source_ids.shape
        session = self.session(mode)
        if rows == 0 or columns == 0:  # No token: the empty-input rule.
            return {"target_ids": np.zeros([rows, 0], np.int32),
                    "score": np.zeros([rows], np.float32)}
        return run_search(session, source_ids)

    def __call__(self, texts: str | bytes | Sequence[str | bytes],
                 greedy: bool = False):
        """Translates a text or a list of texts with the text graph.

        Args:
            texts: a str or bytes (invalid UTF-8 is read as TensorFlow
                reads it), or a sequence of them.
            greedy: bool, greedy search instead of beam search.

        Returns:
            For one text, a pair `(translation, score)`; for a sequence,
            a list of such pairs.
        """
        if not isinstance(greedy, bool):
            raise TypeError(
                f"`greedy` must be a bool. Received: greedy={greedy!r}")
        single = isinstance(texts, (str, bytes))
        texts = check_texts([texts] if single else texts)
        mode = "greedy" if greedy else "beam"
        self._check_mode(mode)
        if not texts:
            return []
        result = run_text(self.session(mode, text=True), texts)
        pairs = [(translation, float(score)) for translation, score in
                 zip(result["translation"], result["score"].tolist())]
        return pairs[0] if single else pairs
