"""Subword tokenization: `SubwordTokenizer` over tensorflow-text WordPiece.

Reserved ids: 0 `[PAD]`, 1 `[UNK]`, 2 `[START]`, 3 `[END]`.
"""

from keras_transformer.text.tokenizer import SubwordTokenizer
from keras_transformer.text.vocabulary import (
    END_ID,
    PAD_ID,
    RESERVED_TOKENS,
    START_ID,
    UNK_ID,
    build_vocabulary,
)

__all__ = [
    "END_ID",
    "PAD_ID",
    "RESERVED_TOKENS",
    "START_ID",
    "SubwordTokenizer",
    "UNK_ID",
    "build_vocabulary",
]
