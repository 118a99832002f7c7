"""Convert a trained Transformer to CTranslate2, and verify the conversion.

CTranslate2 (https://github.com/OpenNMT/CTranslate2) runs encoder-decoder
Transformers in C++ with fused kernels and optional int8 weights. This
module fills a `ctranslate2.specs.TransformerSpec` from the Keras weights of
a model made by `build_transformer`:

- post-norm (the paper) or pre-norm blocks, the FFN activation (ReLU,
  GELU or swish) and the LayerNorm epsilon of the model;
- embeddings multiplied by sqrt(d_model) (section 3.4), or not
  (`scale_embeddings=False`);
- the model's own sinusoidal table, whatever its layout (sine and cosine
  interleaved as in the paper, section 3.5, or split as Marian's), written
  out explicitly so that CTranslate2 does not use its built-in table
  (which concatenates them);
- the output projection tied to the target embedding (CTranslate2 stores
  the shared matrix once, as an alias), with the model's `output_bias` as
  the projection's bias; with `suppress_reserved`, [PAD] and [START] get
  a bias of -1e9 (`SUPPRESSED_BIAS`), so CTranslate2 never produces them,
  as every search of the model;
- the vocabularies as token strings (the SentencePiece pieces), with
  `[START]`, `[END]` and `[UNK]` as its bos, eos and unk tokens; the
  sources carry their own `[END]`, as the `Translator` feeds them.

`export_ctranslate2` also writes the SentencePiece models (`source.model`,
`target.model`) and `keras_transformer.json` beside the model, for
`ctranslate2.runtime.CTranslate2Translator`, which needs neither
TensorFlow nor Keras. Its verification compares greedy token ids
(`verify_ctranslate2`), teacher-forced log-probabilities and greedy
translations (`verify_text`) with the `Translator`'s. Requires the
optional `ctranslate2` package (`pip install keras-seq2seq-transformer[bench]`).

Example:
>>> report = export_ctranslate2(translator, "exports/ct2", texts=texts)
>>> report["identical"] == report["text_identical"] == report["sentences"]
True
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_transformer.contract import (
    CTRANSLATE2_FORMAT,
    CTRANSLATE2_MANIFEST,
    LOG_PROB_TOLERANCE,
    SOURCE_MODEL,
    TARGET_MODEL,
    make_manifest,
    write_manifest,
)
from keras_transformer.export.ctranslate2 import runtime
from keras_transformer.export.ctranslate2.verify import (  # noqa: F401
    max_log_prob_difference,
    verify_ctranslate2,
    verify_text,
)
from keras_transformer.text import special_tokens as special

QUANTIZATIONS = (None, "int8")
_ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "swish": "SWISH"}
# `suppress_reserved`: the logit bias of [PAD] and [START], so that
# CTranslate2 never produces them and renormalizes over the other tokens,
# as `Transformer.decode_step` does with its -1e9 logits.
SUPPRESSED_BIAS = -1e9


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


def _projection_bias(model):
    """The logits bias (V,): the Dense projection's, the `output_bias`,
    and -1e9 at [PAD] and [START] with `suppress_reserved`; or None."""
    config = model.config
    projection = model.output_projection
    parts = []
    if projection is not None and projection.bias is not None:
        parts.append(_array(projection.bias))
    if model.output_bias is not None:
        parts.append(_array(model.output_bias.bias))
    if config.suppress_reserved:
        suppressed = np.zeros((config.target_vocab_size,), np.float32)
        suppressed[[special.PAD_ID, special.START_ID]] = SUPPRESSED_BIAS
        parts.append(suppressed)
    if not parts:
        return None
    return np.ascontiguousarray(np.sum(parts, axis=0, dtype=np.float32))


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
               special_tokens=(special.START_TOKEN, special.END_TOKEN,
                               special.UNK_TOKEN)):
    """Fills a `ctranslate2.specs.TransformerSpec` from a Keras model.

    Args:
        model: a `keras_transformer.Transformer`.
        source_vocabulary: sequence of str, the source tokens in id order.
        target_vocabulary: sequence of str, the target tokens in id order.
        special_tokens: (bos, eos, unk) token strings. Defaults to the
            reserved tokens of `keras_transformer.text`.

    Returns:
        The validated spec (not yet quantized or saved).
    """
    if model.config.copy_attention:
        raise ValueError(
            "CTranslate2 has no copy path: a model with "
            "`copy_attention=True` would lose it and translate otherwise. "
            "Export it to ONNX or a SavedModel instead. Received: model "
            f"{model.name!r} with copy_attention=True")
    if model.config.previous_source_token:
        raise ValueError(
            "CTranslate2's encoder input is the token and position "
            "embeddings only: a model with `previous_source_token=True` "
            "would lose its previous-token projection and translate "
            "otherwise. Export it to ONNX or a SavedModel instead. "
            f"Received: model {model.name!r} with previous_source_token=True")
    ctranslate2 = runtime._ctranslate2()
    specs = ctranslate2.specs
    encoder, decoder = model.encoder, model.decoder
    source_embedding = model.source_embedding
    target_embedding = model.target_embedding
    positional = model.positional_encoding
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

    projection = model.output_projection
    if projection is None:  # Tied to the target embedding (section 3.4).
        spec.decoder.projection.weight = _array(target_embedding.embeddings)
    else:
        _linear(spec.decoder.projection, projection)
    bias = _projection_bias(model)
    if bias is not None:
        spec.decoder.projection.bias = bias

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
    converters = runtime._ctranslate2().converters

    class KerasTransformerConverter(converters.Converter):
        """A CTranslate2 converter for `build_transformer` models."""

        def __init__(self, *arguments):
            self._arguments = arguments

        def _load(self):
            return build_spec(*self._arguments)

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


def _check_tokenizers(translator):
    for side in ("source", "target"):
        tokenizer = getattr(translator, f"{side}_tokenizer")
        if not isinstance(getattr(tokenizer, "model_proto", None), bytes):
            raise TypeError(
                "`translator` must have SentencePiece tokenizers (with "
                "`model_proto`): the CTranslate2 runtime tokenizes with the "
                f"sentencepiece package. Received: {side}_tokenizer of type "
                f"{type(tokenizer).__name__}")


def write_runtime_files(translator, model_dir: str,
                        quantization: str | None = None) -> dict:
    """Writes the SentencePiece models and `keras_transformer.json`.

    Args:
        translator: the `Translator` whose model was converted.
        model_dir: the CTranslate2 model directory.
        quantization: None or "int8", recorded in the config.

    Returns:
        The config written.
    """
    _check_tokenizers(translator)
    translator.source_tokenizer.save(os.path.join(model_dir, SOURCE_MODEL))
    translator.target_tokenizer.save(os.path.join(model_dir, TARGET_MODEL))
    config = make_manifest(
        CTRANSLATE2_FORMAT, max_length=translator.max_length,
        target_limit=translator.target_limit,
        max_source_tokens=translator.source_limit,
        source_vocab_size=translator.source_vocab_size,
        search_settings=translator.settings, quantization=quantization)
    write_manifest(model_dir, CTRANSLATE2_MANIFEST, config)
    return config


def export_ctranslate2(translator, out_dir: str,
                       quantization: str | None = None,
                       texts: list[str] | None = None,
                       min_agreement: float | None = None,
                       log_prob_tolerance: float | None = None) -> dict:
    """Converts a `Translator` to CTranslate2 and verifies it greedily.

    Args:
        translator: a `keras_transformer.Translator` with SentencePiece
            tokenizers (its model, pieces and models are written).
        out_dir: the model directory to write (replaced if it exists).
        quantization: None (float32 weights) or "int8".
        texts: source sentences to verify with; None skips verification.
        min_agreement: the least share of sentences whose greedy token ids,
            and whose greedy translations, must be identical. Defaults to
            1.0 for float32 and 0.0 (report only) for int8, whose rounding
            may flip close decisions.
        log_prob_tolerance: the largest allowed teacher-forced
            log-probability difference. Defaults to
            `contract.LOG_PROB_TOLERANCE` for float32 and no limit for
            int8.

    Returns:
        A report dict: path, quantization, source_vocab_size,
        target_vocab_size, and with `texts` the figures of
        `verify_ctranslate2` and `verify_text` (their `export.parity`
        reports under `parity` and `text_parity`).

    Raises:
        TypeError: the tokenizers are not SentencePiece tokenizers.
        ValueError: an agreement is below `min_agreement` (naming the first
            differing sentence), or the log-probabilities differ by more
            than `log_prob_tolerance`.
    """
    _check_quantization(quantization)
    _check_tokenizers(translator)
    source_vocabulary = translator.source_tokenizer.vocabulary
    target_vocabulary = translator.target_tokenizer.vocabulary
    path = convert_model(translator.model, source_vocabulary,
                         target_vocabulary, out_dir, quantization)
    write_runtime_files(translator, path, quantization)
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
        log_prob_tolerance = LOG_PROB_TOLERANCE
    source_ids = translator.source_ids(tf.constant(texts, tf.string))
    report.update(verify_ctranslate2(path, translator, source_ids.numpy(),
                                     min_agreement=min_agreement,
                                     texts=texts))
    report.update(verify_text(path, translator, texts,
                              min_agreement=min_agreement))
    if log_prob_tolerance is not None and (
            report["max_log_prob_difference"] > log_prob_tolerance):
        raise ValueError(
            "CTranslate2 log-probabilities differ from the Keras model's by "
            f"{report['max_log_prob_difference']:.2e}. Received: "
            f"log_prob_tolerance={log_prob_tolerance}")
    return report
