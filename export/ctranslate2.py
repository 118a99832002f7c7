"""Convert a trained Transformer to CTranslate2, and verify the conversion.

CTranslate2 (https://github.com/OpenNMT/CTranslate2) runs encoder-decoder
Transformers in C++ with fused kernels and optional int8 weights. This
module fills a `ctranslate2.specs.TransformerSpec` from the Keras weights of
a model made by `build_transformer`:

- post-norm (the paper) or pre-norm blocks, the FFN activation and the
  LayerNorm epsilon of the model;
- embeddings multiplied by sqrt(d_model) (section 3.4);
- the model's own sinusoidal table, sine and cosine interleaved as in the
  paper (section 3.5), written out explicitly so that CTranslate2 does not
  use its built-in table (which concatenates them);
- the output projection tied to the target embedding (CTranslate2 stores
  the shared matrix once, as an alias);
- the vocabularies as token strings, with `[START]`, `[END]` and `[UNK]` as
  its bos, eos and unk tokens; the sources carry their own `[END]`, as the
  `Translator` feeds them.

`verify_ctranslate2` decodes greedily with both runtimes and compares the
token ids one for one. Requires the optional `ctranslate2` package
(`pip install keras-transformer[bench]`).

Example:
>>> report = export_ctranslate2(translator, "exports/ct2")
>>> report["identical"] == report["sentences"]
True
"""

import os

import keras
import numpy as np
import tensorflow as tf

QUANTIZATIONS = (None, "int8")
_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU"}


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError as error:  # pragma: no cover - optional dependency
        raise ImportError(
            "CTranslate2 export needs the `ctranslate2` package: "
            "pip install 'keras-transformer[bench]'") from error
    return ctranslate2


def _layer(model, *names):
    for name in names:
        try:
            return model.get_layer(name)
        except ValueError:
            continue
    raise ValueError(
        f"`model` has no layer named {' or '.join(names)}; was it made by "
        f"build_transformer? Received: model={model.name!r}")


def _array(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)


def _linear(spec, dense, transpose_from=None):
    """Fills a LinearSpec (weight [out, in]) from an EinsumDense or Dense."""
    kernel = _array(dense.kernel)
    if transpose_from == "input_first":  # (D, H, K) -> (H * K, D)
        kernel = kernel.reshape(kernel.shape[0], -1).T
    elif transpose_from == "output_last":  # (H, K, D) -> (D, H * K)
        kernel = kernel.reshape(-1, kernel.shape[-1]).T
    else:  # Dense (in, out) -> (out, in)
        kernel = kernel.T
    spec.weight = np.ascontiguousarray(kernel)
    if getattr(dense, "bias", None) is not None:
        spec.bias = _array(dense.bias).reshape(-1)


def _fuse(spec, denses):
    """One LinearSpec holding several input-first einsum projections."""
    parts = []
    for dense in denses:
        holder = type("Holder", (), {})()
        _linear(holder, dense, "input_first")
        parts.append(holder)
    spec.weight = np.concatenate([p.weight for p in parts])
    if all(hasattr(p, "bias") for p in parts):
        spec.bias = np.concatenate([p.bias for p in parts])


def _layer_norm(spec, residual_norm):
    norm = residual_norm.layer_norm
    spec.gamma = _array(norm.gamma)
    spec.beta = _array(norm.beta)


def _attention(spec, attention, residual_norm, self_attention):
    if self_attention:
        _fuse(spec.linear[0], [attention.query_dense, attention.key_dense,
                               attention.value_dense])
    else:
        _linear(spec.linear[0], attention.query_dense, "input_first")
        _fuse(spec.linear[1], [attention.key_dense, attention.value_dense])
    _linear(spec.linear[-1], attention.output_dense, "output_last")
    _layer_norm(spec.layer_norm, residual_norm)


def _feed_forward(spec, layer):
    _linear(spec.linear_0, layer.feed_forward.inner_dense)
    _linear(spec.linear_1, layer.feed_forward.output_dense)
    _layer_norm(spec.layer_norm, layer.feed_forward_residual)


def _check_vocabulary(name, vocabulary, size):
    if isinstance(vocabulary, (str, bytes)):
        raise TypeError(
            f"`{name}` must be a sequence of token strings. "
            f"Received: {name}={vocabulary!r:.60}")
    vocabulary = [str(token) for token in vocabulary]
    if len(vocabulary) != size:
        raise ValueError(
            f"`{name}` must have one token per embedding row ({size}). "
            f"Received: {name} of {len(vocabulary)} tokens")
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError(
            f"`{name}` must hold unique tokens: CTranslate2 maps tokens to "
            f"ids by string. Received: {name} with duplicates")
    return vocabulary


def build_spec(model, source_vocabulary, target_vocabulary,
               special_tokens=("[START]", "[END]", "[UNK]")):
    """Fills a `ctranslate2.specs.TransformerSpec` from a Keras model.

    Args:
        model: a `keras.Model` made by `build_transformer` (or reloaded).
        source_vocabulary: sequence of str, the source tokens in id order.
        target_vocabulary: sequence of str, the target tokens in id order.
        special_tokens: (bos, eos, unk) token strings. Defaults to the
            reserved tokens of `keras_transformer.text`.

    Returns:
        The validated spec (not yet quantized or saved).
    """
    ctranslate2 = _ctranslate2()
    specs = ctranslate2.specs
    encoder = _layer(model, "encoder")
    decoder = _layer(model, "decoder")
    source_embedding = _layer(model, "source_embedding", "shared_embedding")
    target_embedding = _layer(model, "target_embedding", "shared_embedding")
    positional = _layer(model, "positional_encoding")
    source_vocabulary = _check_vocabulary(
        "source_vocabulary", source_vocabulary,
        source_embedding.vocabulary_size)
    target_vocabulary = _check_vocabulary(
        "target_vocabulary", target_vocabulary,
        target_embedding.vocabulary_size)
    bos, eos, unk = special_tokens
    for token in special_tokens:
        if token not in target_vocabulary:
            raise ValueError(
                "`special_tokens` must be in `target_vocabulary`. "
                f"Received: special_tokens={special_tokens!r}")
    if encoder.activation not in _ACTIVATIONS:
        raise ValueError(
            f"CTranslate2 export supports the activations "
            f"{sorted(_ACTIVATIONS)}. Received: activation="
            f"{encoder.activation!r}")
    activation = getattr(specs.Activation, _ACTIVATIONS[encoder.activation])
    pre_norm = bool(encoder.norm_first)

    spec = specs.TransformerSpec(
        specs.TransformerEncoderSpec(
            encoder.num_layers, encoder.num_heads, pre_norm=pre_norm,
            activation=activation),
        specs.TransformerDecoderSpec(
            decoder.num_layers, decoder.num_heads, pre_norm=pre_norm,
            activation=activation))
    # Section 3.5, with the model's own (interleaved) table.
    table = np.asarray(positional.table, dtype=np.float32)
    for side, embedding in ((spec.encoder, source_embedding),
                            (spec.decoder, target_embedding)):
        side.scale_embeddings = bool(embedding.scale)
        side.position_encodings.encodings = table
    spec.encoder.embeddings[0].weight = _array(source_embedding.embeddings)
    spec.decoder.embeddings.weight = _array(target_embedding.embeddings)

    for layer_spec, layer in zip(spec.encoder.layer, encoder.blocks):
        _attention(layer_spec.self_attention, layer.self_attention,
                   layer.self_attention_residual, self_attention=True)
        _feed_forward(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.blocks):
        _attention(layer_spec.self_attention, layer.self_attention,
                   layer.self_attention_residual, self_attention=True)
        _attention(layer_spec.attention, layer.cross_attention,
                   layer.cross_attention_residual, self_attention=False)
        _feed_forward(layer_spec.ffn, layer)
    if pre_norm:
        for side, stack in ((spec.encoder, encoder),
                            (spec.decoder, decoder)):
            side.layer_norm.gamma = _array(stack.final_norm.gamma)
            side.layer_norm.beta = _array(stack.final_norm.beta)

    try:
        projection = model.get_layer("output_projection")
    except ValueError:
        projection = None
    if projection is None:  # Tied to the target embedding (section 3.4).
        spec.decoder.projection.weight = _array(target_embedding.embeddings)
    else:
        _linear(spec.decoder.projection, projection)

    spec.config.layer_norm_epsilon = float(encoder.layer_norm_epsilon)
    spec.config.bos_token = bos
    spec.config.eos_token = eos
    spec.config.unk_token = unk
    spec.config.decoder_start_token = bos
    # The Translator's sources already end with [END].
    spec.config.add_source_bos = False
    spec.config.add_source_eos = False
    spec.register_source_vocabulary(source_vocabulary)
    spec.register_target_vocabulary(target_vocabulary)
    spec.validate()
    return spec


def _converter_class():
    ctranslate2 = _ctranslate2()

    class KerasTransformerConverter(ctranslate2.converters.Converter):
        """A CTranslate2 converter for `build_transformer` models."""

        def __init__(self, model, source_vocabulary, target_vocabulary):
            self._arguments = (model, source_vocabulary, target_vocabulary)

        def _load(self):
            spec = build_spec(*self._arguments)
            return spec

    return KerasTransformerConverter


def _check_quantization(quantization):
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}")


def convert_model(model, source_vocabulary, target_vocabulary, out_dir: str,
                  quantization: str | None = None) -> str:
    """Writes a CTranslate2 model directory from a Keras model.

    Args:
        model: a `keras.Model` made by `build_transformer`.
        source_vocabulary: sequence of str, source tokens in id order.
        target_vocabulary: sequence of str, target tokens in id order.
        out_dir: the directory to write (replaced if it exists).
        quantization: None (float32 weights) or "int8".

    Returns:
        `out_dir`.
    """
    _check_quantization(quantization)
    converter = _converter_class()(model, source_vocabulary,
                                   target_vocabulary)
    return converter.convert(os.fspath(out_dir), quantization=quantization,
                             force=True)


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
    return max(1, min(longest + translator.extra_length,
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
    `score_batch` does) with both runtimes; unlike a comparison of decoded ids this is not sensitive to
    near-ties between tokens.
    """
    from keras_transformer.text import END_ID, PAD_ID, START_ID

    # [START] + tokens must fit the positional table.
    limit = _layer(model, "positional_encoding").max_length
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


def export_ctranslate2(translator, out_dir: str,
                       quantization: str | None = None,
                       texts: list[str] | None = None,
                       min_agreement: float | None = None,
                       log_prob_tolerance: float | None = None) -> dict:
    """Converts a `Translator` to CTranslate2 and verifies it greedily.

    Args:
        translator: a `keras_transformer.Translator` (its model and
            tokenizers are converted).
        out_dir: the model directory to write (replaced if it exists).
        quantization: None (float32 weights) or "int8".
        texts: source sentences to verify with; None skips verification.
        min_agreement: the least share of sentences whose greedy token ids
            must be identical. Defaults to 1.0 for float32 and 0.0 (report
            only) for int8, whose rounding may flip close decisions.
        log_prob_tolerance: the largest allowed teacher-forced
            log-probability difference. Defaults to 1e-3 for float32 and
            no limit for int8.

    Returns:
        A report dict: path, quantization, source_vocab_size,
        target_vocab_size, and with `texts` the `verify_ctranslate2` figures.

    Raises:
        ValueError: the agreement is below `min_agreement` (naming the first
            differing sentence), or the log-probabilities differ by more
            than `log_prob_tolerance`.
    """
    _check_quantization(quantization)
    source_vocabulary = translator.source_tokenizer.vocabulary
    target_vocabulary = translator.target_tokenizer.vocabulary
    path = convert_model(translator.model, source_vocabulary,
                         target_vocabulary, out_dir, quantization)
    report = {"path": path, "quantization": quantization or "float32",
              "source_vocab_size": len(source_vocabulary),
              "target_vocab_size": len(target_vocabulary)}
    if texts is None:
        return report
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` must not be empty. Received: texts=[]")
    if min_agreement is None:
        min_agreement = 1.0 if quantization is None else 0.0
    if log_prob_tolerance is None and quantization is None:
        log_prob_tolerance = 1e-3
    source_ids = translator.source_ids(tf.constant(texts, tf.string))
    report.update(verify_ctranslate2(path, translator, source_ids.numpy()))
    if report["agreement"] < min_agreement:
        difference = report["first_difference"]
        raise ValueError(
            f"CTranslate2 greedy output differs from the Translator on "
            f"{report['sentences'] - report['identical']} of "
            f"{report['sentences']} sentences, first on "
            f"{texts[difference['row']]!r}: {difference}. Received: "
            f"min_agreement={min_agreement}")
    if log_prob_tolerance is not None and (
            report["max_log_prob_difference"] > log_prob_tolerance):
        raise ValueError(
            "CTranslate2 log-probabilities differ from the Keras model's by "
            f"{report['max_log_prob_difference']:.2e}. Received: "
            f"log_prob_tolerance={log_prob_tolerance}")
    return report
