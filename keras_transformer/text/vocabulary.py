"""Text normalization, pre-tokenization and WordPiece vocabulary learning.

The tokenizer and the vocabulary learner share the functions of this module,
so a vocabulary is learned from exactly the fragments the tokenizer later
splits into word pieces.

Normalization (`normalize_text`), in order:

1. Invalid UTF-8 bytes become U+FFFD (the replacement character).
2. Unicode normalization to `normalization_form` (NFKC by default).
3. If `lower_case`: Unicode lower-casing (full mappings, so "İ" becomes
   "i" + U+0307; "ß" stays "ß").
4. If `strip_accents`: canonical decomposition, then every nonspacing mark
   (category Mn) is removed.
5. If step 3 or 4 ran: `normalization_form` again.
6. Whitespace: every run of whitespace (ASCII whitespace, categories Zs, Zl,
   Zp), control characters (Cc) and U+2581 becomes one space; leading and
   trailing spaces are removed.

Pre-tokenization (`pretokenize`): each space-separated word of the normalized
text gets the word marker U+2581 ("▁") in front, then the text is split
into fragments: spaces are dropped; each punctuation mark, symbol, CJK
ideograph and kana is a fragment of its own (carrying the marker when it
starts a word); a fragment longer than `MAX_FRAGMENT_CHARS` characters
(marker included) is cut into pieces of that length. Concatenating the
fragments and turning the markers back into spaces gives the normalized
text again, which makes detokenization exact.
"""

import bisect
import collections
import os
from collections.abc import Iterable

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import (
    wordpiece_tokenizer_learner_lib as learner,
)

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
START_TOKEN = "[START]"
END_TOKEN = "[END]"
RESERVED_TOKENS = (PAD_TOKEN, UNK_TOKEN, START_TOKEN, END_TOKEN)
PAD_ID, UNK_ID, START_ID, END_ID = 0, 1, 2, 3

WORD_MARKER = "\u2581"
SUFFIX_INDICATOR = "##"
NORMALIZATION_FORMS = ("NFC", "NFKC")
# Longer fragments are cut so that none exceeds the learner's
# `max_token_length` (50) nor the byte limit given to the WordPiece op.
MAX_FRAGMENT_CHARS = 49
MAX_BYTES_PER_FRAGMENT = 4 * MAX_FRAGMENT_CHARS

_WHITESPACE = r"[\s\p{Z}\p{Cc}\x{2581}]+"
# Punctuation, symbols except the marker (itself in So), CJK ideographs, kana.
_SINGLE = (
    r"[\p{P}\p{Sm}\p{Sc}\p{Sk}]|[^\P{So}\x{2581}]"
    r"|[\p{Han}\p{Hiragana}\p{Katakana}]"
)
_KEEP = rf"\x{{2581}}?(?:{_SINGLE})"
_DELIMITER = rf" |{_KEEP}"
_CHUNK = rf".{{{MAX_FRAGMENT_CHARS}}}"

# Settings of the learner; those of its `learn()` defaults that we keep.
_NUM_ITERATIONS = 4
_MAX_INPUT_TOKENS = int(5e6)
_MAX_TOKEN_LENGTH = 50
_MAX_UNIQUE_CHARS = 1000
# The threshold search stops at a vocabulary this fraction below
# `vocab_size` or closer (the learner's `slack_ratio`).
_SLACK = 0.05
_BATCH_SIZE = 1024


def normalize_text(
    strings: tf.Tensor,
    lower_case: bool = False,
    strip_accents: bool = False,
    normalization_form: str = "NFKC",
) -> tf.Tensor:
    """Normalizes UTF-8 strings as described in the module docstring.

    Args:
        strings: string tensor of any shape.
        lower_case: bool, lower-case the text. Defaults to `False`.
        strip_accents: bool, remove nonspacing marks. Defaults to `False`.
        normalization_form: `"NFKC"` or `"NFC"`. Defaults to `"NFKC"`.

    Returns:
        A string tensor of the same shape.
    """
    text = tf.strings.unicode_transcode(
        strings,
        input_encoding="UTF-8",
        output_encoding="UTF-8",
        errors="replace",
        replacement_char=0xFFFD,
    )
    text = tf_text.normalize_utf8(text, normalization_form)
    if lower_case:
        text = tf.strings.lower(text, encoding="utf-8")
    if strip_accents:
        text = tf_text.normalize_utf8(text, "NFD")
        text = tf.strings.regex_replace(text, r"\p{Mn}", "")
    if lower_case or strip_accents:
        text = tf_text.normalize_utf8(text, normalization_form)
    text = tf.strings.regex_replace(text, _WHITESPACE, " ")
    return tf.strings.regex_replace(text, r"^ | $", "")


def pretokenize(normalized: tf.Tensor) -> tf.RaggedTensor:
    """Splits normalized text into marked fragments.

    Args:
        normalized: string tensor [B], output of `normalize_text`.

    Returns:
        A string `tf.RaggedTensor` [B, (W)] of fragments.
    """
    marked = tf.strings.regex_replace(normalized, "[^ ]+", WORD_MARKER + r"\0")
    fragments = tf_text.regex_split(marked, _DELIMITER, _KEEP)
    # A second, separate split keeps each regular expression small: RE2's
    # DFA runs out of memory on a repeated Unicode class.
    chunks = tf_text.regex_split(fragments, _CHUNK, _CHUNK)
    return chunks.merge_dims(1, 2)


def validate_options(
    lower_case: bool, strip_accents: bool, normalization_form: str
) -> None:
    """Raises if a normalization option is invalid."""
    for name, value in (
        ("lower_case", lower_case),
        ("strip_accents", strip_accents),
    ):
        if not isinstance(value, bool):
            raise TypeError(
                f"`{name}` must be a bool. Received: {name}={value!r}"
            )
    if normalization_form not in NORMALIZATION_FORMS:
        raise ValueError(
            f"`normalization_form` must be one of {NORMALIZATION_FORMS}. "
            f"Received: normalization_form={normalization_form!r}"
        )


def validate_vocabulary(vocabulary: list[str]) -> None:
    """Raises if `vocabulary` cannot serve as a WordPiece vocabulary."""
    if not vocabulary:
        raise ValueError(
            "`vocabulary` must not be empty. Received: vocabulary=[]"
        )
    if tuple(vocabulary[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
        raise ValueError(
            f"`vocabulary` must start with the reserved tokens "
            f"{list(RESERVED_TOKENS)}. Received: vocabulary="
            f"{list(vocabulary[: len(RESERVED_TOKENS)])}..."
        )
    seen = set()
    for token in vocabulary:
        if not isinstance(token, str) or not token or "\n" in token:
            raise ValueError(
                "`vocabulary` entries must be non-empty strings without "
                f"newlines. Received: token={token!r} in vocabulary"
            )
        if token in seen:
            raise ValueError(
                "`vocabulary` entries must be unique. Received: duplicate "
                f"token={token!r} in vocabulary"
            )
        seen.add(token)


def build_vocabulary(
    corpus: Iterable[str] | tf.data.Dataset,
    vocab_size: int = 8000,
    lower_case: bool = False,
    strip_accents: bool = False,
    normalization_form: str = "NFKC",
) -> list[str]:
    """Learns a WordPiece vocabulary from a corpus.

    The corpus is normalized and pre-tokenized exactly as the tokenizer does,
    the fragments are counted, and tensorflow-text's WordPiece learner
    (`wordpiece_tokenizer_learner_lib`) picks the pieces. Its frequency
    threshold is searched in log space (fewer learner runs than the
    library's integer bisection); when the smallest vocabulary of at least
    `vocab_size` tokens is larger, its rarest learned pieces are dropped,
    never single characters. The result is deterministic: it depends only on
    the fragment counts, not on the order of the corpus.

    Args:
        corpus: an iterable of Python strings (or UTF-8 bytes), or a
            `tf.data.Dataset` of string scalars or string vectors. For a joint
            source-target vocabulary pass the text of both sides.
        vocab_size: int, maximum number of tokens, reserved tokens included.
            Defaults to 8000.
        lower_case: bool, see `normalize_text`. Defaults to `False`.
        strip_accents: bool, see `normalize_text`. Defaults to `False`.
        normalization_form: `"NFKC"` or `"NFC"`. Defaults to `"NFKC"`.

    Returns:
        The vocabulary, a list of at most `vocab_size` strings, starting with
        `RESERVED_TOKENS`, then the single characters, then word pieces.
    """
    validate_options(lower_case, strip_accents, normalization_form)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise TypeError(
            f"`vocab_size` must be an int. Received: vocab_size={vocab_size!r}"
        )
    counts = _count_fragments(
        corpus, lower_case, strip_accents, normalization_form
    )
    word_counts = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    params = learner.Params(
        upper_thresh=None,
        lower_thresh=1,
        num_iterations=_NUM_ITERATIONS,
        max_input_tokens=_MAX_INPUT_TOKENS,
        max_token_length=_MAX_TOKEN_LENGTH,
        max_unique_chars=_MAX_UNIQUE_CHARS,
        vocab_size=vocab_size,
        slack_ratio=_SLACK,
        include_joiner_token=True,
        joiner=SUFFIX_INDICATOR,
        reserved_tokens=list(RESERVED_TOKENS),
    )
    words = learner.get_input_words(
        word_counts, params.reserved_tokens, params.max_token_length
    )
    allowed = learner.get_allowed_chars(words, params.max_unique_chars)
    words = learner.filter_input_words(words, allowed, params.max_input_tokens)
    chars = learner.extract_char_tokens(words)
    required = set(RESERVED_TOKENS) | chars
    required |= {SUFFIX_INDICATOR + char for char in chars}
    if vocab_size < len(required):
        raise ValueError(
            f"`vocab_size` must be at least {len(required)}: the "
            f"{len(RESERVED_TOKENS)} reserved tokens plus the corpus alphabet "
            f"of {len(chars)} characters, each as a word start and as a "
            f"'{SUFFIX_INDICATOR}' continuation. Received: "
            f"vocab_size={vocab_size}"
        )
    return _learn(words, params, len(required))


def write_vocabulary_file(vocabulary: list[str], path: str) -> None:
    """Writes one token a line, UTF-8, with a final newline."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        file.write("".join(token + "\n" for token in vocabulary))


def read_vocabulary_file(path: str) -> list[str]:
    """Reads a file written by `write_vocabulary_file`."""
    if not os.path.isfile(path):
        raise ValueError(
            f"`path` must be an existing vocabulary file. Received: "
            f"path={path!r}"
        )
    with open(path, encoding="utf-8", newline="") as file:
        text = file.read()
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []


def _count_fragments(
    corpus, lower_case, strip_accents, normalization_form
) -> collections.Counter:
    """Counts the fragments `pretokenize` makes of the corpus."""

    counts = collections.Counter()
    for batch in _batches(corpus):
        # Eager: a handful of ops a batch, cheaper than tracing a graph.
        normalized = normalize_text(
            batch, lower_case, strip_accents, normalization_form
        )
        counts.update(pretokenize(normalized).flat_values.numpy().tolist())
    if not counts:
        raise ValueError(
            "`corpus` must contain at least one non-blank string. Received: "
            "corpus without any word"
        )
    return collections.Counter(
        {fragment.decode("utf-8"): n for fragment, n in counts.items()}
    )


def _batches(corpus):
    """Yields string tensors [B] from an iterable or a dataset."""
    if isinstance(corpus, tf.data.Dataset):
        spec = corpus.element_spec
        if (
            not isinstance(spec, tf.TensorSpec)
            or spec.dtype != tf.string
            or spec.shape.rank not in (0, 1)
        ):
            raise TypeError(
                "`corpus` must be a dataset of string scalars or string "
                f"vectors. Received: corpus.element_spec={spec}"
            )
        if spec.shape.rank == 0:
            corpus = corpus.batch(_BATCH_SIZE)
        yield from corpus
        return
    if isinstance(corpus, (str, bytes)) or not isinstance(corpus, Iterable):
        raise TypeError(
            "`corpus` must be an iterable of strings or a tf.data.Dataset, "
            f"not a single string. Received: corpus={corpus!r:.80}"
        )
    batch = []
    for index, line in enumerate(corpus):
        if not isinstance(line, (str, bytes)):
            raise TypeError(
                "`corpus` must contain only strings. Received: "
                f"corpus[{index}]={line!r:.80}"
            )
        batch.append(line)
        if len(batch) == _BATCH_SIZE:
            yield tf.constant(batch, tf.string)
            batch = []
    if batch:
        yield tf.constant(batch, tf.string)


def _learn(words, params, alphabet_size: int) -> list[str]:
    """Runs the learner at the smallest threshold giving <= vocab_size."""
    target = params.vocab_size
    goal = target * (1 - params.slack_ratio / 2)
    # Ascending counts, to count the words at or above a threshold.
    counts = sorted(count for _, count in words)
    learned = {}

    def estimate(threshold):
        # Alphabet plus whole words frequent enough: the learner's size is
        # this times a factor that changes slowly with the threshold.
        frequent = len(counts) - bisect.bisect_left(counts, threshold)
        return alphabet_size + frequent

    # Invariant: size > target at `low`, size <= target at `high` (a
    # threshold above every count leaves only the alphabet, which fits).
    low, high = 0, counts[-1] + 1
    factor = 1.25
    while high - low > 1:
        # Smallest threshold in (low, high) whose estimate meets the goal.
        lo, hi = low + 1, high - 1
        while lo < hi:
            middle = (lo + hi) // 2
            if factor * estimate(middle) <= goal:
                hi = middle
            else:
                lo = middle + 1
        if lo not in learned:
            learned[lo] = learner.learn_with_thresh(words, lo, params)
        size = len(learned[lo])
        factor = size / estimate(lo)
        if size > target:
            low = lo
        else:
            high = lo
            if size >= target * (1 - params.slack_ratio):
                break
    if high not in learned:
        learned[high] = learner.learn_with_thresh(words, high, params)
    return learned[high]
