"""CTranslate2 conversion: greedy ids and log-probs equal the Translator."""

import json
import os

import numpy as np
import pytest

pytest.importorskip("ctranslate2")

from keras_transformer.export import ctranslate2 as ct2_export  # noqa: E402
from keras_transformer.export import verification_texts  # noqa: E402
from keras_transformer.config import TransformerConfig  # noqa: E402
from keras_transformer.inference import SearchSettings  # noqa: E402
from keras_transformer.model import build_transformer  # noqa: E402
from keras_transformer.text import RESERVED_TOKENS, SubwordTokenizer  # noqa
from keras_transformer.translator import Translator  # noqa: E402


def _vocabulary(size):
    return list(RESERVED_TOKENS) + [f"t{i}" for i in range(4, size)]


@pytest.mark.slow
def test_float32_export_matches_translator_greedily(translator, trained_run,
                                                    tmp_path):
    texts = verification_texts(trained_run)
    report = ct2_export.export_ctranslate2(translator, tmp_path / "ct2",
                                           texts=texts)
    assert report["sentences"] == len(texts) >= 50
    assert report["identical"] == report["sentences"]
    assert report["max_log_prob_difference"] < 1e-4
    assert report["quantization"] == "float32"
    files = set(os.listdir(tmp_path / "ct2"))
    assert {"model.bin", "config.json"} <= files
    with open(tmp_path / "ct2" / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert (config["bos_token"], config["eos_token"], config["unk_token"],
            config["decoder_start_token"]) == (
        "[START]", "[END]", "[UNK]", "[START]")
    assert config["add_source_eos"] is False
    assert config["layer_norm_epsilon"] == pytest.approx(1e-6)


@pytest.mark.slow
def test_int8_export_is_smaller_and_mostly_agrees(translator, trained_run,
                                                  tmp_path):
    texts = verification_texts(trained_run)
    full = ct2_export.export_ctranslate2(translator, tmp_path / "f32")
    small = ct2_export.export_ctranslate2(translator, tmp_path / "int8",
                                          quantization="int8", texts=texts)
    assert small["quantization"] == "int8"
    size = os.path.getsize(os.path.join(small["path"], "model.bin"))
    assert size < 0.5 * os.path.getsize(
        os.path.join(full["path"], "model.bin"))
    # int8 rounding may flip a close call; most sentences stay identical.
    assert small["agreement"] >= 0.8


@pytest.mark.slow
def test_concatenated_sinusoids_are_caught(translator, trained_run,
                                           tmp_path):
    # The converter must carry the paper's interleaved table: a table with
    # sines and cosines concatenated gives other translations.
    layer = translator.model.get_layer("positional_encoding")
    table = layer.table
    layer.table = np.concatenate([table[:, 0::2], table[:, 1::2]], axis=1)
    try:
        with pytest.raises(ValueError, match="min_agreement"):
            ct2_export.export_ctranslate2(
                translator, tmp_path / "bad",
                texts=verification_texts(trained_run))
    finally:
        layer.table = table


@pytest.mark.parametrize("overrides", [
    {},
    {"norm_first": True, "activation": "gelu",
     "tie_output_projection": False, "share_embeddings": True},
])
def test_random_model_variants_score_identically(overrides, tmp_path):
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=120, target_vocab_size=120, num_layers=2,
        d_model=32, num_heads=4, d_ff=64, max_length=32, **overrides)
    model = build_transformer(config)
    vocabulary = _vocabulary(120)
    tokenizer = SubwordTokenizer(vocabulary)
    translator = Translator(model, tokenizer, tokenizer,
                            settings=SearchSettings(extra_length=6))
    source = np.random.default_rng(0).integers(4, 120, size=(6, 9))
    source[:, -1] = 3
    source[0, 5:] = 0  # a padded row
    source[0, 4] = 3
    path = ct2_export.convert_model(model, vocabulary, vocabulary,
                                    tmp_path / "ct2")
    # An untrained model's logits are nearly flat, so greedy ids may flip
    # on float32 round-off; the teacher-forced log-probabilities may not.
    report = ct2_export.verify_ctranslate2(path, translator, source)
    assert report["max_log_prob_difference"] < 1e-4
    target = np.random.default_rng(1).integers(4, 120, size=(6, 7))
    difference = ct2_export.max_log_prob_difference(
        path, model, source, target, vocabulary, vocabulary)
    assert difference < 1e-4
    # The check can fail: scores of another model differ.
    other = build_transformer(config)
    assert ct2_export.max_log_prob_difference(
        path, other, source, target, vocabulary, vocabulary) > 0.01


def test_tied_projection_is_stored_once():
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=50, target_vocab_size=50, num_layers=1,
        d_model=16, num_heads=2, d_ff=32, max_length=16)
    model = build_transformer(config)
    vocabulary = _vocabulary(50)
    spec = ct2_export.build_spec(model, vocabulary, vocabulary)
    embedding = model.get_layer("target_embedding").embeddings.numpy()
    np.testing.assert_array_equal(spec.decoder.projection.weight.numpy(),
                                  embedding)
    np.testing.assert_array_equal(
        spec.decoder.position_encodings.encodings.numpy()[3],
        model.get_layer("positional_encoding").table[3])
    spec.optimize()  # What the converter does before saving.
    assert spec.decoder.projection.weight == "decoder/embeddings/weight"


@pytest.mark.parametrize("arguments, match", [
    ({"quantization": "float16"}, "`quantization`"),
    ({"source_vocabulary": ["[PAD]"]}, "`source_vocabulary`"),
    ({"target_vocabulary": ["[PAD]", "[UNK]", "[START]", "[END]"] +
      ["x"] * 46}, "`target_vocabulary`"),
    ({"target_vocabulary": "abc"}, "`target_vocabulary`"),
])
def test_bad_arguments_name_the_argument(arguments, match, tmp_path):
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=50, target_vocab_size=50, num_layers=1,
        d_model=16, num_heads=2, d_ff=32, max_length=16)
    model = build_transformer(config)
    values = {"source_vocabulary": _vocabulary(50),
              "target_vocabulary": _vocabulary(50), "quantization": None}
    values.update(arguments)
    with pytest.raises((ValueError, TypeError), match=match):
        ct2_export.convert_model(model, out_dir=tmp_path / "x", **values)
