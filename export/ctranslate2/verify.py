"""Verify a CTranslate2 conversion against the Keras model (TensorFlow).

`verify_ctranslate2` compares greedy token ids with the `Translator`'s,
`verify_text` greedy translations (each an `export.parity` report), and
`max_log_prob_difference` teacher-forced log-probabilities (insensitive to
near-ties). The runtime itself (`ctranslate2.runtime`) needs no
TensorFlow; these checks do.
"""

import numpy as np
import tensorflow as tf

from keras_transformer.contract import output_limit
from keras_transformer.export import parity
from keras_transformer.export.ctranslate2 import runtime
from keras_transformer.text import special_tokens as special


def _first(report):
    """The first mismatch of a parity report as {"row", "ctranslate2",
    "keras"}, or None."""
    if not report["mismatches"]:
        return None
    first = report["mismatches"][0]
    return {"row": first["row"], "ctranslate2": first["got"],
            "keras": first["expected"]}


def verify_ctranslate2(model_dir: str, translator, source_ids,
                       compute_type: str = "default",
                       min_agreement: float = 0.0, texts=None) -> dict:
    """Greedy token-for-token comparison of CTranslate2 and the Translator.

    Args:
        model_dir: a directory written by `convert_model`.
        translator: the `Translator` whose model was converted.
        source_ids: int (B, S) source ids, as `translator.source_ids` makes
            them.
        compute_type: CTranslate2 compute type ("default" runs the stored
            weights: float32, or int8 for an int8 conversion).
        min_agreement: float in [0, 1], the least share of rows with
            identical ids. Defaults to 0 (report only).
        texts: optional, the texts of the rows, named in the mismatches.

    Returns:
        A dict: sentences, identical (rows with identical ids), agreement
        (the share of identical rows), first_difference (None or
        {"row", "ctranslate2", "keras"}), max_log_prob_difference
        (`max_log_prob_difference` on the Translator's outputs) and
        parity (the `export.parity` report).

    Raises:
        ValueError: fewer than `min_agreement` of the rows agree, naming
            the first difference.
    """
    source_ids = np.asarray(source_ids, dtype=np.int32)
    if source_ids.ndim != 2 or source_ids.shape[0] == 0:
        raise ValueError(
            "`source_ids` must be a non-empty int batch (B, S). "
            f"Received: source_ids with shape {source_ids.shape}")
    source_ids = source_ids[:, :translator.source_limit + 1]
    expected = translator.translate_tokens_greedy(
        tf.constant(source_ids))["target_ids"].numpy()
    lengths = np.sum(source_ids != special.PAD_ID, axis=1)
    settings = translator.settings
    max_length = output_limit(
        int(lengths.max()), translator.target_limit, settings.extra_length,
        settings.max_output_tokens)
    source_vocabulary = translator.source_tokenizer.vocabulary
    target_vocabulary = translator.target_tokenizer.vocabulary
    got = runtime.translate_ids(
        runtime.load_translator(model_dir, compute_type), source_ids,
        source_vocabulary, target_vocabulary, max_length,
        min_length=settings.min_length,
        no_repeat_ngram_size=settings.no_repeat_ngram_size)
    # The Translator gives no token for a row with no source token.
    got[lengths <= 1] = special.PAD_ID
    inputs = [parity.token_row(row) for row in source_ids]
    result = parity.check(
        parity.compare(got, expected, inputs=inputs if texts is None
                       else list(texts), min_agreement=min_agreement),
        "CTranslate2's greedy output", "the Translator")
    return {"sentences": result["rows"], "identical": result["identical"],
            "agreement": result["share"],
            "first_difference": _first(result), "parity": result,
            "max_log_prob_difference": max_log_prob_difference(
                model_dir, translator.model, source_ids, expected,
                source_vocabulary, target_vocabulary, compute_type)}


def verify_text(model_dir: str, translator, texts,
                compute_type: str = "default",
                min_agreement: float = 0.0) -> dict:
    """Greedy translations of `CTranslate2Translator` vs the Translator's.

    Scores are reported, not checked: CTranslate2 renormalizes the
    probabilities after a `min_length` or `no_repeat_ngram_size` ban.

    Args:
        model_dir: a directory written by `export_ctranslate2`.
        translator: the `Translator` whose model was converted.
        texts: a non-empty list of source texts (str or UTF-8 bytes).
        compute_type: CTranslate2 compute type.
        min_agreement: float in [0, 1], the least share of texts
            translated to the same string. Defaults to 0 (report only).

    Returns:
        A dict: text_identical (texts translated to the same string),
        text_agreement (their share), first_text_difference (None or
        {"row", "ctranslate2", "keras"}), max_score_difference (over the
        identical translations) and text_parity (the `export.parity`
        report).

    Raises:
        ValueError: fewer than `min_agreement` of the texts agree, naming
            the first difference.
    """
    texts = list(texts)
    got = runtime.CTranslate2Translator(model_dir, compute_type)(
        texts, greedy=True)
    expected = translator.translate_greedy(tf.constant(texts, tf.string))
    result = parity.check(parity.compare(
        [translation for translation, _ in got],
        [s.decode("utf-8") for s in expected["translation"].numpy()],
        [score for _, score in got], expected["score"].numpy(),
        inputs=texts, min_agreement=min_agreement, score_tolerance=None),
        "CTranslate2's greedy translation", "the Translator")
    return {"text_identical": result["identical"],
            "text_agreement": result["share"],
            "first_text_difference": _first(result),
            "max_score_difference": result["max_score_difference"],
            "text_parity": result}


def max_log_prob_difference(model_dir: str, model, source_ids, target_ids,
                            source_vocabulary, target_vocabulary,
                            compute_type: str = "default") -> float:
    """Largest |log p| difference, CTranslate2 vs Keras, teacher forced.

    Scores each target row (cut at its first `[END]` or padding and to
    the positional table, then `[END]` appended, as CTranslate2's
    `score_batch` does) with both runtimes; unlike a comparison of decoded
    ids this is not sensitive to near-ties between tokens. With
    `config.suppress_reserved` both sides are distributions over the
    tokens other than [PAD] and [START] (the model's logits suppressed as
    `Transformer.decode_step` does), so they compare like with like.
    """
    limit = model.config.max_length  # [START] + tokens fit the table.
    rows = []
    for row in np.asarray(target_ids):
        ends = np.flatnonzero((row == special.END_ID) | (row == special.PAD_ID))
        rows.append(row[:ends[0] if ends.size else len(row)][:limit - 1])
    rows = [row.tolist() for row in rows]
    width = max(len(tokens) for tokens in rows) + 1
    decoder_inputs = np.zeros((len(rows), width), np.int32)
    labels = np.zeros((len(rows), width), np.int32)
    for i, tokens in enumerate(rows):
        decoder_inputs[i, :len(tokens) + 1] = [special.START_ID] + tokens
        labels[i, :len(tokens) + 1] = tokens + [special.END_ID]
    logits = model({"encoder_inputs": tf.constant(source_ids, tf.int32),
                    "decoder_inputs": tf.constant(decoder_inputs)},
                   training=False)
    # With `suppress_reserved` the converted projection's bias holds -1e9 at
    # [PAD] and [START] (`convert.SUPPRESSED_BIAS`), so CTranslate2 scores
    # over the other tokens; the model's teacher-forced logits keep them,
    # so they are suppressed here as in `decode_step` (renormalized).
    log_probs = tf.nn.log_softmax(
        model.suppress_reserved(tf.cast(logits, tf.float32))).numpy()
    keras_scores = np.take_along_axis(log_probs, labels[..., None],
                                      axis=-1)[..., 0]
    scored = runtime.load_translator(model_dir, compute_type).score_batch(
        runtime.ids_to_tokens(source_ids, source_vocabulary),
        [[target_vocabulary[t] for t in tokens] for tokens in rows],
        max_input_length=0)
    worst = 0.0
    for i, result in enumerate(scored):
        count = len(rows[i]) + 1
        worst = max(worst, float(np.max(np.abs(
            np.asarray(result.log_probs[:count]) - keras_scores[i, :count]))))
    return worst
