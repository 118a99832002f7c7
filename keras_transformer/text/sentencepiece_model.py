"""Learning SentencePiece models in memory (no TensorFlow needed).

Every model learned here has the package's reserved ids (0 `[PAD]`,
1 `[UNK]`, 2 `[START]`, 3 `[END]`, all control pieces except `[UNK]`),
then the 256 byte pieces `<0x00>`...`<0xFF>` (byte fallback: a character
without a piece is spelled as its UTF-8 bytes, so tokenization never yields
`[UNK]`), then the pieces learned from the texts. The unknown id decodes to
the empty string (`unk_surface=""`), so a stray `[UNK]` never shows up as
text in a translation. Digits are not split.

Normalization rules: `"nmt_nfkc"` (NFKC plus SentencePiece's NMT rules:
most control characters are removed, tabs, newlines, U+200B and other
spaces become spaces; NUL and U+200D stay), `"nfkc"`, `"as_written"` (the
target side's rule: the text as written, e.g. the full-width "：" that NFKC
turns into ":" stays, except that whitespace of any kind is a space) and
`"identity"` (nothing at all: only U+0020 is a space). Every rule removes
leading, trailing and repeated spaces and marks word starts with "▁"
(U+2581).
"""

import functools
import io
import itertools
import os
import random
import re
import tempfile
from collections.abc import Iterable, Iterator

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from keras_transformer.checks import check_int
from keras_transformer.text.special_tokens import (
    END_ID,
    END_TOKEN,
    PAD_ID,
    PAD_TOKEN,
    START_ID,
    START_TOKEN,
    UNK_ID,
    UNK_TOKEN,
)

MODEL_TYPES = ("unigram", "bpe")
NORMALIZATION_RULES = ("nmt_nfkc", "nfkc", "as_written", "identity")
# "as_written": whitespace of any kind (Unicode White_Space, and U+200B as
# in nmt_nfkc) becomes U+0020; every other character stays as written.
_WHITESPACE = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0xA0, 0x1680,
               *range(0x2000, 0x200C), 0x2028, 0x2029, 0x202F, 0x205F,
               0x3000)
NUM_BYTE_PIECES = 256
# 4 reserved pieces + 256 byte pieces + at least the word marker "▁".
MIN_VOCAB_SIZE = 4 + NUM_BYTE_PIECES + 1

_MODEL_TYPE_NAMES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
_REQUIRED_CHARS = re.compile(r"required_chars\. (\d+) vs (\d+)")


def learn_sentencepiece(
    texts: Iterable[str],
    vocab_size: int = 8000,
    model_type: str = "unigram",
    normalization: str = "nmt_nfkc",
    max_sentences: int = 1_000_000,
    seed: int = 0,
    character_coverage: float = 1.0,
) -> bytes:
    """Learns a SentencePiece model from texts.

    Blank texts are skipped. With more than `max_sentences` texts, a random
    sample of `max_sentences` of them (the same for the same texts and
    `seed`) is used. SentencePiece skips texts longer than 4192 bytes.

    Args:
        texts: iterable of str, e.g. the lines of a corpus.
        vocab_size: int, the maximum number of pieces, reserved and byte
            pieces included; a small corpus can give fewer. At least
            4 + 256 + the number of distinct characters kept by
            `character_coverage` (plus one for "▁"). Defaults to 8000.
        model_type: `"unigram"` (default) or `"bpe"`.
        normalization: `"nmt_nfkc"` (default), `"nfkc"` or `"identity"`.
        max_sentences: int, the most texts to learn from. Defaults to
            1,000,000.
        seed: int, the seed of the sampling. Defaults to 0.
        character_coverage: float in (0, 1], the share of character
            occurrences that get pieces of their own; the rarest others
            are spelled in bytes. Defaults to 1.0.

    Returns:
        The serialized `ModelProto` (the bytes of a `.model` file).

    Raises:
        TypeError, ValueError: for invalid arguments, including a
            `vocab_size` too small for the corpus' characters.
    """
    _validate(vocab_size, model_type, normalization, max_sentences, seed,
              character_coverage)
    sample = _sample(_non_blank(texts, "texts"), max_sentences, seed)
    return _train(sample, vocab_size, model_type, normalization,
                  character_coverage)


def learn_tokenizer_models(
    sources: Iterable[str],
    targets: Iterable[str],
    vocab_size: int = 8000,
    model_type: str = "unigram",
    joint: bool = True,
    max_sentences: int = 1_000_000,
    seed: int = 0,
    character_coverage: float = 1.0,
) -> tuple[bytes, bytes]:
    """Learns the source and target models of a translation task.

    The source side is normalized with `"nmt_nfkc"`, the target side is kept
    as written (`"as_written"`). With `joint=True` one vocabulary is learned
    (with `"identity"`) from the sources normalized by SentencePiece's own
    `"nmt_nfkc"` normalizer plus the targets, and the two models differ only
    in their normalizer: the same piece has the same id on both sides, so
    embeddings can be shared. With `joint=False`, each side gets its own
    model and `vocab_size`.

    Args:
        sources: iterable of str, the source sentences.
        targets: iterable of str, the target sentences.
        vocab_size: int, the maximum number of pieces per model. Defaults to
            8000.
        model_type: `"unigram"` (default) or `"bpe"`.
        joint: bool, learn one shared vocabulary. Defaults to `True`.
        max_sentences: int, the most texts to learn from: in all when
            `joint`, else per side. Defaults to 1,000,000.
        seed: int, the seed of the sampling. Defaults to 0.
        character_coverage: float in (0, 1]. Defaults to 1.0.

    Returns:
        `(source_model_proto, target_model_proto)`, serialized protos.
    """
    _validate(vocab_size, model_type, "identity", max_sentences, seed,
              character_coverage)
    if not isinstance(joint, bool):
        raise TypeError(f"`joint` must be a bool. Received: joint={joint!r}")
    args = (vocab_size, model_type)
    if not joint:
        source = _train(
            _sample(_non_blank(sources, "sources"), max_sentences, seed),
            *args, "nmt_nfkc", character_coverage)
        target = _train(
            _sample(_non_blank(targets, "targets"), max_sentences, seed),
            *args, "identity", character_coverage)
        return source, with_normalization(target, "as_written")
    normalizer = spm.SentencePieceNormalizer(
        rule_name="nmt_nfkc", add_dummy_prefix=False,
        escape_whitespaces=False, remove_extra_whitespaces=True)
    normalized = (normalizer.normalize(text)
                  for text in _non_blank(sources, "sources"))
    texts = itertools.chain(
        (text for text in normalized if text), _non_blank(targets, "targets"))
    model = _train(_sample(texts, max_sentences, seed), *args, "identity",
                   character_coverage)
    return (with_normalization(model, "nmt_nfkc"),
            with_normalization(model, "as_written"))


def with_normalization(model_proto: bytes, rule: str) -> bytes:
    """The same model (same pieces, same ids) with another normalization.

    Args:
        model_proto: bytes, a serialized SentencePiece `ModelProto`.
        rule: one of `NORMALIZATION_RULES`.

    Returns:
        The serialized model with the normalizer of `rule`; leading,
        trailing and repeated spaces are removed and words marked with "▁"
        whatever the rule.
    """
    if rule not in NORMALIZATION_RULES:
        raise ValueError(f"`rule` must be one of {NORMALIZATION_RULES}. "
                         f"Received: rule={rule!r}")
    model = parse_model(model_proto)
    spec = model.normalizer_spec
    spec.name = rule
    spec.precompiled_charsmap = _charsmap(rule)
    spec.add_dummy_prefix = True
    spec.remove_extra_whitespaces = True
    spec.escape_whitespaces = True
    return model.SerializeToString()


def model_info(model_proto: bytes) -> dict:
    """The main settings of a model, JSON-serializable.

    Args:
        model_proto: bytes, a serialized SentencePiece `ModelProto`.

    Returns:
        A dict with `vocab_size` (int, the model's ids:
        `model_vocab_size`), `model_type` (str), `normalization` (str,
        the normalization rule) and `byte_fallback` (bool); plus `pieces`
        (int) when the model holds more pieces than ids.
    """
    model = parse_model(model_proto)
    model_type = model.trainer_spec.model_type
    info = {
        "vocab_size": _vocab_size(model),
        "model_type": _MODEL_TYPE_NAMES.get(model_type, str(model_type)),
        "normalization": model.normalizer_spec.name,
        "byte_fallback": bool(model.trainer_spec.byte_fallback),
    }
    if info["vocab_size"] < len(model.pieces):
        info["pieces"] = len(model.pieces)
    return info


def model_vocab_size(model_proto: bytes) -> int:
    """The number of token ids a model gives: its first pieces.

    A model's ids are its first `trainer_spec.vocab_size` pieces when that
    field is set and smaller than the number of pieces, else all of its
    pieces. SentencePiece's trainer sets it to the number of pieces, so it
    is all of them for every model the package learns. A rewritten Marian
    model (`keras_transformer.marian.tokenizers`) keeps pieces after its
    ids that only serve segmentation: the tokenizers read their ids as
    `[UNK]` (`keras_transformer.contract.known_token_ids`).

    Args:
        model_proto: bytes, a serialized SentencePiece `ModelProto`.

    Returns:
        int, the model's vocabulary size.
    """
    return _vocab_size(parse_model(model_proto))


def _vocab_size(model: sentencepiece_model_pb2.ModelProto) -> int:
    pieces, recorded = len(model.pieces), model.trainer_spec.vocab_size
    # Unset, the field reads as its default, 8000.
    if not model.trainer_spec.HasField("vocab_size") or recorded < 1:
        return pieces
    return min(pieces, recorded)


def _train(texts: list[str], vocab_size: int, model_type: str,
           normalization: str, character_coverage: float) -> bytes:
    """Runs the SentencePiece trainer in memory."""
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=writer,
            vocab_size=vocab_size,
            model_type=model_type,
            normalization_rule_name=normalization,
            character_coverage=character_coverage,
            byte_fallback=True,
            hard_vocab_limit=False,
            split_digits=False,
            input_sentence_size=0,  # Sampled already by `_sample`.
            shuffle_input_sentence=False,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=START_ID, eos_id=END_ID,
            pad_piece=PAD_TOKEN, unk_piece=UNK_TOKEN,
            bos_piece=START_TOKEN, eos_piece=END_TOKEN,
            unk_surface="",
            minloglevel=3,
        )
    except RuntimeError as error:
        match = _REQUIRED_CHARS.search(str(error))
        if match is None:
            raise
        raise ValueError(
            f"`vocab_size` must be >= {match.group(2)} for these texts "
            f"(4 reserved + {NUM_BYTE_PIECES} byte pieces + "
            f"{int(match.group(2)) - 4 - NUM_BYTE_PIECES} characters, \"▁\" "
            "included). "
            f"Received: vocab_size={vocab_size}"
        ) from None
    return writer.getvalue()


@functools.lru_cache(maxsize=None)
def _charsmap(rule: str) -> bytes:
    """The precompiled character map of a built-in normalization rule."""
    if rule == "identity":
        return b""
    writer = io.BytesIO()
    options = dict(normalization_rule_name=rule)
    if rule == "as_written":
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "as_written.tsv")
            with open(path, "w", encoding="utf-8") as file:
                file.writelines(f"{code:04X}\t0020\n"
                                for code in _WHITESPACE)
            return _charsmap_of(writer, normalization_rule_tsv=path)
    return _charsmap_of(writer, **options)


def _charsmap_of(writer, **options) -> bytes:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b"]), model_writer=writer,
        vocab_size=8, hard_vocab_limit=False, model_type="char",
        minloglevel=3, **options)
    return parse_model(writer.getvalue()).normalizer_spec.precompiled_charsmap


def parse_model(model_proto: bytes, name: str = "model_proto"
           ) -> sentencepiece_model_pb2.ModelProto:
    """The parsed model; errors name the argument `name`."""
    if not isinstance(model_proto, bytes):
        raise TypeError(f"`{name}` must be bytes (a serialized "
                        f"SentencePiece model). Received: {name} of "
                        f"type {type(model_proto).__name__}")
    model = sentencepiece_model_pb2.ModelProto()
    try:
        model.ParseFromString(model_proto)
    except Exception:  # protobuf's DecodeError differs per backend.
        model = None
    if model is None or not model.pieces:
        raise ValueError(f"`{name}` must be a serialized SentencePiece "
                         f"model. Received: {name}={model_proto[:40]!r}")
    return model


def _non_blank(texts: Iterable[str], name: str) -> Iterator[str]:
    """Yields the texts that are not blank; raises if there is none."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise TypeError(f"`{name}` must be an iterable of str. Received: "
                        f"{name}={texts!r:.80}")

    def generate():
        count = 0
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"`{name}` must contain only str. Received "
                                f"an element {text!r:.80}")
            if text.strip():
                count += 1
                yield text
        if not count:
            raise ValueError(f"`{name}` must contain a non-blank string. "
                             f"Received: {name} with no non-blank string")

    return generate()


def _sample(texts: Iterable[str], max_sentences: int, seed: int) -> list:
    """Up to `max_sentences` texts, a uniform seeded sample, in order."""
    rng = random.Random(seed)
    reservoir = []  # (index, text): reservoir sampling ("Algorithm R").
    for index, text in enumerate(texts):
        if index < max_sentences:
            reservoir.append((index, text))
        else:
            slot = rng.randrange(index + 1)
            if slot < max_sentences:
                reservoir[slot] = (index, text)
    return [text for _, text in sorted(reservoir)]


def _validate(vocab_size, model_type, normalization, max_sentences, seed,
              character_coverage) -> None:
    check_int("vocab_size", vocab_size, MIN_VOCAB_SIZE)
    check_int("max_sentences", max_sentences, 1)
    check_int("seed", seed, None)
    for name, value, allowed in (
        ("model_type", model_type, MODEL_TYPES),
        ("normalization", normalization, NORMALIZATION_RULES),
    ):
        if value not in allowed:
            raise ValueError(f"`{name}` must be one of {allowed}. "
                             f"Received: {name}={value!r}")
    if (not isinstance(character_coverage, (int, float))
            or isinstance(character_coverage, bool)
            or not 0 < character_coverage <= 1):
        raise ValueError(
            "`character_coverage` must be a float in (0, 1]. Received: "
            f"character_coverage={character_coverage!r}")
