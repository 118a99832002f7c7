"""Subword tokenization with SentencePiece.

Vocabularies are learned with the `sentencepiece` library
(`learn_tokenizer_models`: unigram by default, BPE as an option; one joint
vocabulary by default; byte fallback, so no character is ever unknown) and
run inside TensorFlow graphs with tensorflow-text's SentencePiece ops
(`SentencePieceTokenizer`). The same `.model` files run in onnxruntime-
extensions and with the `sentencepiece` package (ONNX and CTranslate2
exports).

Reserved ids, defined once in `special_tokens`: 0 `[PAD]`, 1 `[UNK]`,
2 `[START]`, 3 `[END]`. Importing this package imports neither TensorFlow
nor sentencepiece; the names below load their module on first use.
"""

from keras_transformer._lazy import lazy_attributes
from keras_transformer.text.special_tokens import (
    END_ID,
    END_TOKEN,
    PAD_ID,
    PAD_TOKEN,
    RESERVED_TOKENS,
    START_ID,
    START_TOKEN,
    UNK_ID,
    UNK_TOKEN,
)

_LAZY_NAMES = {
    "SentencePieceTokenizer": ".sentencepiece_tokenizer",
    "learn_sentencepiece": ".sentencepiece_model",
    "learn_tokenizer_models": ".sentencepiece_model",
    "model_info": ".sentencepiece_model",
    "model_vocab_size": ".sentencepiece_model",
    "with_normalization": ".sentencepiece_model",
}

__all__ = [
    "END_ID", "END_TOKEN", "PAD_ID", "PAD_TOKEN", "RESERVED_TOKENS",
    "START_ID", "START_TOKEN", "UNK_ID", "UNK_TOKEN", *_LAZY_NAMES,
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)
