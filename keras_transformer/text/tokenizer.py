"""SubwordTokenizer: lossless WordPiece tokenization inside TF graphs."""

import os
from collections.abc import Iterable, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

from keras_transformer.text import vocabulary as vocab_lib
from keras_transformer.text.vocabulary import (
    END_ID,
    MAX_BYTES_PER_FRAGMENT,
    RESERVED_TOKENS,
    SUFFIX_INDICATOR,
    UNK_ID,
    UNK_TOKEN,
    WORD_MARKER,
)

_STRINGS_SPEC = tf.TensorSpec([None], tf.string)
_ID_SPECS = (
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.int64),
    tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
    tf.RaggedTensorSpec([None, None], tf.int64, ragged_rank=1),
)


class SubwordTokenizer(tf.Module):
    """WordPiece tokenizer whose detokenization gives back the text.

    Text is normalized (`normalize`), each word is marked with "▁" (U+2581)
    and split into fragments at spaces, punctuation, symbols and CJK
    characters, and each fragment is cut into WordPiece tokens (continuation
    pieces start with "##"); see `keras_transformer.text.vocabulary` for the
    exact rules. Because word boundaries travel inside the tokens,
    `detokenize(tokenize(s)) == normalize(s)` for every string whose
    characters are all in the vocabulary. An unknown character becomes one
    `[UNK]` token (id 1) and detokenizes to the text "[UNK]".

    Ids 0-3 are reserved: `[PAD]`, `[UNK]`, `[START]`, `[END]`. `tokenize`
    adds no `[START]`/`[END]`; the data pipeline does. All methods below are
    `tf.function`s that run eagerly, inside other `tf.function`s, in
    `tf.data` and from a SavedModel (`tf.saved_model.save(tokenizer, path)`;
    loading needs only `tensorflow` and `tensorflow_text`). The ops used are
    the legacy `WordpieceTokenizeWithOffsets`, `RegexSplitWithOffsets`,
    `NormalizeUTF8`, core string ops and a `StaticHashTable`, all present in
    TensorFlow Serving's standard build. Pass ids as tensors or NumPy
    arrays: a Python list makes `detokenize`/`lookup` retrace per value.

    Args:
        vocabulary: sequence of str, the tokens in id order; starts with
            `RESERVED_TOKENS`. Usually from `from_corpus` or
            `from_vocabulary_file`.
        lower_case: bool, lower-case text before tokenizing. Defaults to
            `False`.
        strip_accents: bool, remove accents (nonspacing marks). Defaults to
            `False`.
        normalization_form: `"NFKC"` (default) or `"NFC"`, the Unicode
            normalization applied first.
        name: optional str, the module name.

    Call arguments (methods):
        normalize(strings): string [B] -> string [B], the text that
            `detokenize` gives back.
        tokenize(strings): string [B] -> int32 `tf.RaggedTensor` [B, (T)].
        detokenize(ids): int32/int64 [B, T], dense or ragged -> string [B].
            Id 0 and `[START]` are skipped, everything from the first
            `[END]` on is dropped, ids outside the vocabulary count as
            `[UNK]`.
        lookup(ids): int32/int64 [B, T], dense or ragged -> string
            `tf.RaggedTensor` [B, (T)] of tokens (trailing padding of a dense
            input removed), e.g. for attention plots.

    Example:

    >>> tokenizer = SubwordTokenizer.from_corpus(
    ...     ["Hello, world!", "Größe café"], vocab_size=100)
    >>> ids = tokenizer.tokenize(["Hello, world!"])
    >>> tokenizer.detokenize(ids).numpy()
    array([b'Hello, world!'], dtype=object)
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        lower_case: bool = False,
        strip_accents: bool = False,
        normalization_form: str = "NFKC",
        name: str | None = None,
    ):
        vocab_lib.validate_options(
            lower_case, strip_accents, normalization_form
        )
        if isinstance(vocabulary, (str, bytes)) or not isinstance(
            vocabulary, Iterable
        ):
            raise TypeError(
                "`vocabulary` must be a sequence of strings. Received: "
                f"vocabulary={vocabulary!r:.80}"
            )
        vocabulary = list(vocabulary)
        vocab_lib.validate_vocabulary(vocabulary)
        super().__init__(name=name)
        self.lower_case = lower_case
        self.strip_accents = strip_accents
        self.normalization_form = normalization_form
        self._vocabulary = tuple(vocabulary)

        size = len(vocabulary)
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocabulary, tf.string),
                tf.range(size, dtype=tf.int64),
            ),
            default_value=UNK_ID,
        )
        self._wordpiece = tf_text.WordpieceTokenizer(
            self._table,
            suffix_indicator=SUFFIX_INDICATOR,
            max_bytes_per_word=MAX_BYTES_PER_FRAGMENT,
            token_out_type=tf.int32,
            unknown_token=UNK_TOKEN,
            split_unknown_characters=True,
        )
        self._tokens = tf.constant(vocabulary, tf.string)
        self._surfaces = tf.constant(
            [_surface(token) for token in vocabulary], tf.string
        )
        # Trace every id signature now so that a SavedModel has them all.
        for spec in _ID_SPECS:
            self.detokenize.get_concrete_function(spec)
            self.lookup.get_concrete_function(spec)

    @classmethod
    def from_corpus(
        cls,
        corpus: Iterable[str] | tf.data.Dataset,
        vocab_size: int = 8000,
        lower_case: bool = False,
        strip_accents: bool = False,
        normalization_form: str = "NFKC",
    ) -> "SubwordTokenizer":
        """Learns a vocabulary with `build_vocabulary` and wraps it.

        Args:
            corpus: iterable of str or `tf.data.Dataset` of strings.
            vocab_size: int, maximum vocabulary size. Defaults to 8000.
            lower_case: bool. Defaults to `False`.
            strip_accents: bool. Defaults to `False`.
            normalization_form: `"NFKC"` (default) or `"NFC"`.

        Returns:
            A `SubwordTokenizer`.
        """
        vocabulary = vocab_lib.build_vocabulary(
            corpus,
            vocab_size,
            lower_case=lower_case,
            strip_accents=strip_accents,
            normalization_form=normalization_form,
        )
        return cls(
            vocabulary,
            lower_case=lower_case,
            strip_accents=strip_accents,
            normalization_form=normalization_form,
        )

    @classmethod
    def from_vocabulary_file(
        cls, path: str | os.PathLike, **config
    ) -> "SubwordTokenizer":
        """Loads a vocabulary file; `config` is `tokenizer.config`.

        Args:
            path: path of a file written by `save_vocabulary`.
            **config: `lower_case`, `strip_accents`, `normalization_form`.

        Returns:
            A `SubwordTokenizer`.
        """
        return cls(vocab_lib.read_vocabulary_file(os.fspath(path)), **config)

    def save_vocabulary(self, path: str | os.PathLike) -> None:
        """Writes the vocabulary, one token a line, UTF-8."""
        vocab_lib.write_vocabulary_file(self._vocabulary, os.fspath(path))

    @property
    def config(self) -> dict:
        """The options (everything but the vocabulary), JSON-serializable."""
        return {
            "lower_case": self.lower_case,
            "strip_accents": self.strip_accents,
            "normalization_form": self.normalization_form,
        }

    @property
    def vocabulary(self) -> list[str]:
        """The tokens in id order."""
        return list(self._vocabulary)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, reserved ones included."""
        return len(self._vocabulary)

    # AutoGraph is off: no Python control flow depends on tensors, and
    # skipping its conversion of tensorflow-text code halves tracing time.
    @tf.function(input_signature=[_STRINGS_SPEC], autograph=False)
    def normalize(self, strings):
        """string [B] -> the normalized string [B]."""
        return vocab_lib.normalize_text(
            strings,
            self.lower_case,
            self.strip_accents,
            self.normalization_form,
        )

    @tf.function(input_signature=[_STRINGS_SPEC], autograph=False)
    def tokenize(self, strings):
        """string [B] -> int32 `tf.RaggedTensor` [B, (T)]."""
        fragments = vocab_lib.pretokenize(self.normalize(strings))
        # [B, (W), (P)] -> [B, (T)]
        return self._wordpiece.tokenize(fragments).merge_dims(1, 2)

    @tf.function(autograph=False)
    def detokenize(self, ids):
        """int ids [B, T], dense or ragged -> string [B]."""
        ids = self._valid_ids(_to_dense(ids))
        # True from the first [END] on; [PAD] and [START] have empty text.
        ended = tf.cumsum(tf.cast(ids == END_ID, tf.int32), axis=1) > 0
        pieces = tf.where(ended, "", tf.gather(self._surfaces, ids))
        text = tf.strings.reduce_join(pieces, axis=1)  # [B, T] -> [B]
        text = tf.strings.regex_replace(text, WORD_MARKER, " ")
        text = tf.strings.regex_replace(text, " +", " ")
        return tf.strings.regex_replace(text, "^ | $", "")

    @tf.function(autograph=False)
    def lookup(self, ids):
        """int ids [B, T], dense or ragged -> token strings [B, (T)]."""
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(
                tf.convert_to_tensor(ids), padding=0
            )
        ids = ids.with_flat_values(self._valid_ids(ids.flat_values))
        return tf.gather(self._tokens, ids)

    def _valid_ids(self, ids):
        """Maps ids outside [0, V) to [UNK]; returns int32."""
        valid = (ids >= 0) & (ids < len(self._vocabulary))
        ids = tf.where(valid, ids, tf.cast(UNK_ID, ids.dtype))
        return tf.cast(ids, tf.int32)


def _surface(token: str) -> str:
    """The text a token stands for in detokenized output."""
    if token == UNK_TOKEN:
        return token
    if token in RESERVED_TOKENS:
        return ""
    if token.startswith(SUFFIX_INDICATOR):
        return token[len(SUFFIX_INDICATOR) :]
    return token


def _to_dense(ids):
    """Pads a ragged [B, (T)] batch with 0 ([PAD])."""
    if isinstance(ids, tf.RaggedTensor):
        return ids.to_tensor(0)
    return tf.convert_to_tensor(ids)
