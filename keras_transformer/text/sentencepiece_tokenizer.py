"""SentencePieceTokenizer: a SentencePiece model inside TF graphs."""

import os

import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from keras_transformer.text.sentencepiece_model import (
    model_info,
    model_vocab_size,
)
from keras_transformer.text.special_tokens import (
    END_ID,
    PAD_ID,
    RESERVED_TOKENS,
    START_ID,
    UNK_ID,
)

_STRINGS_SPEC = tf.TensorSpec([None], tf.string)
_ID_SPECS = (
    tf.TensorSpec([None, None], tf.int32),
    tf.TensorSpec([None, None], tf.int64),
    tf.RaggedTensorSpec([None, None], tf.int32, ragged_rank=1),
    tf.RaggedTensorSpec([None, None], tf.int64, ragged_rank=1),
)


class SentencePieceTokenizer(tf.Module):
    """Tokenizes and detokenizes text with a SentencePiece model.

    The ops are tensorflow-text's `SentencepieceOp`,
    `SentencepieceTokenizeOp` and `SentencepieceDetokenizeOp`, which run the
    SentencePiece C++ library: the ids are those of onnxruntime-extensions'
    `SentencepieceTokenizer` op and of the `sentencepiece` Python package
    for the same model (the package may differ on texts of a few kB and
    more with unigram models: it sometimes misses the best segmentation by
    ~1e-3 in score). The model's normalization rule applies (see
    `keras_transformer.text.sentencepiece_model`); invalid UTF-8 bytes
    become U+FFFD, one per byte, inside SentencePiece. With the package's
    models (byte fallback), `detokenize(tokenize(s))` gives back the
    normalized `s` for any text.

    The tokenizer's ids are the model's first `vocab_size` pieces
    (`model_vocab_size`: all of them, except in a rewritten Marian model,
    `keras_transformer.marian.tokenizers`, whose later pieces only keep
    Marian's segmentation): `tokenize` reads a piece at or above
    `vocab_size` as `[UNK]` (`keras_transformer.contract.known_token_ids`).

    Ids 0-3 are reserved: `[PAD]`, `[UNK]`, `[START]`, `[END]`. `tokenize`
    adds no `[START]`/`[END]`. All methods below are `tf.function`s that run
    eagerly, inside other `tf.function`s, in `tf.data` and from a SavedModel
    (`tf.saved_model.save(tokenizer, path)`; loading needs only
    `tensorflow` and `tensorflow_text`). Pass ids as tensors or NumPy
    arrays: a Python list makes `detokenize`/`lookup` retrace per value.

    Args:
        model_proto: bytes, a serialized SentencePiece `ModelProto` (the
            content of a `.model` file) with the reserved pieces at ids 0-3,
            e.g. from `learn_sentencepiece`.
        name: optional str, the module name.

    Call arguments (methods):
        tokenize(strings): string [B] -> int32 `tf.RaggedTensor` [B, (T)].
            An empty or blank string gives no tokens.
        detokenize(ids): int32/int64 [B, T], dense or ragged -> string [B].
            `[PAD]` and `[START]` are skipped, everything from the first
            `[END]` on is dropped, ids outside [0, V) count as `[UNK]`,
            which gives no text with the package's models.
        lookup(ids): int32/int64 [B, T], dense or ragged -> string
            `tf.RaggedTensor` [B, (T)] of pieces (trailing padding of a
            dense input removed), e.g. for attention plots.

    Example:

    >>> from keras_transformer.text.sentencepiece_model import (
    ...     learn_sentencepiece)
    >>> tokenizer = SentencePieceTokenizer(learn_sentencepiece(
    ...     ["Hello, world!", "Größe café"], vocab_size=400))
    >>> ids = tokenizer.tokenize(["Hello, world!"])
    >>> tokenizer.detokenize(ids).numpy()
    array([b'Hello, world!'], dtype=object)
    """

    def __init__(self, model_proto: bytes, name: str | None = None):
        pieces = _checked_pieces(model_proto)
        super().__init__(name=name)
        self._model_proto = bytes(model_proto)
        self._pieces = tuple(pieces[:model_vocab_size(model_proto)])
        self._has_extra_pieces = len(pieces) > len(self._pieces)
        self._piece_table = tf.constant(self._pieces, tf.string)
        # Trace every id signature now so that a SavedModel has them all.
        for spec in _ID_SPECS:
            self.detokenize.get_concrete_function(spec)
            self.lookup.get_concrete_function(spec)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, name: str | None = None
    ) -> "SentencePieceTokenizer":
        """Reads a `.model` file (a serialized SentencePiece model).

        Args:
            path: path of the file, e.g. written by `save`.
            name: optional str, the module name.

        Returns:
            A `SentencePieceTokenizer`.
        """
        with open(os.fspath(path), "rb") as file:
            return cls(file.read(), name=name)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the model (the `.model` file bytes) to `path`."""
        with open(os.fspath(path), "wb") as file:
            file.write(self._model_proto)

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model."""
        return self._model_proto

    @property
    def vocab_size(self) -> int:
        """Number of token ids (pieces), reserved ones included."""
        return len(self._pieces)

    @property
    def vocabulary(self) -> list[str]:
        """The pieces of the token ids, in id order."""
        return list(self._pieces)

    @property
    def config(self) -> dict:
        """`model_info` of the model: vocab_size, model_type, ..."""
        return model_info(self._model_proto)

    # AutoGraph is off: no Python control flow depends on tensors.
    @tf.function(input_signature=[_STRINGS_SPEC], autograph=False)
    def tokenize(self, strings):
        """string [B] -> int32 `tf.RaggedTensor` [B, (T)]."""
        ids = self._sentencepiece().tokenize(strings)
        if not self._has_extra_pieces:
            return ids  # The rule never applies: the graph stays as it was.
        # known_token_ids: pieces beyond the model's ids read as [UNK].
        known = ids.values < len(self._pieces)
        return ids.with_values(
            tf.where(known, ids.values, tf.constant(UNK_ID, tf.int32)))

    @tf.function(autograph=False)
    def detokenize(self, ids):
        """int ids [B, T], dense or ragged -> string [B]."""
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(tf.convert_to_tensor(ids))
        values = self._valid_ids(ids.values)
        # The number of [END]s up to each id, counted from its row's start.
        ends = tf.cumsum(tf.cast(values == END_ID, tf.int32))
        before = tf.concat([[0], ends], axis=0)
        row_starts = tf.gather(before, ids.row_starts())
        ended = ends - tf.repeat(row_starts, ids.row_lengths()) > 0
        keep = ~ended & (values != PAD_ID) & (values != START_ID)
        kept = tf.RaggedTensor.from_value_rowids(
            tf.boolean_mask(values, keep),
            tf.boolean_mask(ids.value_rowids(), keep),
            nrows=ids.nrows(),
        )
        return self._sentencepiece().detokenize(kept)

    @tf.function(autograph=False)
    def lookup(self, ids):
        """int ids [B, T], dense or ragged -> piece strings [B, (T)]."""
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(
                tf.convert_to_tensor(ids), padding=PAD_ID
            )
        ids = ids.with_flat_values(self._valid_ids(ids.flat_values))
        return tf.gather(self._piece_table, ids)

    def _sentencepiece(self):
        """tensorflow-text's tokenizer, made inside the traced function.

        Its model resource is then part of the function's graph. Made
        eagerly (once, in `__init__`) it would be owned by an eager kernel,
        and `tf.random.set_seed` (so `keras.utils.set_random_seed`) clears
        those: the tokenizer would then fail with "Resource ...
        SentencepieceOp ... does not exist".
        """
        return tf_text.SentencepieceTokenizer(model=self._model_proto,
                                              out_type=tf.int32)

    def _valid_ids(self, ids):
        """Maps ids outside [0, V) to [UNK]; returns int32."""
        valid = (ids >= 0) & (ids < len(self._pieces))
        ids = tf.where(valid, ids, tf.cast(UNK_ID, ids.dtype))
        return tf.cast(ids, tf.int32)


def _checked_pieces(model_proto: bytes) -> list[str]:
    """The pieces of a model with the reserved ids; raises otherwise."""
    if not isinstance(model_proto, bytes):
        raise TypeError(
            "`model_proto` must be bytes (a serialized SentencePiece "
            "model). Received: model_proto of type "
            f"{type(model_proto).__name__}"
        )
    model = sentencepiece_model_pb2.ModelProto()
    try:
        model.ParseFromString(model_proto)
    except Exception:  # protobuf's DecodeError differs per backend.
        model = None
    pieces = [piece.piece for piece in model.pieces] if model else []
    if tuple(pieces[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
        raise ValueError(
            "`model_proto` must be a serialized SentencePiece model whose "
            f"pieces 0-3 are {RESERVED_TOKENS}. Received: model_proto with "
            f"pieces {pieces[:4]}"
        )
    spec = model.trainer_spec
    ids = (spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id)
    if ids != (PAD_ID, UNK_ID, START_ID, END_ID):
        raise ValueError(
            "`model_proto` must have pad_id=0, unk_id=1, bos_id=2, "
            f"eos_id=3. Received: model_proto with (pad_id, unk_id, "
            f"bos_id, eos_id)={ids}"
        )
    size = model_vocab_size(model_proto)
    if size <= len(RESERVED_TOKENS):
        raise ValueError(
            "`model_proto` must give more token ids than the reserved ones "
            f"(trainer_spec.vocab_size > {len(RESERVED_TOKENS)} when set). "
            f"Received: model_proto with vocab_size={size}"
        )
    return pieces
