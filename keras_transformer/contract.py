"""The runtime contract: what every runtime of a trained model agrees on.

Pure Python (no TensorFlow, Keras nor onnxruntime), imported by the
TensorFlow `Translator`, every export (SavedModel, ONNX, CTranslate2), the
runtimes that run without TensorFlow, the benchmarks and the CLI. Each
name here is defined nowhere else (`tests/test_contracts.py` checks it):

- the files of a run directory and of each export (`RUN_FILES`,
  `SOURCE_MODEL`, `TARGET_MODEL`, `ONNX_MANIFEST`, ...);
- the search defaults and `SearchSettings` (paper §6.1);
- the GNMT length penalty (`gnmt_penalty`, `LENGTH_PENALTY_OFFSET`) and the
  output limit (`output_limit`): plain-int forms of the rules the searches
  apply to tensors;
- the manifest an ONNX or CTranslate2 export writes beside its model
  (`make_manifest`, `read_manifest`: one schema, the same keys for the
  same facts, older export folders upgraded on read);
- the thresholds an export's verification holds it to.

The input rules, the same in every runtime, each at its own entry point
(raw onnxruntime sessions and SavedModel signatures included):

- a source longer than `max_source_tokens` tokens is truncated to its first
  `max_source_tokens` (by default the model's source length - 1, leaving
  room for `[END]`);
- the output has at most `output_limit(...)` tokens, `[END]` included:
  `max_output_tokens` when set, else the longest source of the batch
  (`[END]` included) + `extra_length`; never more than the model's target
  length, never less than 1;
- with `min_length` m, `[END]` is not generated before m tokens; with
  `no_repeat_ngram_size` n, no n-gram of tokens appears twice in an
  output;
- a text with no token (empty, or only whitespace of any kind) translates
  to "" with score 0.0; at the token level, a row with no token besides
  `[END]` (a batch with no columns included) gives no target token and
  score 0.0;
- invalid UTF-8 bytes become U+FFFD (the tokenizer's rule);
- an empty batch gives an empty batch;
- token-level entry points reject ids outside `[0, source vocabulary
  size)` with an error naming `source_ids`;
- a tokenizer id at or above the model's vocabulary size reads as `[UNK]`
  (`known_token_ids`). A SentencePiece model may hold more pieces than the
  model has ids: an imported Marian vocabulary keeps, after the model's
  ids, the pieces its vocabulary lacks, so that text segments as before
  while those pieces read as `[UNK]`, as Marian's tokenizer reads them.
  The model file records the size (its `trainer_spec.vocab_size`,
  `text.sentencepiece_model.model_vocab_size`); exports pass it on as
  `source_vocab_size`. With every model the package learns, the size is
  the number of pieces and the rule never applies.
"""

import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

from keras_transformer.checks import (
    check_choice,
    check_fields,
    check_float,
    check_int,
)
from keras_transformer.config import TASKS
from keras_transformer.text import special_tokens

# -- files -------------------------------------------------------------------

# A trained run directory (`keras_transformer.run_directory.RunDirectory`).
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
HISTORY = "history.json"
METRICS = "metrics.json"
SAMPLES = "samples.txt"
# The SentencePiece models: in a run directory and beside every export.
SOURCE_MODEL = "source.model"
TARGET_MODEL = "target.model"

# The SavedModel's signatures (beam, greedy, token level, and beam and
# greedy with their search compiled by XLA: the same outputs as
# `serving_default` and `translate_greedy`).
SAVED_MODEL_SIGNATURES = ("serving_default", "translate_greedy",
                          "translate_tokens", "translate_xla",
                          "translate_greedy_xla")
# The searches an export holds.
SEARCH_MODES = ("beam", "greedy")
# An ONNX export directory.
ONNX_MANIFEST = "onnx_config.json"
ONNX_FORMAT = "keras-transformer-onnx"
ONNX_GRAPHS = {"beam": "beam.onnx", "greedy": "greedy.onnx"}
ONNX_TEXT_GRAPHS = {"beam": "beam_text.onnx", "greedy": "greedy_text.onnx"}
ONNX_BEAM_OP_GRAPH = "beam_ort.onnx"
# The operator sets a token graph may use (`onnx_config.json`'s
# "operators"): onnxruntime's fused `com.microsoft` attention in the
# greedy search's decoder step (the default; only onnxruntime runs it), or
# standard ONNX operators alone (onnxruntime-web, other engines).
# Manifests written before the choice existed hold standard graphs.
ONNX_OPERATORS = ("onnxruntime", "standard")
TOKEN_INPUTS = ("source_ids",)
TOKEN_OUTPUTS = ("target_ids", "score")
TEXT_INPUTS = ("text",)
TEXT_OUTPUTS = ("translation", "score")
# A CTranslate2 export directory (CTranslate2's own files, plus these).
CTRANSLATE2_MANIFEST = "keras_transformer.json"
CTRANSLATE2_FORMAT = "keras-transformer-ctranslate2"

# -- verification thresholds -------------------------------------------------

# The largest score difference between two runtimes on the same ids
# (float32; the searches sum up to a few hundred log-probabilities).
SCORE_TOLERANCE = 1e-3
# A SavedModel runs the Translator's own TensorFlow graph in another
# process: only float32 round-off may differ.
SAVED_MODEL_SCORE_TOLERANCE = 1e-4
# The largest teacher-forced log-probability difference of a converted
# model (CTranslate2) from the Keras model.
LOG_PROB_TOLERANCE = 1e-3
# The share of sentences a quantized ONNX export, or onnxruntime's
# BeamSearch op (another length penalty), must translate as the float32
# Translator does. Rounding any group of weights to int8 changed 5-10% of
# a real model's translations, near-ties, with BLEU unchanged (within 0.3;
# benchmarks/RESULTS.md, "int8 ONNX"); float16 weights changed 0.1-0.3%.
# A broken quantization agrees on far fewer.
QUANTIZED_MIN_AGREEMENT = {"int8": 0.8, "float16": 0.95}
INT8_MIN_AGREEMENT = QUANTIZED_MIN_AGREEMENT["int8"]
BEAM_OP_MIN_AGREEMENT = 0.95

# Section 6.1 of the paper: "beam search with a beam size of 4 and length
# penalty alpha = 0.6 [...] maximum output length [...] input length + 50".
DEFAULT_BEAM_SIZE = 4
DEFAULT_LENGTH_PENALTY = 0.6
DEFAULT_EXTRA_LENGTH = 50
# GNMT length penalty lp(|Y|) = ((5 + |Y|) / 6) ** alpha, Wu et al. (2016),
# equation 14; |Y| counts `[END]`.
LENGTH_PENALTY_OFFSET = 5.0
LENGTH_PENALTY_DIVISOR = LENGTH_PENALTY_OFFSET + 1.0
# Summaries: no repeated n-gram of tokens (pieces), and a length penalty,
# both chosen on the Debian validation split (RESULTS.md,
# "Summarization"): alpha 1.5 gave the best ROUGE-1/2/L of 0.6, 1.0, 1.5,
# and blocking repeated bigrams beat trigrams on all three (+0.35 / +0.06
# / +0.18), stopping runs such as "Information Information Information".
SUMMARIZATION_NO_REPEAT_NGRAM_SIZE = 2
SUMMARIZATION_LENGTH_PENALTY = 1.5


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How a trained model decodes: the paper's defaults (§6.1).

    Args:
        beam_size: int >= 1, hypotheses kept per source; 1 is greedy
            search. Defaults to 4.
        length_penalty: float >= 0, the GNMT exponent alpha; 0 ranks by
            log-probability. Defaults to 0.6.
        extra_length: int >= 0, the output may be this many tokens longer
            than the source ("input length + 50"). Defaults to 50.
        max_source_tokens: int >= 1 or None, sources are truncated to this
            many tokens before `[END]` is added; None means the model's
            source length - 1. Defaults to None.
        max_output_tokens: int >= 1 or None, an absolute maximum output
            length (`[END]` included) that replaces "source + extra_length"
            (for summaries, whose length does not follow the source's).
            Capped at the model's target length. Defaults to None.
        min_length: int >= 0, `[END]` is not generated before this many
            tokens. Defaults to 0.
        no_repeat_ngram_size: int >= 0, no n-gram of this many tokens is
            generated twice in one output; 0 disables the rule. Defaults
            to 0.

    Example:
    >>> SearchSettings(beam_size=1).to_dict()["beam_size"]
    1
    """

    beam_size: int = DEFAULT_BEAM_SIZE
    length_penalty: float = DEFAULT_LENGTH_PENALTY
    extra_length: int = DEFAULT_EXTRA_LENGTH
    max_source_tokens: int | None = None
    max_output_tokens: int | None = None
    min_length: int = 0
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        check_int("beam_size", self.beam_size, 1)
        object.__setattr__(self, "length_penalty", check_float(
            "length_penalty", self.length_penalty, 0.0))
        check_int("extra_length", self.extra_length, 0)
        check_int("max_source_tokens", self.max_source_tokens, 1,
                  optional=True)
        check_int("max_output_tokens", self.max_output_tokens, 1,
                  optional=True)
        check_int("min_length", self.min_length, 0)
        check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, 0)

    @classmethod
    def for_config(cls, config, **overrides: Any) -> "SearchSettings":
        """The default settings of a model's task, `overrides` replacing them.

        Translation: the paper's (§6.1). Summarization: the same beam, a
        length penalty of 1.5 (short summaries otherwise win), no repeated
        bigram of tokens, and the output bounded by the model's target length
        instead of "source + 50".

        Args:
            config: the model's `TransformerConfig` (its `task` and
                `target_length`).
            **overrides: `SearchSettings` fields.

        Example:
        >>> config = TransformerConfig.from_preset("summarization")
        >>> SearchSettings.for_config(config).max_output_tokens
        128
        """
        check_choice("task", config.task, TASKS)
        defaults = {}
        if config.task == "summarization":
            defaults = {"max_output_tokens": config.target_length,
                        "length_penalty": SUMMARIZATION_LENGTH_PENALTY,
                        "no_repeat_ngram_size":
                            SUMMARIZATION_NO_REPEAT_NGRAM_SIZE}
        return cls(**{**defaults, **overrides})

    def source_limit(self, max_length: int) -> int:
        """Tokens kept of a source for a model of `max_length` positions."""
        limit = max_length - 1
        if self.max_source_tokens is not None:
            limit = min(limit, self.max_source_tokens)
        return limit

    def output_limit(self, max_length: int) -> int | None:
        """The absolute output bound for a model of `max_length` target
        positions, or None when the output follows the source length."""
        if self.max_output_tokens is None:
            return None
        return min(self.max_output_tokens, max_length)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SearchSettings":
        check_fields("search settings", values,
                     (field.name for field in dataclasses.fields(cls)))
        return cls(**values)


# -- rules as plain numbers -----------------------------------------------

def gnmt_penalty(length: int, alpha: float) -> float:
    """lp(|Y|) = ((5 + |Y|) / 6) ** alpha, |Y| counting `[END]`.

    The plain-float form of `keras_transformer.decoding.rules
    .gnmt_length_penalty` (tensors), for runtimes without TensorFlow.

    Example:
    >>> gnmt_penalty(1, 0.6)
    1.0
    """
    return ((LENGTH_PENALTY_OFFSET + length) / LENGTH_PENALTY_DIVISOR
            ) ** alpha


def output_limit(longest_source: int, target_limit: int,
                 extra_length: int = DEFAULT_EXTRA_LENGTH,
                 max_output_tokens: int | None = None) -> int:
    """The most tokens a search generates for a batch, `[END]` included.

    `max_output_tokens` when given, else the longest source of the batch
    (`[END]` included) + `extra_length` (paper §6.1: "input length + 50");
    capped at the model's `target_limit`, at least 1. The searches apply
    the same rule to tensors (`keras_transformer.decoding.rules
    .max_output_length`).

    Args:
        longest_source: int >= 0, tokens of the longest source row.
        target_limit: int >= 1, the model's target length.
        extra_length: int >= 0. Defaults to 50.
        max_output_tokens: int >= 1 or None, an absolute limit.

    Example:
    >>> output_limit(7, 128)
    57
    >>> output_limit(7, 128, max_output_tokens=20)
    20
    """
    check_int("longest_source", longest_source, 0)
    check_int("target_limit", target_limit, 1)
    check_int("extra_length", extra_length, 0)
    check_int("max_output_tokens", max_output_tokens, 1, optional=True)
    if max_output_tokens is not None:
        return max(1, min(max_output_tokens, target_limit))
    return max(1, min(longest_source + extra_length, target_limit))


def known_token_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    """Tokenizer ids as the model reads them: ids at or above `vocab_size`
    become `[UNK]`.

    The rule every tokenization runtime applies (TensorFlow's
    `SentencePieceTokenizer`, the ONNX text graphs, the web page's
    translator.js), here in plain ints.

    Args:
        ids: ints >= 0, a SentencePiece model's ids.
        vocab_size: int >= 1, the model's vocabulary size.

    Example:
    >>> known_token_ids([5, 7, 9], 8)
    [5, 7, 1]
    """
    check_int("vocab_size", vocab_size, 1)
    return [token_id if token_id < vocab_size else special_tokens.UNK_ID
            for token_id in ids]


# -- export manifests ----------------------------------------------------

# Version 3: one schema for ONNX and CTranslate2. Version 2 (ONNX) said
# `quantization: null` for float32; version 1 (CTranslate2) said `search`
# for `search_settings` and `max_length` for `target_limit`.
MANIFEST_VERSION = 3


def make_manifest(format: str, *, max_length: int, target_limit: int,
                  max_source_tokens: int, source_vocab_size: int,
                  search_settings: "SearchSettings",
                  quantization: str | None = None,
                  **fields: Any) -> dict[str, Any]:
    """The manifest an export writes beside its model, as a dict.

    Args:
        format: `ONNX_FORMAT` or `CTRANSLATE2_FORMAT`.
        max_length: int, the model's position table length.
        target_limit: int, the most tokens generated (`[END]` included).
        max_source_tokens: int, tokens kept of a source before `[END]`.
        source_vocab_size: int, token ids are below it.
        search_settings: the `SearchSettings` the export runs with.
        quantization: None (float32 weights), "int8" or "float16".
        **fields: the runtime's own keys (its graph files, opset, ...).
    """
    check_choice("format", format, (ONNX_FORMAT, CTRANSLATE2_FORMAT))
    tokens = {}
    for name in ("pad", "unk", "start", "end"):
        tokens[f"{name}_id"] = getattr(special_tokens, f"{name.upper()}_ID")
        tokens[f"{name}_token"] = getattr(special_tokens,
                                          f"{name.upper()}_TOKEN")
    return {"format": format, "version": MANIFEST_VERSION,
            "source_model": SOURCE_MODEL, "target_model": TARGET_MODEL,
            **tokens, "max_length": int(max_length),
            "target_limit": int(target_limit),
            "max_source_tokens": int(max_source_tokens),
            "source_vocab_size": int(source_vocab_size),
            "search_settings": search_settings.to_dict(),
            "quantization": quantization or "float32", **fields}


def write_manifest(directory: str | os.PathLike, name: str,
                   manifest: dict[str, Any]) -> str:
    """Writes `manifest` as `directory/name` (JSON); returns the path."""
    path = os.path.join(os.fspath(directory), name)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2, sort_keys=True)
    return path


def read_manifest(directory: str | os.PathLike, name: str, format: str,
                  argument: str = "directory") -> dict[str, Any]:
    """Reads and upgrades the manifest of an export directory.

    Args:
        directory: an export directory.
        name: the manifest's file name (`ONNX_MANIFEST`, ...).
        format: the format it must declare.
        argument: the caller's argument name, for errors.

    Returns:
        The manifest in the current schema (`MANIFEST_VERSION`).

    Raises:
        ValueError: no such file, or one of another format, naming
            `argument`.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ValueError(
            f"`{argument}` must be a directory written by this package's "
            f"export, with {name}. Received: {argument}={directory!r}")
    with open(path, encoding="utf-8") as file:
        manifest = json.load(file)
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != format:
        raise ValueError(
            f"`{argument}` holds a {name} of another format ({found!r}, "
            f"expected {format!r}). Received: {argument}={directory!r}")
    return _upgrade(manifest)


def _upgrade(manifest: dict[str, Any]) -> dict[str, Any]:
    """An older manifest in the current schema's keys."""
    manifest = dict(manifest)
    if "search" in manifest:  # CTranslate2, version 1.
        manifest["search_settings"] = manifest.pop("search")
        manifest.setdefault("target_limit", manifest["max_length"])
    if manifest.get("quantization") is None:  # ONNX, version 2.
        manifest["quantization"] = "float32"
    if manifest.get("format") == ONNX_FORMAT:  # Before the choice.
        manifest.setdefault("operators", "standard")
    for name in ("pad", "unk", "start", "end"):
        manifest.setdefault(f"{name}_token", getattr(
            special_tokens, f"{name.upper()}_TOKEN"))
    manifest.setdefault("version", 1)
    return manifest
