"""A Hugging Face Marian `config.json` as a `TransformerConfig`.

Every field a Marian folder can carry is handled in one of three ways,
listed in `FIELDS` and reported in the imported run's metrics.json:

- mapped: it becomes a `TransformerConfig` field (or the vocabulary
  permutation of `marian.vocabulary`);
- checked: the package implements only one value (Marian's usual one); any
  other value is a `ValueError` naming the field, never a silently
  different model;
- not used: it changes neither the imported weights nor what the model
  computes at inference (Hugging Face bookkeeping, generation defaults the
  package's own search settings replace, training-only dropout).

A key in none of these lists is kept in the report under "unknown" and
logged: the import goes on (Hugging Face writes many generic keys), but a
user can see what was not looked at. Pure Python.
"""

import dataclasses
import logging
from typing import Any

from keras_transformer.checks import is_int
from keras_transformer.config import TransformerConfig

logger = logging.getLogger("keras_transformer")

# Hugging Face's activation names -> the package's.
_ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu",
                "gelu": "gelu"}

# Field -> (how, what): how is "mapped", "checked" or "not used".
FIELDS: dict[str, tuple[str, str]] = {
    "model_type": ("checked", "must be 'marian'"),
    "architectures": ("checked", "must name MarianMTModel when present"),
    "vocab_size": ("mapped", "source_vocab_size = target_vocab_size = "
                   "vocab_size + 1 (the pad row serves [PAD] and [START])"),
    "decoder_vocab_size": ("checked", "must equal vocab_size (one shared "
                           "vocabulary) or be absent"),
    "share_encoder_decoder_embeddings": ("checked", "must be true: "
                                         "share_embeddings=True"),
    "tie_word_embeddings": ("checked", "must be true: "
                            "tie_output_projection=True"),
    "d_model": ("mapped", "d_model"),
    "encoder_layers": ("mapped", "num_layers (must equal decoder_layers)"),
    "decoder_layers": ("mapped", "num_layers (must equal encoder_layers)"),
    "num_hidden_layers": ("checked", "must equal encoder_layers"),
    "encoder_attention_heads": ("mapped", "num_heads (must equal "
                                "decoder_attention_heads)"),
    "decoder_attention_heads": ("mapped", "num_heads"),
    "encoder_ffn_dim": ("mapped", "d_ff (must equal decoder_ffn_dim)"),
    "decoder_ffn_dim": ("mapped", "d_ff"),
    "max_position_embeddings": ("mapped", "max_length"),
    "activation_function": ("mapped", "activation: swish/silu -> 'swish', "
                            "relu, gelu (exact)"),
    "scale_embedding": ("mapped", "scale_embeddings"),
    "dropout": ("mapped", "dropout_rate (fine-tuning)"),
    "attention_dropout": ("mapped", "attention_dropout_rate (fine-tuning)"),
    "pad_token_id": ("mapped", "the Marian row of [PAD] and [START]"),
    "eos_token_id": ("mapped", "the Marian row of [END]"),
    "decoder_start_token_id": ("checked", "must equal pad_token_id (the "
                               "decoder starts from the pad row: [START])"),
    "forced_eos_token_id": ("checked", "must equal eos_token_id or be "
                            "absent; the package's searches stop at their "
                            "length limit without forcing [END] there"),
    "bad_words_ids": ("mapped", "[[pad_token_id]] -> suppress_reserved=True;"
                      " any other list is refused"),
    "normalize_before": ("checked", "must be false: post-norm blocks"),
    "normalize_embedding": ("checked", "must be false: no LayerNorm on the "
                            "embeddings"),
    "add_final_layer_norm": ("checked", "must be false: no final LayerNorm "
                             "in post-norm stacks"),
    "add_bias_logits": ("checked", "must be false (the logits bias is "
                        "final_logits_bias: output_bias=True)"),
    "static_position_embeddings": ("checked", "must be true: sinusoidal "
                                   "positions (positional_layout='split')"),
    "is_encoder_decoder": ("checked", "must be true"),
    "is_decoder": ("checked", "must be false"),
    "activation_dropout": ("not used", "dropout after the feed-forward "
                           "activation: fine-tuning applies none"),
    "encoder_layerdrop": ("not used", "training-only layer drop"),
    "decoder_layerdrop": ("not used", "training-only layer drop"),
    "classif_dropout": ("not used", "classification heads only"),
    "classifier_dropout": ("not used", "classification heads only"),
    "init_std": ("not used", "initialization of new weights"),
    "use_cache": ("not used", "the package's searches always cache"),
    "bos_token_id": ("not used", "Marian has no source [START]"),
    "num_beams": ("not used", "search setting: the run's SearchSettings "
                  "(beam 4, GNMT length penalty 0.6) apply"),
    "max_length": ("not used", "search setting: outputs are bounded by "
                   "source length + 50 and max_length"),
    "num_labels": ("not used", "classification heads only"),
    "_num_labels": ("not used", "classification heads only"),
    "id2label": ("not used", "classification heads only"),
    "label2id": ("not used", "classification heads only"),
    "gradient_checkpointing": ("not used", "training memory option"),
    "torch_dtype": ("not used", "weights are read in their stored dtype "
                    "and kept in float32"),
    "dtype": ("not used", "as torch_dtype"),
    "transformers_version": ("not used", "bookkeeping"),
    "_name_or_path": ("not used", "bookkeeping"),
    "output_attentions": ("not used", "Hugging Face output option"),
    "output_hidden_states": ("not used", "Hugging Face output option"),
    "return_dict": ("not used", "Hugging Face output option"),
    "chunk_size_feed_forward": ("not used", "a memory option of the same "
                                "computation"),
    "problem_type": ("not used", "classification heads only"),
    "extra_pos_embeddings": ("not used", "legacy BART key; Marian's "
                             "positions are sinusoidal"),
}

# Fields that must hold one value (absent passes): field -> value.
_REQUIRED = {
    "normalize_before": False, "normalize_embedding": False,
    "add_final_layer_norm": False, "add_bias_logits": False,
    "static_position_embeddings": True, "is_encoder_decoder": True,
    "is_decoder": False, "share_encoder_decoder_embeddings": True,
    "tie_word_embeddings": True,
}


@dataclasses.dataclass(frozen=True)
class MarianSpec:
    """What the import needs from a Marian config.

    Attributes:
        config: the `TransformerConfig` of the imported model.
        pad_id, eos_id: Marian's pad (= decoder start) and end ids.
        vocab_size: Marian's vocabulary size (one less than the model's).
        report: field -> "mapped: ..." / "checked: ..." / "not used: ..."
            for every field of the config, and "unknown" keys.
    """

    config: TransformerConfig
    pad_id: int
    eos_id: int
    vocab_size: int
    report: dict


def _refuse(field: str, value: Any, why: str):
    raise ValueError(
        f"This Marian config cannot be imported: `{field}` {why}. "
        f"Received: {field}={value!r}")


def _single_id(field: str, value: Any) -> int:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not is_int(value):
        _refuse(field, value, "must be one token id")
    return int(value)


def marian_spec(values: dict, generation: dict | None = None) -> MarianSpec:
    """Maps a Marian `config.json` (and `generation_config.json`).

    Args:
        values: the parsed config.json.
        generation: the parsed generation_config.json, or None. Its
            `bad_words_ids` and `forced_eos_token_id` take precedence over
            config.json's (newer folders keep them there).

    Returns:
        A `MarianSpec`.

    Raises:
        ValueError: a field the package cannot represent, naming it.
    """
    if not isinstance(values, dict):
        raise TypeError(
            "`values` must be the parsed config.json (a dict). Received: "
            f"values={values!r:.80}")
    values = dict(values)
    for key in ("bad_words_ids", "forced_eos_token_id",
                "decoder_start_token_id"):
        if generation and generation.get(key) is not None:
            values[key] = generation[key]
    if values.get("model_type") != "marian":
        _refuse("model_type", values.get("model_type"), "must be 'marian'")
    architectures = values.get("architectures") or ["MarianMTModel"]
    if "MarianMTModel" not in architectures:
        _refuse("architectures", architectures,
                "must name MarianMTModel (a translation model with its "
                "output layer)")
    for field, required in _REQUIRED.items():
        if field in values and values[field] is not None and (
                bool(values[field]) != required):
            _refuse(field, values[field],
                    f"must be {str(required).lower()}: "
                    f"{FIELDS[field][1].split(': ', 1)[-1]}")
    for field in ("vocab_size", "d_model", "encoder_layers",
                  "encoder_attention_heads", "encoder_ffn_dim",
                  "pad_token_id", "eos_token_id"):
        if field not in values:
            _refuse(field, None, "is missing")
    vocab_size = values["vocab_size"]
    decoder_vocab = values.get("decoder_vocab_size")
    if decoder_vocab is not None and decoder_vocab != vocab_size:
        _refuse("decoder_vocab_size", decoder_vocab,
                f"must equal vocab_size={vocab_size}: the package imports "
                "one shared vocabulary")
    for encoder_key, decoder_key in (
            ("encoder_layers", "decoder_layers"),
            ("encoder_attention_heads", "decoder_attention_heads"),
            ("encoder_ffn_dim", "decoder_ffn_dim"),
            ("encoder_layers", "num_hidden_layers")):
        if values.get(decoder_key, values[encoder_key]) != (
                values[encoder_key]):
            _refuse(decoder_key, values[decoder_key],
                    f"must equal {encoder_key}={values[encoder_key]}: the "
                    "package's encoder and decoder share these sizes")
    activation = values.get("activation_function", "gelu")
    if activation not in _ACTIVATIONS:
        _refuse("activation_function", activation,
                f"must be one of {sorted(_ACTIVATIONS)}")
    pad_id = _single_id("pad_token_id", values["pad_token_id"])
    eos_id = _single_id("eos_token_id", values["eos_token_id"])
    start = values.get("decoder_start_token_id", pad_id)
    if start != pad_id:
        _refuse("decoder_start_token_id", start,
                f"must equal pad_token_id={pad_id}: the package's [START] "
                "is imported from the pad row")
    forced = values.get("forced_eos_token_id")
    if forced is not None and _single_id("forced_eos_token_id",
                                         forced) != eos_id:
        _refuse("forced_eos_token_id", forced,
                f"must equal eos_token_id={eos_id} or be absent")
    bad_words = values.get("bad_words_ids") or []
    if bad_words not in ([], [[pad_id]]):
        _refuse("bad_words_ids", bad_words,
                f"must be [[pad_token_id]] = [[{pad_id}]] or empty: the "
                "package's searches can ban only the pad token")
    config = TransformerConfig(
        source_vocab_size=vocab_size + 1, target_vocab_size=vocab_size + 1,
        num_layers=values["encoder_layers"], d_model=values["d_model"],
        num_heads=values["encoder_attention_heads"],
        d_ff=values["encoder_ffn_dim"],
        dropout_rate=float(values.get("dropout", 0.1)),
        attention_dropout_rate=float(values.get("attention_dropout", 0.0)),
        max_length=values.get("max_position_embeddings", 1024),
        share_embeddings=True, tie_output_projection=True,
        norm_first=False, activation=_ACTIVATIONS[activation],
        layer_norm_epsilon=1e-5, positional_layout="split",
        scale_embeddings=bool(values.get("scale_embedding", False)),
        output_bias=True, suppress_reserved=bad_words == [[pad_id]])
    report = {}
    for key in sorted(values):
        if key in FIELDS:
            how, what = FIELDS[key]
            report[key] = f"{how}: {what}"
        else:
            report.setdefault("unknown", []).append(key)
    if report.get("unknown"):
        logger.warning("Marian config keys not looked at: %s",
                       ", ".join(report["unknown"]))
    return MarianSpec(config, pad_id, eos_id, vocab_size, report)
