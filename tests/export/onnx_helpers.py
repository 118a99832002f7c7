"""Helpers shared by the ONNX export tests (`tests/export/test_onnx_*.py`)."""

import types

import numpy as np

# Bytes that are not UTF-8: a bad lead byte, a truncated sequence, an
# encoded surrogate, a cut-off 3-byte and a cut-off 4-byte character.
INVALID_UTF8 = b"\xff\xfe nine four \xc3( \xed\xa0\x80 \xe2\x82 \xf0\x9f\x98"
# The files of a default export (both searches, their text graphs).
ALL_FILES = ["beam.onnx", "beam_text.onnx", "greedy.onnx",
             "greedy_text.onnx", "onnx_config.json", "source.model",
             "target.model"]


WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven",
         "eight", "nine")


def reverse_task(num_pairs, seed):
    """Sentences of 1-6 digit words and the same words in reverse order."""
    rng = np.random.default_rng(seed)
    sources = [" ".join(WORDS[i] for i in rng.integers(0, 10, size=n))
               for n in rng.integers(1, 7, size=num_pairs)]
    return sources, [" ".join(s.split()[::-1]) for s in sources]


def padded(rows, width):
    """Rows of ids as an int32 array, padded with 0 to `width`."""
    out = np.zeros([len(rows), width], np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def dims(value):
    """The named or sized dimensions of an ONNX value's tensor type."""
    return [d.dim_param or d.dim_value for d in
            value.type.tensor_type.shape.dim]


def fake_translator(**kwargs):
    """An object with a Translator's attributes (all None) and tokenizers
    that look like SentencePiece ones: enough for the argument checks."""
    tokenizer = types.SimpleNamespace(model_proto=b"spm")
    names = ("translate_tokens", "translate_tokens_greedy", "translate",
             "translate_greedy", "source_ids", "model", "settings",
             "source_limit", "max_length", "source_vocab_size")
    return types.SimpleNamespace(
        **dict.fromkeys(names), source_tokenizer=tokenizer,
        target_tokenizer=tokenizer, **kwargs)
