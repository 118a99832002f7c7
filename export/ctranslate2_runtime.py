"""Run a CTranslate2 conversion on token ids, and compare it with Keras.

Helpers of `export/ctranslate2.py`: CTranslate2 reads and writes token
strings, so ids are mapped through the vocabularies; `verify_ctranslate2`
decodes greedily with CTranslate2 and the `Translator` and compares the ids
one for one, and `max_log_prob_difference` compares teacher-forced
log-probabilities (insensitive to near-ties).
"""

import os

import numpy as np
import tensorflow as tf


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError as error:  # pragma: no cover - optional dependency
        raise ImportError(
            "CTranslate2 export needs the `ctranslate2` package: "
            "pip install 'keras-transformer[bench]'") from error
    return ctranslate2


def _positional_max_length(model):
    return model.config.max_length


def ids_to_tokens(ids, vocabulary, pad_id: int = 0) -> list[list[str]]:
    """int ids (B, S) -> token strings per row, padding dropped."""
    ids = np.asarray(ids)
    return [[vocabulary[i] for i in row if i != pad_id] for row in ids]


def tokens_to_ids(tokens, vocabulary) -> list[list[int]]:
    """Token strings per row -> ids, through the vocabulary."""
    index = {token: i for i, token in enumerate(vocabulary)}
    return [[index[token] for token in row] for row in tokens]


def load_translator(model_dir: str, compute_type: str = "default",
                    intra_threads: int = 0):
    """A `ctranslate2.Translator` on the CPU for a converted directory."""
    return _ctranslate2().Translator(
        os.fspath(model_dir), device="cpu", compute_type=compute_type,
        intra_threads=intra_threads)


def translate_ids(ct2_translator, source_ids, source_vocabulary,
                  target_vocabulary, max_length: int, beam_size: int = 1,
                  pad_id: int = 0) -> np.ndarray:
    """Decodes id batches with CTranslate2 as the Translator does.

    Returns int32 ids (B, max_length): each row up to and including its
    `[END]`, then `pad_id`, like `Translator.translate_tokens_greedy`
    before it drops the all-padding columns.
    """
    results = ct2_translator.translate_batch(
        ids_to_tokens(source_ids, source_vocabulary, pad_id),
        beam_size=beam_size, max_decoding_length=max_length,
        return_end_token=True, num_hypotheses=1)
    hypotheses = [r.hypotheses[0] for r in results]
    ids = np.full((len(hypotheses), max_length), pad_id, np.int32)
    for row, hypothesis in enumerate(tokens_to_ids(hypotheses,
                                                   target_vocabulary)):
        ids[row, :len(hypothesis)] = hypothesis
    return ids


def _translator_max_length(translator, source_ids):
    lengths = np.sum(np.asarray(source_ids) != 0, axis=1)
    longest = int(lengths.max()) if lengths.size else 0
    return max(1, min(longest + translator.settings.extra_length,
                      translator.max_length))


def verify_ctranslate2(model_dir: str, translator, source_ids,
                       compute_type: str = "default") -> dict:
    """Greedy token-for-token comparison of CTranslate2 and the Translator.

    Args:
        model_dir: a directory written by `convert_model`.
        translator: the `Translator` whose model was converted.
        source_ids: int (B, S) source ids, as `translator.source_ids` makes
            them.
        compute_type: CTranslate2 compute type ("default" runs the stored
            weights: float32, or int8 for an int8 conversion).

    Returns:
        A dict: sentences, identical (rows with identical ids), agreement
        (the share of identical rows), first_difference (None or
        {"row", "ctranslate2", "keras"}) and max_log_prob_difference
        (`max_log_prob_difference` on the Translator's outputs).
    """
    source_ids = np.asarray(source_ids, dtype=np.int32)
    if source_ids.ndim != 2 or source_ids.shape[0] == 0:
        raise ValueError(
            "`source_ids` must be a non-empty int batch (B, S). "
            f"Received: source_ids with shape {source_ids.shape}")
    source_ids = source_ids[:, :translator.max_length]
    expected = translator.translate_tokens_greedy(
        tf.constant(source_ids))["target_ids"].numpy()
    max_length = _translator_max_length(translator, source_ids)
    got = translate_ids(
        load_translator(model_dir, compute_type), source_ids,
        translator.source_tokenizer.vocabulary,
        translator.target_tokenizer.vocabulary, max_length)
    width = max(expected.shape[1], 1)
    padded = np.zeros((expected.shape[0], max_length), np.int32)
    padded[:, :expected.shape[1]] = expected
    identical = 0
    first_difference = None
    for row in range(len(source_ids)):
        if np.array_equal(got[row], padded[row]):
            identical += 1
        elif first_difference is None:
            first_difference = {"row": row,
                                "ctranslate2": got[row, :width].tolist(),
                                "keras": expected[row].tolist()}
    return {"sentences": len(source_ids), "identical": identical,
            "agreement": identical / len(source_ids),
            "first_difference": first_difference,
            "max_log_prob_difference": max_log_prob_difference(
                model_dir, translator.model, source_ids, expected,
                translator.source_tokenizer.vocabulary,
                translator.target_tokenizer.vocabulary, compute_type)}


def max_log_prob_difference(model_dir: str, model, source_ids, target_ids,
                            source_vocabulary, target_vocabulary,
                            compute_type: str = "default") -> float:
    """Largest |log p| difference, CTranslate2 vs Keras, teacher forced.

    Scores each target row (cut at its first `[END]` or padding and to
    the positional table, then `[END]` appended, as CTranslate2's
    `score_batch` does) with both runtimes; unlike a comparison of decoded
    ids this is not sensitive to near-ties between tokens.
    """
    from keras_transformer.text import END_ID, PAD_ID, START_ID

    # [START] + tokens must fit the positional table.
    limit = _positional_max_length(model)
    rows = []
    for row in np.asarray(target_ids):
        tokens = []
        for token in row:
            if token in (END_ID, PAD_ID):
                break
            tokens.append(int(token))
        rows.append(tokens[:limit - 1])
    width = max(len(tokens) for tokens in rows) + 1
    decoder_inputs = np.zeros((len(rows), width), np.int32)
    labels = np.zeros((len(rows), width), np.int32)
    for i, tokens in enumerate(rows):
        decoder_inputs[i, :len(tokens) + 1] = [START_ID] + tokens
        labels[i, :len(tokens) + 1] = tokens + [END_ID]
    logits = model({"encoder_inputs": tf.constant(source_ids, tf.int32),
                    "decoder_inputs": tf.constant(decoder_inputs)},
                   training=False)
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32)).numpy()
    keras_scores = np.take_along_axis(log_probs, labels[..., None],
                                      axis=-1)[..., 0]
    scored = load_translator(model_dir, compute_type).score_batch(
        ids_to_tokens(source_ids, source_vocabulary),
        [[target_vocabulary[t] for t in tokens] for tokens in rows])
    worst = 0.0
    for i, result in enumerate(scored):
        count = len(rows[i]) + 1
        worst = max(worst, float(np.max(np.abs(
            np.asarray(result.log_probs[:count]) - keras_scores[i, :count]))))
    return worst
