"""`Translator`: a trained model and its tokenizers, text in, text out.

A `tf.Module`, so the very object that translates in Python is what
`export/saved_model.py` writes: its `tf.function`s become the SavedModel's
signatures. Inputs are cleaned the same way in every runtime:

- a source longer than the model's `max_length` is truncated to its first
  `max_length - 1` tokens (plus `[END]`);
- a text with no token (empty, or only whitespace of any kind) translates
  to "" with score 0.0;
- invalid UTF-8 bytes become U+FFFD and unknown characters `[UNK]` (the
  tokenizer's rules);
- an empty batch gives an empty batch.
"""

import keras
import tensorflow as tf

from keras_transformer import decoding
from keras_transformer.model import (
    cross_attention_weights,
    encode,
    make_step_fn,
)
from keras_transformer.text import END_ID, PAD_ID, START_ID

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_IDS = tf.TensorSpec([None, None], tf.int32, name="source_ids")


class Translator(tf.Module):
    """Translates text with cached beam or greedy search.

    Args:
        model: a model made by `build_transformer` (trained).
        source_tokenizer: `SubwordTokenizer` of the source language.
        target_tokenizer: `SubwordTokenizer` of the target language.
        beam_size: int, beams of `translate`. Defaults to 4 (paper §6.1).
        length_penalty: float, GNMT alpha. Defaults to 0.6 (paper §6.1).
        extra_length: int, the output may be this much longer than the
            source. Defaults to 50 (paper §6.1).
        jit_compile: bool, run the Python-level greedy searches
            (`__call__` and `search_tokens` with beam size 1) as one
            XLA-compiled program per input shape: encoder, cache set-up
            and the whole search loop, with the output length fixed at
            trace time. Same ids as without XLA (up to float rounding);
            faster for repeated shapes, but each new (batch size, source
            length) compiles once (seconds). Beam search stays a graph:
            compiled with XLA it ran 1.5x (batch 1) to 8x (batch 32)
            slower on CPU, nearly all of it in XLA's TopK inside the loop
            (benchmarks/RESULTS.md). The `tf.function`s that are exported
            (`translate`, `translate_tokens`, ...) never use XLA, so
            SavedModels and ONNX files are the same either way. Defaults
            to False.

    Example:
    >>> translator = Translator(model, source_tokenizer, target_tokenizer)
    >>> translator.translate(tf.constant(["forty-two"]))["translation"]
    """

    def __init__(self, model: keras.Model, source_tokenizer,
                 target_tokenizer, beam_size: int = 4,
                 length_penalty: float = 0.6, extra_length: int = 50,
                 jit_compile: bool = False, name: str | None = None):
        for arg, value, low in (("beam_size", beam_size, 1),
                                ("extra_length", extra_length, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or (
                    value < low):
                raise ValueError(
                    f"`{arg}` must be an int >= {low}. "
                    f"Received: {arg}={value!r}")
        if not isinstance(jit_compile, bool):
            raise TypeError(
                "`jit_compile` must be a bool. "
                f"Received: jit_compile={jit_compile!r}")
        if not length_penalty >= 0:
            raise ValueError(
                "`length_penalty` must be >= 0. "
                f"Received: length_penalty={length_penalty!r}")
        super().__init__(name=name)
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        self.extra_length = extra_length
        self.jit_compile = jit_compile
        self.max_length = model.get_layer("positional_encoding").max_length

    # -- token level -------------------------------------------------------

    def _search(self, source_ids, beam_size, max_length=None):
        """(B, S) ids -> ids (B, K, L) and scores (B, K); K = 1 is greedy.

        `max_length` (a Python int, for XLA) is the paper's maximum output
        length computed beforehand; by default it is computed here.
        """
        source_ids = tf.convert_to_tensor(source_ids, tf.int32)
        source_ids = source_ids[:, :self.max_length]
        if max_length is None:
            max_length = self._max_output_length(source_ids)
        memory, memory_mask = encode(self.model, source_ids)
        step_fn, cache = make_step_fn(self.model, memory, memory_mask,
                                      max_length, beam_size)
        start = tf.fill([tf.shape(source_ids)[0]], START_ID)
        if beam_size == 1:
            ids, scores = decoding.greedy_search(step_fn, start, cache,
                                                 max_length)
            return ids[:, None], scores[:, None]
        return decoding.beam_search(step_fn, start, cache, max_length,
                                    beam_size=beam_size,
                                    length_penalty=self.length_penalty)

    def _max_output_length(self, source_ids):
        """The paper's maximum output length for (truncated) source ids."""
        lengths = tf.reduce_sum(tf.cast(source_ids != PAD_ID, tf.int32), 1)
        return decoding.max_output_length(lengths, self.extra_length,
                                          limit=self.max_length)

    def _best(self, source_ids, beam_size):
        ids, scores = self._search(source_ids, beam_size)
        ids = ids[:, 0]
        # Drop the columns that are padding in every row.
        width = tf.reduce_max(
            tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32), axis=1))
        return {"target_ids": ids[:, :width], "score": scores[:, 0]}

    @tf.function(input_signature=[_IDS])
    def translate_tokens(self, source_ids):
        """Beam search on ids: {"target_ids" (B, L), "score" (B,)}."""
        return self._best(source_ids, self.beam_size)

    @tf.function(input_signature=[_IDS])
    def translate_tokens_greedy(self, source_ids):
        """Greedy search on ids: {"target_ids" (B, L), "score" (B,)}."""
        return self._best(source_ids, 1)

    # -- text level --------------------------------------------------------

    def source_ids(self, text):
        """string (B,) -> int32 (B, S): tokens, truncated, then [END]."""
        tokens = self.source_tokenizer.tokenize(text)
        tokens = tokens[:, :self.max_length - 1]
        end = tf.fill([tokens.nrows(), 1], END_ID)
        ids = tf.concat([tokens, tf.RaggedTensor.from_tensor(end)], axis=1)
        return ids.to_tensor(PAD_ID)

    def _translate_text(self, text, beam_size):
        source_ids = self.source_ids(tf.convert_to_tensor(text, tf.string))
        empty = _is_empty(source_ids)
        result = self._best(source_ids, beam_size)
        translation = self.target_tokenizer.detokenize(result["target_ids"])
        return {"translation": tf.where(empty, "", translation),
                "score": tf.where(empty, 0.0, result["score"])}

    @tf.function(input_signature=[_TEXT])
    def translate(self, text):
        """Beam search: {"translation" string (B,), "score" float32 (B,)}."""
        return self._translate_text(text, self.beam_size)

    @tf.function(input_signature=[_TEXT])
    def translate_greedy(self, text):
        """Greedy: {"translation" string (B,), "score" float32 (B,)}."""
        return self._translate_text(text, 1)

    # -- Python conveniences -----------------------------------------------

    def search_tokens(self, source_ids, beam_size: int | None = None):
        """n-best search on ids from Python (greedy with XLA if `jit_compile`).

        Args:
            source_ids: int32 (B, S), pad id 0, each row ending with
                [END] (as `source_ids` makes them).
            beam_size: int, defaults to the translator's; 1 is greedy.

        Returns:
            `(ids int32 (B, K, L), scores float32 (B, K))`, best first, K
            the beam size; rows end with [END] then padding.
        """
        beam_size = self.beam_size if beam_size is None else beam_size
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or (
                beam_size < 1):
            raise ValueError("`beam_size` must be an int >= 1. "
                             f"Received: beam_size={beam_size!r}")
        source_ids = tf.convert_to_tensor(source_ids, tf.int32)
        if source_ids.shape.rank != 2:
            raise ValueError(
                "`source_ids` must be a 2D (batch, length) tensor. "
                f"Received: source_ids with shape {source_ids.shape}")
        searches = self.__dict__.setdefault("_searches", {})
        if not self.jit_compile or beam_size > 1:
            if beam_size not in searches:
                searches[beam_size] = tf.function(
                    lambda ids: self._search(ids, beam_size),
                    input_signature=[_IDS])
            return searches[beam_size](source_ids)
        # XLA needs the output length at trace time: the paper's rule,
        # computed here on the host, so the result is the same as above.
        source_ids = source_ids[:, :self.max_length]
        max_length = int(self._max_output_length(source_ids))
        key = ("xla", beam_size)
        if key not in searches:
            searches[key] = tf.function(
                lambda ids, length: self._search(ids, beam_size, length),
                jit_compile=True, reduce_retracing=False)
        return searches[key](source_ids, max_length)

    def __call__(self, texts, beam_size: int | None = None,
                 nbest: int = 1) -> list:
        """Translates a str or a list of str.

        Returns a list (one entry per text) of `nbest` (translation, score)
        pairs, best first; with `nbest=1`, of (translation, score) pairs.
        `beam_size=1` is greedy search.
        """
        single = isinstance(texts, (str, bytes))
        texts = [texts] if single else list(texts)
        beam_size = self.beam_size if beam_size is None else beam_size
        if nbest < 1 or nbest > beam_size:
            raise ValueError(
                "`nbest` must be between 1 and the beam size "
                f"({beam_size}). Received: nbest={nbest}")
        if not texts:
            return []
        source_ids = self.source_ids(tf.constant(texts, tf.string))
        ids, scores = self.search_tokens(source_ids, beam_size)
        empty = _is_empty(source_ids).numpy().tolist()
        results = []
        for row, is_empty in enumerate(empty):
            strings = self.target_tokenizer.detokenize(ids[row, :nbest])
            pairs = [("", 0.0) if is_empty else (s.decode("utf-8"), float(v))
                     for s, v in zip(strings.numpy(), scores[row, :nbest])]
            results.append(pairs if nbest > 1 else pairs[0])
        return results[0] if single else results

    def attention(self, text: str, translation_ids=None):
        """Cross-attention of one sentence for plotting.

        Returns `(source_tokens, target_tokens, weights)`: token strings
        and the last decoder layer's weights averaged over heads, (T, S).
        """
        source_ids = self.source_ids(tf.constant([text]))
        if translation_ids is None:
            translation_ids = self.translate_tokens(source_ids)["target_ids"]
        target = tf.convert_to_tensor(translation_ids, tf.int32)
        length = tf.reduce_sum(tf.cast(target != PAD_ID, tf.int32))
        target = target[:, :length]
        decoder_inputs = tf.concat(
            [tf.fill([1, 1], START_ID), target[:, :-1]], axis=1)
        weights = cross_attention_weights(self.model, source_ids,
                                          decoder_inputs)
        weights = tf.reduce_mean(tf.convert_to_tensor(weights), axis=1)[0]
        source_tokens = self.source_tokenizer.lookup(source_ids)[0]
        target_tokens = self.target_tokenizer.lookup(target)[0]
        return ([t.decode("utf-8") for t in source_tokens.numpy()],
                [t.decode("utf-8") for t in target_tokens.numpy()],
                weights.numpy())


def _is_empty(source_ids):
    """(B,) bool: rows holding no token besides [END]."""
    return tf.reduce_sum(tf.cast(source_ids != PAD_ID, tf.int32), 1) <= 1
