"""The inference rules and search settings, defined once for every runtime.

Pure Python: the Translator, every export (SavedModel, ONNX, CTranslate2),
the runtimes that run without TensorFlow and the CLI read them from here
(the exports write them into their own config files).

The input rules, the same in every runtime:

- a source longer than `max_source_tokens` tokens is truncated to its first
  `max_source_tokens` (by default the model's source length - 1, leaving
  room for `[END]`);
- the output has at most `max_output_tokens` tokens, `[END]` included, or,
  when that is None, the longest source of the batch (`[END]` included)
  + `extra_length`; never more than the model's target length;
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
  size)` with an error naming `source_ids`.
"""

import dataclasses
from typing import Any

from keras_transformer.checks import check_choice, check_float, check_int
from keras_transformer.config import TASKS

# Section 6.1 of the paper: "beam search with a beam size of 4 and length
# penalty alpha = 0.6 [...] maximum output length [...] input length + 50".
DEFAULT_BEAM_SIZE = 4
DEFAULT_LENGTH_PENALTY = 0.6
DEFAULT_EXTRA_LENGTH = 50
# Summaries: the usual cure for repeated phrases (trigram blocking).
SUMMARIZATION_NO_REPEAT_NGRAM_SIZE = 3


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

        Translation: the paper's (§6.1). Summarization: the same beam and
        length penalty, trigram blocking, and the output bounded by the
        model's target length instead of "source + 50".

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
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown search settings {unknown}; known: {sorted(known)}. "
                f"Received: values={values!r}")
        return cls(**values)
