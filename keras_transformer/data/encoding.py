"""Token ids of a corpus, computed once, with the length cap applied.

`encode_pairs` tokenizes all sentences eagerly in chunks (50k pairs take
1 to 4 s on 2 CPU cores) and applies `max_length`, counting the pairs dropped
or truncated in `LengthStats`. `make_dataset` builds its batches from the
resulting `EncodedPairs`.

Special ids (shared with `keras_transformer.text`): 0 [PAD], 1 [UNK],
2 [START], 3 [END]. The tokenizers add none; `make_dataset` adds [START]
and [END].
"""

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_transformer.checks import check_int
from keras_transformer.data.corpora import ParallelCorpus, corpus_from_pairs

LENGTH_POLICIES = ("drop", "truncate")
DEFAULT_MAX_LENGTH = 256
_TOKENIZE_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class LengthStats:
    """What `max_length` did to a corpus.

    Lengths count the added token ([END] on the source, [START] or [END] on
    the target).

    Args:
        pairs: int, pairs given.
        kept: int, pairs kept (truncated ones included).
        dropped: int, pairs dropped for exceeding `max_length`.
        truncated_source: int, kept pairs whose source was truncated.
        truncated_target: int, kept pairs whose target was truncated.
        truncated: int, kept pairs with either side truncated.
        longest_source: int, longest source before capping.
        longest_target: int, longest target before capping.
        source_tokens: int, source tokens kept, [END] included.
        target_tokens: int, target tokens kept, [START] included.
        max_length: int, the longest sequence of either side (the cap of
            the batches' length buckets).
        length_policy: str, "drop" or "truncate".
        max_source_length: int, the cap applied to sources.
        max_target_length: int, the cap applied to targets.
    """

    pairs: int
    kept: int
    dropped: int
    truncated_source: int
    truncated_target: int
    truncated: int
    longest_source: int
    longest_target: int
    source_tokens: int
    target_tokens: int
    max_length: int
    length_policy: str
    max_source_length: int
    max_target_length: int

    def summary(self) -> str:
        """One line for logs."""
        cap = f"max_length={self.max_length}"
        if (self.max_source_length, self.max_target_length) != (
                self.max_length, self.max_length):
            cap = (f"max_source_length={self.max_source_length}, "
                   f"max_target_length={self.max_target_length}")
        return (
            f"{self.kept} of {self.pairs} pairs kept; {cap} "
            f"({self.length_policy}): {self.dropped} dropped, "
            f"{self.truncated} truncated ({self.truncated_source} sources, "
            f"{self.truncated_target} targets); longest source "
            f"{self.longest_source}, target {self.longest_target} tokens"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedPairs:
    """Token ids of a corpus, capped to `max_length`, without special tokens.

    Pair k has source ids `source_values[source_splits[k]:source_splits[k
    + 1]]` (likewise for the target) and came from pair `indices[k]` of the
    corpus given to `encode_pairs`.

    Args:
        source_values: int32 array, all source ids, concatenated.
        source_splits: int64 array (N + 1), row boundaries.
        target_values: int32 array, all target ids, concatenated.
        target_splits: int64 array (N + 1), row boundaries.
        indices: int64 array (N), the kept pairs' positions in the corpus.
        stats: `LengthStats`.
    """

    source_values: np.ndarray
    source_splits: np.ndarray
    target_values: np.ndarray
    target_splits: np.ndarray
    indices: np.ndarray
    stats: LengthStats

    def __len__(self) -> int:
        return len(self.indices)


def _tokenize(tokenizer, texts: list[str], argument: str):
    """Returns (values int32, splits int64) of `tokenizer.tokenize(texts)`."""
    if not callable(getattr(tokenizer, "tokenize", None)):
        raise TypeError(
            f"`{argument}` must have a `tokenize` method. "
            f"Received: {argument}={tokenizer!r}"
        )
    values, lengths = [], []
    for start in range(0, len(texts), _TOKENIZE_CHUNK):
        chunk = texts[start:start + _TOKENIZE_CHUNK]
        ids = tokenizer.tokenize(tf.constant(chunk, dtype=tf.string))
        if (not isinstance(ids, tf.RaggedTensor) or ids.shape.rank != 2
                or ids.ragged_rank != 1 or not ids.dtype.is_integer
                or ids.nrows() != len(chunk)):
            raise ValueError(
                f"`{argument}.tokenize` must map strings [B] to an int "
                f"RaggedTensor [B, (T)]. Received: {ids!r}"
            )
        values.append(ids.flat_values.numpy().astype(np.int32))
        lengths.append(ids.row_lengths().numpy())
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    values = np.concatenate(values) if values else np.zeros(0, np.int32)
    return values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _cap(values, splits, keep, limit):
    """Keeps rows `keep` and at most `limit` leading ids of each."""
    lengths = np.diff(splits)
    row = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(values)) - np.repeat(splits[:-1], lengths)
    new_lengths = np.minimum(lengths, limit)[keep]
    new_values = values[keep[row] & (position < limit)]
    return new_values, np.concatenate([[0], np.cumsum(new_lengths)]).astype(
        np.int64
    )


def _check_length_args(max_length, length_policy):
    check_int("max_length", max_length, 2)
    if length_policy not in LENGTH_POLICIES:
        raise ValueError(
            f"`length_policy` must be one of {LENGTH_POLICIES}. "
            f"Received: length_policy={length_policy!r}"
        )


def encode_pairs(
    data,
    source_tokenizer,
    target_tokenizer,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    length_policy: str = "drop",
    max_source_length: int | None = None,
    max_target_length: int | None = None,
) -> EncodedPairs:
    """Tokenizes a corpus once and applies the length cap.

    A pair exceeds the cap when its source + [END] is longer than
    `max_source_length` or its [START] + target longer than
    `max_target_length` (both default to `max_length`). With
    `length_policy="drop"` it is left out; with `"truncate"` the long side
    keeps its first cap - 1 tokens (so [END] still closes it).
    `EncodedPairs.stats` counts both.

    Args:
        data: `ParallelCorpus` or sequence of (source, target) str pairs.
        source_tokenizer: object whose `tokenize(tf.string [B])` returns an
            int `tf.RaggedTensor` [B, (S)] without special tokens.
        target_tokenizer: the same for targets.
        max_length: int >= 2, the longest sequence, added token included.
        length_policy: str, "drop" or "truncate".
        max_source_length: int in [2, max_length] or None, the sources'
            own cap (summaries: long documents). None is `max_length`.
        max_target_length: int in [2, max_length] or None, the targets'
            own cap. None is `max_length`.

    Returns:
        `EncodedPairs`, for `make_dataset`.

    Raises:
        ValueError: for a bad argument, or if no pair is kept.
        TypeError: if `data` or a tokenizer has the wrong type.
    """
    _check_length_args(max_length, length_policy)
    caps = []
    for argument, cap in (("max_source_length", max_source_length),
                          ("max_target_length", max_target_length)):
        if cap is None:
            cap = max_length
        check_int(argument, cap, 2)
        if cap > max_length:
            raise ValueError(
                f"`{argument}` must be at most `max_length` ({max_length})."
                f" Received: {argument}={cap}")
        caps.append(cap)
    max_source_length, max_target_length = caps
    if not isinstance(data, ParallelCorpus):
        if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
            raise TypeError(
                "`data` must be a ParallelCorpus or a sequence "
                f"of (source, target) pairs. Received: data={data!r}"
            )
        data = corpus_from_pairs(data)
    if not len(data):
        raise ValueError(f"`data` holds no pair. Received: data={data!r}")
    src_values, src_splits = _tokenize(
        source_tokenizer, data.sources, "source_tokenizer")
    tgt_values, tgt_splits = _tokenize(
        target_tokenizer, data.targets, "target_tokenizer")
    src_lengths, tgt_lengths = np.diff(src_splits), np.diff(tgt_splits)
    src_limit, tgt_limit = max_source_length - 1, max_target_length - 1
    long_source = src_lengths > src_limit
    long_target = tgt_lengths > tgt_limit
    if length_policy == "drop":
        keep = ~(long_source | long_target)
        long_source = long_target = np.zeros_like(keep)
    else:
        keep = np.ones(len(src_lengths), dtype=bool)
    if not keep.any():
        raise ValueError(
            f"No pair fits in `max_length` (the {len(keep)} pairs were all "
            "dropped); raise it or use length_policy='truncate'. "
            f"Received: max_length={max_length}, max_source_length="
            f"{max_source_length}, max_target_length={max_target_length}"
        )
    src_values, src_splits = _cap(src_values, src_splits, keep, src_limit)
    tgt_values, tgt_splits = _cap(tgt_values, tgt_splits, keep, tgt_limit)
    kept = int(keep.sum())
    stats = LengthStats(
        pairs=len(keep),
        kept=kept,
        dropped=len(keep) - kept,
        truncated_source=int(long_source.sum()),
        truncated_target=int(long_target.sum()),
        truncated=int((long_source | long_target).sum()),
        longest_source=int(src_lengths.max(initial=0)) + 1,
        longest_target=int(tgt_lengths.max(initial=0)) + 1,
        source_tokens=len(src_values) + kept,
        target_tokens=len(tgt_values) + kept,
        max_length=max_length,
        length_policy=length_policy,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
    )
    return EncodedPairs(src_values, src_splits, tgt_values, tgt_splits,
                        np.flatnonzero(keep), stats)
