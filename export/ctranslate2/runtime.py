"""Translate with a CTranslate2 export: ctranslate2 + sentencepiece only.

Imports neither TensorFlow nor Keras (nor any module of the package that
does): a directory written by `export.ctranslate2.export_ctranslate2` runs
where only `ctranslate2`, `sentencepiece` and `numpy` are installed. The
directory holds the CTranslate2 model (`model.bin`, `config.json`, the
vocabularies), the SentencePiece models `source.model` and `target.model`
and `keras_transformer.json` (the reserved tokens, the truncation limit,
the maximum output length and the search settings).

`CTranslate2Translator` follows the input rules of every runtime of the
package (`keras_transformer.contract`): sources are truncated to
`max_source_tokens` pieces, then `[END]` is appended; a text with no piece
(empty, or only whitespace of any kind) translates to "" with score 0.0;
an empty batch gives an empty list; the output is at most the longest
source of the batch (`[END]` included) + `extra_length` pieces, capped at
`max_length`.

Greedy search is the `Translator`'s: the same pieces and score (the sum of
the token log-probabilities, `[END]` included). Beam search differs in
CTranslate2 (4.x): it ranks finished hypotheses by log P / |Y| ** beta (its
`length_penalty`; the GNMT mode of 1.x, `normalize_scores=False`, was
removed in 3.0), ours by log P / ((5 + |Y|) / 6) ** alpha. For alpha > 0 no
beta gives the same order (the ratio of the two penalties changes with
|Y|), and the stopping rules differ: CTranslate2 stops once the top beam
ended (beta = 0) or once round(beam_size * patience) hypotheses ended, ours
once no live hypothesis can beat the K-th finished one even with the
penalty of the maximum length. Both keep the same live beams step for step
(the K best extensions that do not end, out of the 2K best), so the beam
here reranks the hypotheses CTranslate2 returns by the GNMT score, finished
ones first, as `keras_transformer.decoding.beam_search` does:

- by default CTranslate2 searches as usual (beta = alpha, patience 1) and
  returns its K best: the `Translator`'s result when alpha = 0, and
  usually otherwise;
- with `exact_beam=True` (beta = 1, patience = maximum length + 1) it
  decodes every sentence to the maximum output length and returns every
  hypothesis that ended, so the best after reranking is the
  `Translator`'s, up to float rounding; every batch then costs the
  maximum output length in steps (3-16x the default's time on the test
  models, whose translations are short).

The token-level helpers (`load_translator`, `translate_ids`,
`ids_to_tokens`, `tokens_to_ids`) map id batches through the vocabularies,
for the export's verification and the benchmarks.
"""

import importlib
import os
from collections.abc import Sequence

import numpy as np

from keras_transformer.checks import check_texts
from keras_transformer.contract import (
    CTRANSLATE2_FORMAT,
    CTRANSLATE2_MANIFEST,
    DEFAULT_LENGTH_PENALTY,
    gnmt_penalty,
    known_token_ids,
    output_limit,
    read_manifest,
)
from keras_transformer.text.special_tokens import END_TOKEN, PAD_ID


def _optional(module: str, purpose: str):
    """Imports an optional package, or says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - optional dependency
        raise ImportError(
            f"{purpose} needs the `{module}` package: pip install "
            "'keras-seq2seq-transformer[bench]'") from error


def _ctranslate2():
    return _optional("ctranslate2", "CTranslate2 export")


def _sentencepiece():
    return _optional("sentencepiece", "CTranslate2Translator")


def ids_to_tokens(ids, vocabulary, pad_id: int = PAD_ID) -> list[list[str]]:
    """int ids (B, S) -> token strings per row, padding dropped."""
    ids = np.asarray(ids)
    return [[vocabulary[i] for i in row if i != pad_id] for row in ids]


def tokens_to_ids(tokens, vocabulary) -> list[list[int]]:
    """Token strings per row -> ids, through the vocabulary."""
    index = {token: i for i, token in enumerate(vocabulary)}
    return [[index[token] for token in row] for row in tokens]


def load_translator(model_dir: str, compute_type: str = "default",
                    intra_threads: int = 0, device: str = "cpu"):
    """A `ctranslate2.Translator` (CPU by default) for a converted directory."""
    return _ctranslate2().Translator(
        os.fspath(model_dir), device=device, compute_type=compute_type,
        intra_threads=intra_threads)


def search_tokens(ct2_translator, sources, max_decoding_length: int,
                  beam_size: int = 1, length_penalty: float = 0.0,
                  end_token: str = END_TOKEN,
                  exact_beam: bool = False, min_length: int = 0,
                  no_repeat_ngram_size: int = 0,
                  ) -> list[tuple[list[str], float]]:
    """Decodes token rows as the `Translator`'s search does.

    Args:
        ct2_translator: a `ctranslate2.Translator`.
        sources: token strings per row, each row ending with `end_token`.
        max_decoding_length: int, the most pieces generated (`[END]`
            included), as `contract.output_limit` gives it.
        beam_size: int, 1 for greedy search.
        length_penalty: float, the GNMT alpha (beam search only).
        end_token: str, the token that ends a target.
        exact_beam: bool, run beam search to `max_decoding_length` so that
            the reranked hypotheses hold the `Translator`'s choice.
        min_length, no_repeat_ngram_size: the summarization rules, which
            CTranslate2's `min_decoding_length` and `no_repeat_ngram_size`
            apply exactly as the Translator does (measured: same ids).

    Returns:
        One `(tokens, score)` per row: the best hypothesis, up to and
        including `end_token` when it ended, and its score (summed
        log-probabilities; for beam search divided by the GNMT penalty).
    """
    sources = [list(row) for row in sources]
    if not sources:
        return []
    options = dict(max_decoding_length=max_decoding_length,
                   min_decoding_length=min_length,
                   no_repeat_ngram_size=no_repeat_ngram_size,
                   max_input_length=0,
                   return_end_token=True, return_scores=True,
                   end_token=end_token)
    if beam_size == 1:
        results = ct2_translator.translate_batch(
            sources, beam_size=1, length_penalty=0.0, **options)
        return [(list(r.hypotheses[0]), float(r.scores[0])) for r in results]
    if exact_beam:
        # A penalty keeps CTranslate2 from stopping when the top beam ends,
        # and this patience from stopping before the last step: every
        # hypothesis it ended is returned.
        beta, patience = 1.0, max_decoding_length + 1
    else:  # Stops once `beam_size` ended; keeps the best by its own rule.
        beta, patience = length_penalty, 1
    results = ct2_translator.translate_batch(
        sources, beam_size=beam_size, length_penalty=beta, patience=patience,
        num_hypotheses=beam_size * patience, **options)
    best = []
    for result in results:
        ranked = []
        for tokens, score in zip(result.hypotheses, result.scores):
            log_prob = float(score) * len(tokens) ** beta
            finished = bool(tokens) and tokens[-1] == end_token
            ranked.append((not finished,
                           -log_prob / gnmt_penalty(len(tokens),
                                                    length_penalty),
                           list(tokens)))
        ranked.sort(key=lambda item: item[:2])
        best.append((ranked[0][2], -ranked[0][1]))
    return best


def translate_ids(ct2_translator, source_ids, source_vocabulary,
                  target_vocabulary, max_length: int, beam_size: int = 1,
                  pad_id: int = PAD_ID,
                  length_penalty: float = DEFAULT_LENGTH_PENALTY,
                  end_token: str = END_TOKEN, min_length: int = 0,
                  no_repeat_ngram_size: int = 0) -> np.ndarray:
    """Decodes id batches with CTranslate2 as the Translator does.

    Returns int32 ids (B, max_length): each row up to and including its
    `[END]`, then `pad_id`, like `Translator.translate_tokens_greedy`
    before it drops the all-padding columns. `length_penalty` (the GNMT
    alpha) applies to beam search only.
    """
    hypotheses = [tokens for tokens, _ in search_tokens(
        ct2_translator, ids_to_tokens(source_ids, source_vocabulary, pad_id),
        max_length, beam_size, length_penalty, end_token,
        min_length=min_length, no_repeat_ngram_size=no_repeat_ngram_size)]
    ids = np.full((len(hypotheses), max_length), pad_id, np.int32)
    for row, hypothesis in enumerate(tokens_to_ids(hypotheses,
                                                   target_vocabulary)):
        ids[row, :len(hypothesis)] = hypothesis
    return ids


def read_config(model_dir: str | os.PathLike) -> dict:
    """Reads the manifest (`contract.CTRANSLATE2_MANIFEST`) of an export,
    in the current schema (`contract.read_manifest`)."""
    return read_manifest(model_dir, CTRANSLATE2_MANIFEST, CTRANSLATE2_FORMAT,
                         "model_dir")


class CTranslate2Translator:
    """Text in, text out, with CTranslate2 and SentencePiece.

    Args:
        model_dir: str, a directory written by `export_ctranslate2`.
        compute_type: str, CTranslate2's compute type ("default" runs the
            stored weights: float32, or int8 for an int8 export).
        device: str, "cpu" (default) or "cuda".
        exact_beam: bool, decode every sentence to the maximum output
            length so that beam search gives the `Translator`'s result
            (slower); by default CTranslate2 stops once `beam_size`
            hypotheses ended, which usually gives it too (see the module
            docstring). Defaults to False.
        intra_threads: int, CTranslate2 threads per translation (0: its
            default).

    Attributes:
        config: the export's `keras_transformer.json`.
        beam_size, length_penalty, extra_length, max_output_tokens,
            min_length, no_repeat_ngram_size: the search settings.
        max_source_tokens: pieces kept of a source before `[END]`.
        max_length: the cap on the output length.

    Example:
    >>> translator = CTranslate2Translator("exports/ctranslate2")
    >>> translator(["forty", "seven"])
    [('vierzig', -0.05), ('sieben', -0.02)]
    """

    def __init__(self, model_dir: str | os.PathLike,
                 compute_type: str = "default", device: str = "cpu",
                 exact_beam: bool = False, intra_threads: int = 0):
        if not isinstance(exact_beam, bool):
            raise TypeError("`exact_beam` must be a bool. Received: "
                            f"exact_beam={exact_beam!r}")
        self.model_dir = os.fspath(model_dir)
        self.config = read_config(self.model_dir)
        search = self.config["search_settings"]
        self.beam_size = int(search["beam_size"])
        self.length_penalty = float(search["length_penalty"])
        self.extra_length = int(search["extra_length"])
        # Exports made before these settings existed have none of them.
        self.max_output_tokens = search.get("max_output_tokens")
        self.min_length = int(search.get("min_length", 0))
        self.no_repeat_ngram_size = int(search.get("no_repeat_ngram_size",
                                                   0))
        self.max_source_tokens = int(self.config["max_source_tokens"])
        self.source_vocab_size = int(self.config["source_vocab_size"])
        self.max_length = int(self.config["target_limit"])
        self.end_token = self.config["end_token"]
        self.exact_beam = exact_beam
        spm = _sentencepiece()
        self.source_processor = spm.SentencePieceProcessor(
            model_file=os.path.join(self.model_dir,
                                    self.config["source_model"]))
        self.target_processor = spm.SentencePieceProcessor(
            model_file=os.path.join(self.model_dir,
                                    self.config["target_model"]))
        self.translator = load_translator(self.model_dir, compute_type,
                                          intra_threads, device)

    def source_tokens(self, texts: Sequence[str | bytes]) -> list[list[str]]:
        """Texts -> source pieces, truncated, then `[END]`.

        Through ids, not piece strings: an id past the model's vocabulary
        reads as `[UNK]` (`contract.known_token_ids`), and a run of
        characters the model does not know is `[UNK]` itself, not its
        surface text (which may happen to be a token of the vocabulary).
        """
        processor = self.source_processor
        return [[processor.id_to_piece(token) for token in known_token_ids(
            processor.encode(text)[:self.max_source_tokens],
            self.source_vocab_size)] + [self.end_token]
            for text in check_texts(texts)]

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Target pieces -> text, stopping at the first `[END]`."""
        tokens = list(tokens)
        if self.end_token in tokens:
            tokens = tokens[:tokens.index(self.end_token)]
        return self.target_processor.decode_pieces(tokens)

    def __call__(self, texts: str | bytes | Sequence[str | bytes],
                 greedy: bool = False):
        """Translates a text or a list of texts.

        Args:
            texts: a str (or UTF-8 bytes), or a sequence of them.
            greedy: bool, greedy search instead of beam search.

        Returns:
            For one text, a pair `(translation, score)`; for a sequence, a
            list of such pairs.
        """
        single = isinstance(texts, (str, bytes))
        sources = self.source_tokens([texts] if single else texts)
        results = [("", 0.0)] * len(sources)
        # A text with no piece besides [END] translates to "", score 0.
        rows = [i for i, tokens in enumerate(sources) if len(tokens) > 1]
        if rows:
            length = output_limit(max(len(s) for s in sources),
                                  self.max_length, self.extra_length,
                                  self.max_output_tokens)
            found = search_tokens(
                self.translator, [sources[i] for i in rows], length,
                1 if greedy else self.beam_size, self.length_penalty,
                self.end_token, self.exact_beam, self.min_length,
                self.no_repeat_ngram_size)
            for row, (tokens, score) in zip(rows, found):
                results[row] = (self.detokenize(tokens), score)
        return results[0] if single else results
