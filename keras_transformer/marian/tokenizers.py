"""Marian's SentencePiece models rewritten to the package's token ids.

A Hugging Face Marian folder tokenizes in two steps (`MarianTokenizer`):
`source.spm` (or `target.spm`) cuts a text into piece strings, then
`vocab.json` numbers them; a piece that `vocab.json` lacks, and a run of
characters the SentencePiece model does not know, become `<unk>`.
`rewrite_sentencepiece` folds both steps into one SentencePiece model whose
ids are the package's (`keras_transformer.marian.vocabulary`), so that
every runtime of the package (TensorFlow, onnxruntime-extensions,
SentencePiece in WebAssembly, the `sentencepiece` package) reads it:

    ids 0-3            [PAD] [UNK] [START] [END], as in the package's own
                       models ([UNK] the unknown piece, the others control)
    ids 4 .. V - 1     the vocabulary's tokens; one this side's model has
                       keeps its score and type, one it lacks (a piece of
                       the other side) is an unused piece: never produced
                       by tokenization, decoded as its text
    ids V ..           the model's pieces that the vocabulary lacks, with
                       their scores and types: text segments exactly as
                       with the original model, and the tokenizers read
                       these ids as [UNK] (`contract.known_token_ids`)

V, the vocabulary's size, is recorded as the model's
`trainer_spec.vocab_size` (`text.sentencepiece_model.model_vocab_size`).
The normalizer, denormalizer and the other options of the original model
are kept, except the reserved pieces' names and ids and the unknown
piece's text, which becomes "" (as in the package's own models; Marian's
tokenizer drops `<unk>` when decoding with `skip_special_tokens=True`).

Only unigram models are rewritten (Marian's, OPUS-MT's): a BPE model would
merge into the added unused pieces and segment differently.

Differences from `MarianTokenizer` that remain:

- its punctuation normalizer (Moses', with `sacremoses` installed; the
  identity without it) is not applied;
- a run of characters the model does not know is `<unk>` for
  SentencePiece, whose text `MarianTokenizer` then looks up in
  `vocab.json`: when it is a token of the other side (a single character
  that only the target model knows, say), `MarianTokenizer` gives that
  token's id and the package `[UNK]` (but for the CTranslate2 runtime,
  which looks piece strings up in the vocabulary too);
- `MarianTokenizer` decodes target ids with the source model by default
  (a shared vocabulary): the package decodes them with the target model.
  The two agree whenever the target model's pieces decode alike in both;
- `MarianTokenizer` strips the spaces around a decoded text and turns
  language codes (`>>fra<<` at the start of a text) into one token.

Needs the `sentencepiece` package, not TensorFlow.
"""

from sentencepiece import sentencepiece_model_pb2

from keras_transformer.text.sentencepiece_model import parse_model
from keras_transformer.text.special_tokens import (
    END_ID,
    PAD_ID,
    RESERVED_TOKENS,
    START_ID,
    UNK_ID,
)

_PIECE = sentencepiece_model_pb2.ModelProto.SentencePiece
# The original model's pieces that shape segmentation (the others, control,
# unknown and unused pieces, never match text).
_SEGMENTING = (_PIECE.NORMAL, _PIECE.USER_DEFINED, _PIECE.BYTE)
_UNIGRAM = sentencepiece_model_pb2.TrainerSpec.UNIGRAM


def rewrite_sentencepiece(spm_proto: bytes, vocabulary: list[str]) -> bytes:
    """A SentencePiece model whose ids are the package's ids of `vocabulary`.

    See the module's table: piece i is `vocabulary[i]` for every id of the
    model, then come the pieces of `spm_proto` that `vocabulary` lacks,
    which the tokenizers read as `[UNK]`.

    Args:
        spm_proto: bytes, a serialized unigram SentencePiece model (a
            Marian folder's `source.spm` or `target.spm`).
        vocabulary: list of str, the tokens in package id order
            (`marian.vocabulary.package_vocabulary`): the reserved tokens,
            then distinct, non-empty tokens.

    Returns:
        The serialized model (the bytes of a `.model` file), for
        `text.SentencePieceTokenizer` and the exports.

    Raises:
        TypeError, ValueError: naming the argument, for a `spm_proto` that
            is not a unigram SentencePiece model with one unknown piece, or
            a `vocabulary` that is not as described.

    Example:
    >>> vocabulary = package_vocabulary(vocab, marian_order(vocab, 58100, 0))
    >>> with open("opus-mt-en-de/source.spm", "rb") as file:
    ...     model = rewrite_sentencepiece(file.read(), vocabulary)
    """
    original = _parse(spm_proto)
    vocabulary = _check_vocabulary(vocabulary)
    known = {piece.piece: piece for piece in original.pieces}
    model = sentencepiece_model_pb2.ModelProto()
    model.CopyFrom(original)
    del model.pieces[:]
    for token_id, token in enumerate(vocabulary):
        piece = model.pieces.add(piece=token, score=0.0)
        if token_id < len(RESERVED_TOKENS):
            piece.type = _PIECE.UNKNOWN if token_id == UNK_ID else (
                _PIECE.CONTROL)
        elif token in known and known[token].type != _PIECE.UNKNOWN:
            piece.CopyFrom(known[token])
        else:  # Only the other side's model has it, or it names <unk>.
            piece.type = _PIECE.UNUSED
    listed = set(vocabulary)
    model.pieces.extend(piece for piece in original.pieces
                        if piece.type in _SEGMENTING
                        and piece.piece not in listed)
    spec = model.trainer_spec
    spec.vocab_size = len(vocabulary)
    spec.pad_id, spec.unk_id, spec.bos_id, spec.eos_id = (
        PAD_ID, UNK_ID, START_ID, END_ID)
    (spec.pad_piece, spec.unk_piece, spec.bos_piece,
     spec.eos_piece) = (RESERVED_TOKENS[i]
                        for i in (PAD_ID, UNK_ID, START_ID, END_ID))
    spec.unk_surface = ""
    return model.SerializeToString()


def _parse(spm_proto) -> sentencepiece_model_pb2.ModelProto:
    model = parse_model(spm_proto, "spm_proto")
    if model.trainer_spec.model_type != _UNIGRAM:
        raise ValueError(
            "`spm_proto` must be a unigram SentencePiece model (a BPE model "
            "would segment differently once rewritten). Received: "
            f"spm_proto with model_type={model.trainer_spec.model_type}")
    unknown = sum(piece.type == _PIECE.UNKNOWN for piece in model.pieces)
    if unknown != 1:
        raise ValueError(
            "`spm_proto` must have one unknown piece. Received: spm_proto "
            f"with {unknown}")
    return model


def _check_vocabulary(vocabulary) -> list[str]:
    if isinstance(vocabulary, (str, bytes)) or not isinstance(
            vocabulary, (list, tuple)):
        raise TypeError(
            "`vocabulary` must be a list of str. Received: vocabulary of "
            f"type {type(vocabulary).__name__}")
    vocabulary = list(vocabulary)
    for index, token in enumerate(vocabulary):
        if not isinstance(token, str):
            raise TypeError(
                "`vocabulary` must hold str tokens. Received: "
                f"vocabulary[{index}]={token!r}")
        if not token:
            raise ValueError(
                "`vocabulary` must hold non-empty tokens. Received: "
                f"vocabulary[{index}]=''")
    if tuple(vocabulary[:len(RESERVED_TOKENS)]) != RESERVED_TOKENS or (
            len(vocabulary) <= len(RESERVED_TOKENS)):
        raise ValueError(
            f"`vocabulary` must start with {RESERVED_TOKENS} and hold more "
            "tokens. Received: vocabulary starting with "
            f"{vocabulary[:len(RESERVED_TOKENS)]} ({len(vocabulary)} tokens)")
    if len(set(vocabulary)) != len(vocabulary):
        seen = set()
        twice = next(t for t in vocabulary if t in seen or seen.add(t))
        raise ValueError(
            "`vocabulary` must hold each token once. Received: vocabulary "
            f"with {twice!r} twice")
    return vocabulary
