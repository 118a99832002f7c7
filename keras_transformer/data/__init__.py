"""Corpora and the tf.data input pipeline.

- `ParallelCorpus`, `CorpusStats`: what every reader returns.
- `read_tsv`, `read_jsonl`, `read_aligned`, `load_tfds`, `load_corpus`:
  readers.
- `bundled_corpus`, `write_bundled_tsv`: the English -> German/French
  number corpus, generated offline.
- `debian_corpus`: the bundled Debian package-description summarization
  corpus (description -> synopsis).
- `encode_pairs`, `make_dataset`: token ids, length caps and batches of
  `({"encoder_inputs": (B, S), "decoder_inputs": (B, T)}, labels (B, T))`.
"""

from keras_transformer.data.corpora import (
    CorpusStats,
    ParallelCorpus,
    corpus_from_pairs,
    read_aligned,
    read_jsonl,
    read_tsv,
)
from keras_transformer.data.debian import debian_corpus
from keras_transformer.data.encoding import (
    EncodedPairs,
    LengthStats,
    encode_pairs,
)
from keras_transformer.data.loader import load_corpus
from keras_transformer.data.numbers import (
    bundled_corpus,
    number_to_words,
    split_numbers,
    write_bundled_tsv,
)
from keras_transformer.data.pipeline import (
    default_bucket_lengths,
    make_dataset,
)
from keras_transformer.data.tfds_reader import load_tfds
from keras_transformer.text.special_tokens import (
    END_ID,
    PAD_ID,
    START_ID,
    UNK_ID,
)

__all__ = [
    "END_ID",
    "PAD_ID",
    "START_ID",
    "UNK_ID",
    "CorpusStats",
    "EncodedPairs",
    "LengthStats",
    "ParallelCorpus",
    "bundled_corpus",
    "corpus_from_pairs",
    "debian_corpus",
    "default_bucket_lengths",
    "encode_pairs",
    "load_corpus",
    "load_tfds",
    "make_dataset",
    "number_to_words",
    "read_aligned",
    "read_jsonl",
    "read_tsv",
    "split_numbers",
    "write_bundled_tsv",
]
