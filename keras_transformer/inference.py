"""The inference rules and search settings, defined once for every runtime.

Pure Python: the Translator, every export (SavedModel, ONNX, CTranslate2),
the runtimes that run without TensorFlow and the CLI read them from here
(the exports write them into their own config files).

The input rules, the same in every runtime:

- a source longer than `max_source_tokens` tokens is truncated to its first
  `max_source_tokens` (by default `max_length - 1` of the model, leaving
  room for `[END]`);
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

from keras_transformer.checks import check_float, check_int

# Section 6.1 of the paper: "beam search with a beam size of 4 and length
# penalty alpha = 0.6 [...] maximum output length [...] input length + 50".
DEFAULT_BEAM_SIZE = 4
DEFAULT_LENGTH_PENALTY = 0.6
DEFAULT_EXTRA_LENGTH = 50


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
            `max_length - 1`. Defaults to None.

    Example:
    >>> SearchSettings(beam_size=1).to_dict()["beam_size"]
    1
    """

    beam_size: int = DEFAULT_BEAM_SIZE
    length_penalty: float = DEFAULT_LENGTH_PENALTY
    extra_length: int = DEFAULT_EXTRA_LENGTH
    max_source_tokens: int | None = None

    def __post_init__(self):
        check_int("beam_size", self.beam_size, 1)
        object.__setattr__(self, "length_penalty", check_float(
            "length_penalty", self.length_penalty, 0.0))
        check_int("extra_length", self.extra_length, 0)
        check_int("max_source_tokens", self.max_source_tokens, 1,
                  optional=True)

    def source_limit(self, max_length: int) -> int:
        """Tokens kept of a source for a model of `max_length` positions."""
        limit = max_length - 1
        if self.max_source_tokens is not None:
            limit = min(limit, self.max_source_tokens)
        return limit

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
