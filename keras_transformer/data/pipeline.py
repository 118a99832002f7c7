"""The tf.data input pipeline: length buckets, token budget, pad, shift.

Each element is `(inputs, labels)` with

- `inputs["encoder_inputs"]`: int32 (B, S), source tokens + [END];
- `inputs["decoder_inputs"]`: int32 (B, T), [START] + target tokens;
- `labels`: int32 (B, T), target tokens + [END] (the decoder inputs shifted
  left by one, Section 3.1: the prediction at position i sees only outputs
  before i);

all padded with 0 ([PAD]) to the longest sequence of the batch.

Sentences are tokenized once (`encode_pairs`). Batches hold pairs of similar
length (Section 5.1: "Sentence pairs were batched together by approximate
sequence length") under a token budget `batch_tokens`: bucket k holds the
pairs whose longer side is at most `bucket_lengths[k]` tokens and gets
batches of `batch_tokens // bucket_lengths[k]` pairs, so a batch of B pairs
padded to L = max(S, T) has B * L <= batch_tokens.

This is what `tf.data.Dataset.bucket_by_sequence_length` does after a full
shuffle, but planned per epoch with a few vectorized ops on the index array
instead of per-element grouping: each epoch shuffles all pairs, sorts them
stably by bucket, cuts each bucket into batches and shuffles the batch
order; each batch is then gathered and padded in one step. Measured on 50k
pairs (2 busy CPU cores): about 1 s per epoch, against 10 s for
`bucket_by_sequence_length` over a per-element map.

The dataset is a plain `tf.data.Dataset`; to train under `tf.distribute`,
pass it to `strategy.experimental_distribute_dataset` (or to `model.fit`
inside the strategy's scope).
"""

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_transformer.checks import check_int, is_int
from keras_transformer.data.encoding import (
    DEFAULT_MAX_LENGTH,
    EncodedPairs,
    _check_length_args,
    encode_pairs,
)
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

DEFAULT_BATCH_TOKENS = 4096
# Bucket lengths grow by 10% from 8 tokens, as in tensor2tensor.
_MIN_BUCKET_LENGTH = 8
_BUCKET_STEP = 1.1


def default_bucket_lengths(max_length: int) -> list[int]:
    """Returns the default bucket lengths: 8, 9, ..., growing 10%, max_length.

    Each is the longest (inclusive) padded length in its bucket.
    """
    check_int("max_length", max_length, 2)
    lengths, length = [], _MIN_BUCKET_LENGTH
    while length < max_length:
        lengths.append(length)
        length = max(length + 1, int(length * _BUCKET_STEP))
    return lengths + [max_length]


def _check_bucket_lengths(lengths, max_length) -> list[int]:
    if lengths is None:
        return default_bucket_lengths(max_length)
    lengths = list(lengths)
    if (not lengths or not all(map(is_int, lengths))
            or any(b <= a for a, b in zip(lengths, lengths[1:]))
            or lengths[0] < 1 or lengths[-1] > max_length):
        raise ValueError(
            "`bucket_lengths` must be increasing positive ints up to "
            f"`max_length`={max_length}. Received: bucket_lengths={lengths!r}"
        )
    return lengths if lengths[-1] == max_length else lengths + [max_length]


def make_dataset(
    data,
    source_tokenizer=None,
    target_tokenizer=None,
    *,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    length_policy: str | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    repeat: bool = False,
    bucket_lengths: Sequence[int] | None = None,
    pad_to_bucket_boundary: bool = False,
) -> tf.data.Dataset:
    """Builds the training or evaluation dataset of a corpus.

    See the module docstring for the element structure. With a token budget
    (the default), pairs are grouped into length buckets and bucket k, whose
    pairs are at most `bucket_lengths[k]` long, gets batches of
    `batch_tokens // bucket_lengths[k]` pairs; when shuffled, a bucket's
    pairs are batched in order of target length (ties in random order), so
    that a batch's targets are about equally long. With `batch_size`,
    batches have a fixed number of pairs, in shuffled (not length) order.

    Args:
        data: `ParallelCorpus`, sequence of (source, target) str pairs, or
            `EncodedPairs` from `encode_pairs` (to reuse the tokenization
            and read its `stats`; the tokenizers are then ignored).
        source_tokenizer: object with `tokenize(tf.string [B])` -> int
            `tf.RaggedTensor` [B, (S)] without special tokens.
        target_tokenizer: the same for targets.
        batch_tokens: int or None, the token budget B * max(S, T) of each
            batch; at least `max_length`. Defaults to 4096 unless
            `batch_size` is given.
        batch_size: int or None, a fixed number of pairs per batch instead
            of a token budget.
        max_length: int or None, see `encode_pairs`; defaults to 256, or to
            the value `data` was encoded with.
        length_policy: str or None, "drop" or "truncate"; see
            `encode_pairs`. Defaults to "drop", or to `data`'s.
        shuffle: bool, whether to reshuffle all pairs each epoch.
        seed: int or None, the shuffle seed; fixed seeds give the same
            batches in the same order.
        repeat: bool, whether to repeat forever.
        bucket_lengths: sequence of int or None, the longest padded length
            of each bucket; `max_length` is appended if absent. Defaults to
            `default_bucket_lengths(max_length)`.
        pad_to_bucket_boundary: bool, whether to pad each batch to its
            bucket's length rather than to its longest pair (fewer distinct
            shapes, e.g. for XLA).

    Returns:
        A `tf.data.Dataset` of `({"encoder_inputs": (B, S), "decoder_inputs":
        (B, T)}, labels (B, T))`, all int32.

    Example:

    >>> class Chars:
    ...     def tokenize(self, texts):
    ...         return tf.strings.unicode_decode(texts, "UTF-8") + 4
    >>> ds = make_dataset([("ab", "xyz")], Chars(), Chars(), batch_size=1)
    >>> inputs, labels = next(iter(ds))
    >>> inputs["decoder_inputs"].numpy(), labels.numpy()
    (array([[  2, 124, 125, 126]], dtype=int32), \
array([[124, 125, 126,   3]], dtype=int32))
    """
    if isinstance(data, EncodedPairs):
        for argument, value, encoded in (
                ("max_length", max_length, data.stats.max_length),
                ("length_policy", length_policy, data.stats.length_policy)):
            if value is not None and value != encoded:
                raise ValueError(
                    f"`{argument}` differs from the one `data` was encoded "
                    f"with ({encoded!r}). Received: {argument}={value!r}"
                )
        max_length = data.stats.max_length
    else:
        max_length = DEFAULT_MAX_LENGTH if max_length is None else max_length
        length_policy = "drop" if length_policy is None else length_policy
        _check_length_args(max_length, length_policy)
    if batch_size is not None and batch_tokens is not None:
        raise ValueError(
            "Pass `batch_tokens` or `batch_size`, not both. Received: "
            f"batch_tokens={batch_tokens}, batch_size={batch_size}"
        )
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    else:
        if batch_tokens is None:
            batch_tokens = DEFAULT_BATCH_TOKENS
        check_int("batch_tokens", batch_tokens, 1)
        if batch_tokens < max_length:
            raise ValueError(
                "`batch_tokens` must be at least `max_length` "
                f"({max_length}) so every pair fits in a batch. "
                f"Received: batch_tokens={batch_tokens}"
            )
        lengths = _check_bucket_lengths(bucket_lengths, max_length)
    if seed is not None:
        check_int("seed", seed, 0)
    if isinstance(data, EncodedPairs):
        encoded = data
    else:
        encoded = encode_pairs(data, source_tokenizer, target_tokenizer,
                               max_length=max_length,
                               length_policy=length_policy)

    if batch_size is not None:
        lengths, sizes = [max_length], [batch_size]
    else:
        sizes = [batch_tokens // n for n in lengths]
    # Shuffled token-budget batches are sorted by target length within
    # their bucket; fixed-size batches and unshuffled ones keep their
    # (random or corpus) order.
    sort_targets = shuffle and batch_size is None
    return _batches(encoded, lengths, sizes, shuffle, seed, repeat,
                    pad_to_bucket_boundary, sort_targets)


def _batches(encoded, lengths, sizes, shuffle, seed, repeat, pad_to_bucket,
             sort_targets):
    """Groups pairs into per-bucket batches of `sizes[k]`, reshuffled each
    epoch, then gathers and pads each batch's ids (all vectorized)."""
    num_pairs = len(encoded)
    pair_lengths = np.maximum(np.diff(encoded.source_splits),
                              np.diff(encoded.target_splits)) + 1
    # Bucket k holds the pairs of lengths[k - 1] < length <= lengths[k].
    pair_bucket = np.searchsorted(lengths, pair_lengths, side="left")
    # Sorted by bucket, the pairs of bucket k sit at bucket_start[k]... and
    # its batches are fixed slices of that range.
    counts = np.bincount(pair_bucket, minlength=len(lengths))
    bucket_start = np.cumsum(counts) - counts
    starts, limits, buckets = [], [], []
    for k, size in enumerate(sizes):
        first = np.arange(bucket_start[k], bucket_start[k] + counts[k], size)
        starts.append(first)
        limits.append(np.minimum(first + size, bucket_start[k] + counts[k]))
        buckets.append(np.full(len(first), k))
    starts, limits, buckets = (
        tf.constant(np.concatenate(x), tf.int64)
        for x in (starts, limits, buckets))
    num_batches = int(starts.shape[0])

    target_lengths = np.diff(encoded.target_splits)
    sort_key = pair_bucket
    if sort_targets:
        sort_key = (pair_bucket * (int(target_lengths.max(initial=0)) + 1)
                    + target_lengths)
    sort_key = tf.constant(sort_key, tf.int64)
    bucket_lengths = tf.constant(lengths, tf.int64)
    source_values = tf.constant(encoded.source_values, tf.int32)
    source_splits = tf.constant(encoded.source_splits, tf.int64)
    target_values = tf.constant(encoded.target_values, tf.int32)
    target_splits = tf.constant(encoded.target_splits, tf.int64)

    def epoch(order):  # order: int64 [N], this epoch's order of the pairs
        # By bucket (then, with `sort_targets`, by target length within a
        # bucket: a batch's targets are then about equally long, so little
        # of the decoder and output layer's work is padding, as a
        # summary's length does not follow its document's); equal keys
        # keep the random order.
        by_bucket = tf.argsort(tf.gather(sort_key, order), stable=True)
        members = tf.gather(order, by_bucket)
        batch_order = tf.range(num_batches)
        if shuffle:
            # The order is already random: its ends seed the batch order.
            key = tf.stack([order[0], order[-1]])
            batch_order = tf.random.experimental.stateless_shuffle(
                batch_order, seed=key)
        slices = tf.data.Dataset.from_tensor_slices(tuple(
            tf.gather(x, batch_order) for x in (starts, limits, buckets)))
        return slices.map(lambda start, limit, bucket: (
            members[start:limit], bucket))

    def batch(indices, bucket):  # indices: int64 [B]
        source = tf.gather(tf.RaggedTensor.from_row_splits(
            source_values, source_splits, validate=False), indices)
        target = tf.gather(tf.RaggedTensor.from_row_splits(
            target_values, target_splits, validate=False), indices)
        column = tf.ones([tf.shape(indices)[0], 1], tf.int32)
        start = tf.RaggedTensor.from_tensor(column * START_ID)
        end = tf.RaggedTensor.from_tensor(column * END_ID)
        width = bucket_lengths[bucket]

        def pad(ids):  # ragged [B, (L)] -> [B, L'], L' longest or width
            ids = ids.to_tensor(PAD_ID)
            if pad_to_bucket:
                extra = tf.cast(width, tf.int32) - tf.shape(ids)[1]
                ids = tf.pad(ids, [[0, 0], [0, extra]])
            return ids

        inputs = {"encoder_inputs": pad(tf.concat([source, end], 1)),
                  "decoder_inputs": pad(tf.concat([start, target], 1))}
        labels = pad(tf.concat([target, end], 1))
        return inputs, labels

    # One element per epoch: the pairs in shuffled (or corpus) order.
    orders = tf.data.Dataset.range(num_pairs)
    if shuffle:
        orders = orders.shuffle(num_pairs, seed=seed,
                                reshuffle_each_iteration=True)
    dataset = orders.batch(num_pairs).flat_map(epoch).map(
        batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.apply(
        tf.data.experimental.assert_cardinality(num_batches))
    if repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)
