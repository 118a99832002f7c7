"""`Translator`: a trained model and its tokenizers, text in, text out.

A `tf.Module`, so the very object that translates in Python is what
`export/saved_model.py` writes: its `tf.function`s become the SavedModel's
signatures. Inputs follow the rules of `keras_transformer.contract` (the
same in every runtime), and the search its `SearchSettings`.
"""

import tensorflow as tf

from keras_transformer import decoding
from keras_transformer.checks import check_bool, check_int
from keras_transformer.contract import SearchSettings
from keras_transformer.model import Transformer
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

_TEXT = tf.TensorSpec([None], tf.string, name="text")
_IDS = tf.TensorSpec([None, None], tf.int32, name="source_ids")

# `translate_greedy_xla` pads sources to a multiple of this many columns:
# XLA compiles one program per input shape, so a server compiles at most
# one per (batch size, bucket) instead of one per source length.
XLA_SOURCE_BUCKET = 16


class Translator(tf.Module):
    """Translates text with cached beam or greedy search.

    Args:
        model: a `Transformer` (trained).
        source_tokenizer: the source side's tokenizer.
        target_tokenizer: the target side's tokenizer.
        settings: `SearchSettings` (beam size, length penalty, output
            length, truncation, minimum length, n-gram blocking). Defaults
            to those of the model's task (`SearchSettings.for_config`):
            the paper's (§6.1) for translation.
        jit_compile: bool, run the Python-level greedy searches
            (`__call__` and `search_tokens` with beam size 1) as one
            XLA-compiled program per input shape: encoder, cache set-up
            and the whole search loop, with the output length fixed at
            trace time. Same ids as without XLA (up to float rounding);
            faster for repeated shapes, but each new (batch size, source
            length) compiles once (seconds). Beam search stays a graph
            here; the exported `translate_xla` and `translate_greedy_xla`
            compile both searches with XLA (beam with its TopK as rounds
            of argmax), whatever this flag, and the other exported
            functions never use XLA, so SavedModels and ONNX files are
            the same either way. Defaults to False.

    Example:
    >>> translator = Translator(model, source_tokenizer, target_tokenizer)
    >>> translator.translate(tf.constant(["forty-two"]))["translation"]
    """

    def __init__(self, model: Transformer, source_tokenizer,
                 target_tokenizer, settings: SearchSettings | None = None,
                 jit_compile: bool = False, name: str | None = None):
        if not isinstance(model, Transformer):
            raise TypeError(
                "`model` must be a keras_transformer Transformer (from "
                f"build_transformer or a .keras file). Received: "
                f"model={model!r:.80}")
        if settings is None:
            settings = SearchSettings.for_config(model.config)
        if not isinstance(settings, SearchSettings):
            raise TypeError(
                "`settings` must be a SearchSettings. "
                f"Received: settings={settings!r}")
        check_bool("jit_compile", jit_compile)
        super().__init__(name=name)
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.settings = settings
        self.jit_compile = jit_compile
        self.max_length = model.config.max_length
        # The most tokens generated, [END] included (the model's target
        # length: its cache and what it was trained on).
        self.target_limit = model.config.target_length
        self.source_vocab_size = model.config.source_vocab_size
        # Tokens kept of a source before [END] (the truncation rule).
        self.source_limit = settings.source_limit(model.config.source_length)

    @property
    def beam_size(self) -> int:
        return self.settings.beam_size

    # -- token level -------------------------------------------------------

    def _search(self, source_ids, beam_size, max_length=None,
                output_length=None, argmax_top_k=False):
        """(B, S) ids -> ids (B, K, L) and scores (B, K); K = 1 is greedy.

        `max_length` (a Python int, for XLA) is the paper's maximum output
        length computed beforehand; by default it is computed here.
        `output_length` (for XLA, with a data-dependent `max_length`) is
        the width of the cache and the outputs; `argmax_top_k` is beam
        search's TopK for XLA (`decoding.beam_search`).
        """
        source_ids = self.checked_ids(source_ids)
        if max_length is None:
            max_length = self.max_output_length(source_ids)
        memory, memory_mask = self.model.encode(source_ids)
        # The source ids join the context of a copy-attention model.
        cache, context = self.model.initial_cache(
            memory, memory_mask,
            max_length if output_length is None else output_length,
            source_ids)
        # Constant per source: tiled to the beams once, read by every step.
        context = decoding.tile_beams(context, beam_size)

        def step_fn(ids, index, cache):
            return self.model.decode_step(ids, index, cache, context)

        start = tf.fill([tf.shape(source_ids)[0]], START_ID)
        rules = {"min_length": self.settings.min_length,
                 "no_repeat_ngram_size": self.settings.no_repeat_ngram_size,
                 "output_length": output_length}
        if beam_size == 1:
            ids, scores = decoding.greedy_search(step_fn, start, cache,
                                                 max_length, **rules)
            return ids[:, None], scores[:, None]
        return decoding.beam_search(
            step_fn, start, cache, max_length, beam_size=beam_size,
            length_penalty=self.settings.length_penalty,
            argmax_top_k=argmax_top_k, **rules)

    def checked_ids(self, source_ids):
        """The source ids a search reads: the token-level input rules.

        Truncated to `source_limit` tokens and `[END]` (columns beyond are
        dropped), as int32, with at least one column: a batch with no
        columns gets one column of `[PAD]` (its rows then hold no token,
        which the empty-input rule of `token_outputs` turns into no
        target token and score 0), so every graph traced from it, ONNX
        included, runs on such a batch. Ids outside [0, V) are an error,
        raised twice over: `tf.debugging.Assert` gives TensorFlow (eager,
        graph, SavedModel) a message naming `source_ids`, and a gather
        from a V-row table, named after the rule, makes an exported ONNX
        graph fail too (tf2onnx drops asserts); it changes no value.

        Args:
            source_ids: int (B, S), pad id 0.

        Returns:
            int32 (B, max(1, min(S, source_limit + 1))).
        """
        source_ids = tf.convert_to_tensor(source_ids, tf.int32)
        source_ids = source_ids[:, :self.source_limit + 1]
        columns = source_ids.shape[1]
        if columns is None:
            missing = tf.maximum(0, 1 - tf.shape(source_ids)[1])
        else:
            missing = max(0, 1 - columns)
        source_ids = tf.pad(source_ids, [[0, 0], [0, missing]],
                            constant_values=PAD_ID)
        vocab = self.source_vocab_size
        valid = tf.logical_and(source_ids >= 0, source_ids < vocab)
        flat = tf.reshape(source_ids, [-1])
        invalid = tf.logical_not(tf.reshape(valid, [-1]))
        # The first bad id (static shapes, so XLA compiles it too).
        first_bad = tf.gather(
            tf.concat([flat, [0]], 0),
            tf.argmax(tf.cast(tf.concat([invalid, [True]], 0), tf.int32),
                      output_type=tf.int32))
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [f"`source_ids` must be token ids in [0, {vocab}), the source "
             "vocabulary. Received: source_ids containing", first_bad])
        with tf.control_dependencies([check]):
            # Negative ids are shifted below -V, which a gather rejects.
            index = tf.where(source_ids < 0, source_ids - vocab, source_ids)
            zero = tf.gather(tf.zeros([vocab], tf.int32), index,
                             name="source_ids_in_vocabulary")
        return source_ids + zero

    def max_output_length(self, source_ids):
        """The most tokens a search generates, `[END]` included.

        The output-limit rule (`keras_transformer.contract.output_limit`):
        the settings' `max_output_tokens` when set, else the longest
        source of the batch + `extra_length` (paper §6.1); at most
        `target_limit`, at least 1.

        Args:
            source_ids: int32 (B, S), pad id 0, as `checked_ids` returns
                them.

        Returns:
            An int32 scalar tensor.
        """
        absolute = self.settings.output_limit(self.target_limit)
        if absolute is not None:
            return tf.constant(absolute, tf.int32)
        lengths = tf.reduce_sum(tf.cast(source_ids != PAD_ID, tf.int32), 1)
        return decoding.max_output_length(
            lengths, self.settings.extra_length, limit=self.target_limit)

    def _best(self, source_ids, beam_size):
        ids, scores = self._search(source_ids, beam_size)
        return self.token_outputs(source_ids, ids[:, 0], scores[:, 0])

    def token_outputs(self, source_ids, ids, scores):
        """The best hypotheses as the token functions return them.

        The empty-input rule first (a row of `source_ids` with no token
        besides `[END]` gives no target token and score 0), then the
        columns that are padding in every row are dropped.

        Args:
            source_ids: int (B, S), the ids the search was given.
            ids: int32 (B, L), the best hypothesis of each row.
            scores: float32 (B,), their scores.

        Returns:
            {"target_ids": int32 (B, L'), "score": float32 (B,)}, L' <= L.
        """
        # The empty-input rule: no token besides [END] gives nothing.
        empty = _is_empty(source_ids)
        ids = tf.where(empty[:, None], PAD_ID, ids)
        scores = tf.where(empty, 0.0, scores)
        # Drop the columns that are padding in every row.
        width = tf.reduce_max(
            tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32), axis=1))
        width = tf.maximum(width, 0)  # 0 for an empty batch
        return {"target_ids": ids[:, :width], "score": scores}

    def _best_xla(self, source_ids, beam_size):
        """`_best` with the search compiled by XLA, on ids of any length.

        The checks, the output-limit rule and the empty-input rule run
        outside XLA; the sources are padded with `[PAD]` to a multiple of
        `XLA_SOURCE_BUCKET` columns (at most the truncation limit), which
        changes no output: padding carries attention weight 0 everywhere.
        """
        source_ids = self.checked_ids(source_ids)
        limit = self.max_output_length(source_ids)
        columns = tf.shape(source_ids)[1]
        bucket = XLA_SOURCE_BUCKET
        width = tf.maximum(columns, tf.minimum(
            (columns + bucket - 1) // bucket * bucket, self.source_limit + 1))
        padded = tf.pad(source_ids, [[0, 0], [0, width - columns]],
                        constant_values=PAD_ID)
        ids, scores = self._xla_search(padded, limit, beam_size)
        return self.token_outputs(source_ids, ids[:, 0], scores[:, 0])

    @tf.function(jit_compile=True)
    def _xla_search(self, source_ids, limit, beam_size):
        """(B, S) ids -> ids (B, K, L) and scores (B, K), one XLA program.

        XLA needs every shape at compile time: the buffers get the widest
        output the rule allows for S columns (`output_limit`: S +
        `extra_length`, or `max_output_tokens`, at most `target_limit`),
        computed from the input's shape alone; the search stops at
        `limit`, the rule's value for the real sources. Beam search takes
        its top candidates by rounds of argmax (`argmax_top_k`), which XLA
        compiles far better than TopK on CPU.
        """
        absolute = self.settings.output_limit(self.target_limit)
        if absolute is not None:
            width = absolute
        else:
            width = tf.clip_by_value(
                tf.shape(source_ids)[1] + self.settings.extra_length, 1,
                self.target_limit)
        return self._search(source_ids, beam_size, limit,
                            output_length=width, argmax_top_k=True)

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
        tokens = tokens[:, :self.source_limit]
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

    def _translate_text_xla(self, text, beam_size):
        source_ids = self.source_ids(tf.convert_to_tensor(text, tf.string))
        empty = _is_empty(source_ids)
        result = self._best_xla(source_ids, beam_size)
        translation = self.target_tokenizer.detokenize(result["target_ids"])
        return {"translation": tf.where(empty, "", translation),
                "score": tf.where(empty, 0.0, result["score"])}

    @tf.function(input_signature=[_TEXT])
    def translate_xla(self, text):
        """`translate` (beam search), its search compiled with XLA.

        The same outputs as `translate`; the tokenizers run outside XLA,
        the search is one XLA program per (batch size, source bucket)
        shape, compiled on first use (seconds), several times faster than
        the graph at batch 1 on CPU (benchmarks/RESULTS.md). TensorFlow
        Serving runs it only when started with
        `--xla_cpu_compilation_enabled=true`.
        """
        return self._translate_text_xla(text, self.beam_size)

    @tf.function(input_signature=[_TEXT])
    def translate_greedy_xla(self, text):
        """`translate_greedy`, its search compiled with XLA (same outputs;
        see `translate_xla`)."""
        return self._translate_text_xla(text, 1)

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
        check_int("beam_size", beam_size, 1)
        source_ids = tf.convert_to_tensor(source_ids)
        if source_ids.shape.rank != 2 or not source_ids.dtype.is_integer:
            raise ValueError(
                "`source_ids` must be a 2D (batch, length) tensor of integer "
                f"ids. Received: source_ids with shape {source_ids.shape} "
                f"and dtype {source_ids.dtype.name}")
        source_ids = tf.cast(source_ids, tf.int32)
        _check_id_range(source_ids.numpy(), self.source_vocab_size)
        searches = self.__dict__.setdefault("_searches", {})
        if not self.jit_compile or beam_size > 1:
            if beam_size not in searches:
                searches[beam_size] = tf.function(
                    lambda ids: self._search(ids, beam_size),
                    input_signature=[_IDS])
            return searches[beam_size](source_ids)
        # XLA needs the output length at trace time: the paper's rule,
        # computed here on the host (ids checked above, truncated as in
        # `checked_ids`), so the result is the same as above.
        source_ids = source_ids[:, :self.source_limit + 1]
        max_length = int(self.max_output_length(source_ids))
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
        weights = self.model.cross_attention_weights(source_ids,
                                                     decoder_inputs)
        weights = tf.reduce_mean(tf.convert_to_tensor(weights), axis=1)[0]
        source_tokens = self.source_tokenizer.lookup(source_ids)[0]
        target_tokens = self.target_tokenizer.lookup(target)[0]
        return ([t.decode("utf-8") for t in source_tokens.numpy()],
                [t.decode("utf-8") for t in target_tokens.numpy()],
                weights.numpy())


def _check_id_range(ids, vocab_size):
    """ValueError naming `source_ids` and a bad value, for Python callers."""
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise ValueError(
            f"`source_ids` must be token ids in [0, {vocab_size}), the "
            f"source vocabulary. Received: source_ids containing {bad[0]}")


def _is_empty(source_ids):
    """(B,) bool: rows holding no token besides [END]."""
    return tf.reduce_sum(tf.cast(source_ids != PAD_ID, tf.int32), 1) <= 1
