"""Exports of a model with every option for imported Marian models on.

One random tiny model (2 layers, d_model 32, 60 tokens) with swish, the
split positional table, unscaled embeddings, a random output bias, the
LayerNorm epsilon 1e-5 and `suppress_reserved`. Its bias puts [PAD] and
[START] far above every other token, so a runtime that lost the
suppression (or the bias) would produce them and differ from the Keras
searches. References: the Keras Translator's greedy and beam ids (ONNX:
standard and fused operators, int8 and float16; CTranslate2: greedy ids
and teacher-forced log-probabilities) and onnxruntime's BeamSearch op.
"""

import dataclasses
import json
import os
import types

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from keras_transformer.config import TransformerConfig
from keras_transformer.contract import SearchSettings
from keras_transformer.model import build_transformer
from keras_transformer.text.special_tokens import (
    END_ID,
    PAD_ID,
    RESERVED_TOKENS,
    START_ID,
)
from keras_transformer.translator import Translator

V = 60
RESERVED = (PAD_ID, START_ID)


def _vocabulary():
    return list(RESERVED_TOKENS) + [f"\u2581t{i}" for i in range(
        V - len(RESERVED_TOKENS))]


@pytest.fixture(scope="module")
def marian_like():
    """The model's Translator (token level; its tokenizers only carry the
    vocabularies CTranslate2 needs) and a batch of source ids."""
    keras.utils.set_random_seed(0)
    config = TransformerConfig(
        source_vocab_size=V, target_vocab_size=V, num_layers=2, d_model=32,
        num_heads=4, d_ff=64, dropout_rate=0.0, max_length=24,
        activation="swish", positional_layout="split",
        scale_embeddings=False, output_bias=True, suppress_reserved=True,
        layer_norm_epsilon=1e-5)
    model = build_transformer(config)
    rng = np.random.default_rng(0)
    bias = rng.normal(scale=0.5, size=V).astype("float32")
    bias[list(RESERVED)] = 30.0
    model.output_bias.bias.assign(bias)
    tokenizer = types.SimpleNamespace(vocabulary=_vocabulary())
    translator = Translator(model, tokenizer, tokenizer,
                            settings=SearchSettings(extra_length=5))
    source = rng.integers(len(RESERVED_TOKENS), V, (5, 8)).astype(np.int32)
    source[:, -1] = END_ID
    source[1, 4:] = PAD_ID
    source[1, 3] = END_ID
    return types.SimpleNamespace(translator=translator, model=model,
                                 source=source, bias=bias)


def _generated(ids):
    """The tokens before each row's first [END]."""
    tokens = []
    for row in np.asarray(ids):
        ends = np.flatnonzero(row == END_ID)
        tokens += row[:ends[0] if ends.size else len(row)].tolist()
    return tokens


def _keras_ids(translator, source, mode):
    search = (translator.translate_tokens_greedy if mode == "greedy"
              else translator.translate_tokens)
    ids = search(source)["target_ids"].numpy()
    assert not set(RESERVED) & set(_generated(ids))
    return ids


def test_ctranslate2_conversion_keeps_every_option(marian_like, tmp_path):
    pytest.importorskip("ctranslate2")
    from keras_transformer.export.ctranslate2 import convert as ct2_export

    model, vocabulary = marian_like.model, _vocabulary()
    spec = ct2_export.build_spec(model, vocabulary, vocabulary)
    expected_bias = marian_like.bias.copy()
    expected_bias[list(RESERVED)] += ct2_export.SUPPRESSED_BIAS
    np.testing.assert_array_equal(spec.decoder.projection.bias.numpy(),
                                  expected_bias)
    assert not spec.encoder.scale_embeddings.numpy()
    np.testing.assert_array_equal(
        spec.decoder.position_encodings.encodings.numpy(),
        model.positional_encoding.table)

    path = ct2_export.convert_model(model, vocabulary, vocabulary,
                                    tmp_path / "ct2")
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["layer_norm_epsilon"] == pytest.approx(1e-5)
    source = marian_like.source
    _keras_ids(marian_like.translator, source, "greedy")
    report = ct2_export.verify_ctranslate2(path, marian_like.translator,
                                           source)
    assert report["identical"] == report["sentences"] == len(source)
    # Both sides are distributions without [PAD] and [START].
    assert report["max_log_prob_difference"] < 1e-4
    # Compared with the unsuppressed teacher-forced distribution the
    # check fails: the reserved ids hold most of its mass.
    plain = build_transformer(dataclasses.replace(
        model.config, suppress_reserved=False))
    plain.set_weights(model.get_weights())
    target = np.random.default_rng(1).integers(4, V, (5, 6))
    assert ct2_export.max_log_prob_difference(
        path, model, source, target, vocabulary, vocabulary) < 1e-4
    assert ct2_export.max_log_prob_difference(
        path, plain, source, target, vocabulary, vocabulary) > 1.0


@pytest.fixture(scope="module")
def converted(marian_like):
    from keras_transformer.export.onnx.convert import convert_search

    return {mode: convert_search(marian_like.translator, mode,
                                 operators="standard")
            for mode in ("greedy", "beam")}


def _runner(graph):
    """onnxruntime on the CPU, running `graph`."""
    return ort.InferenceSession(graph.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def _run(graph, source):
    return _runner(graph).run(["target_ids", "score"],
                              {"source_ids": source})


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_onnx_searches_equal_the_keras_searches(mode, marian_like,
                                                converted):
    from keras_transformer.export.onnx import fuse
    from keras_transformer.export.onnx.quantize import quantize_search

    source = marian_like.source
    expected = _keras_ids(marian_like.translator, source, mode)
    fused = onnx.ModelProto()
    fused.CopyFrom(converted[mode])
    assert fuse.fuse_search(fused)["attention"] == 4
    for graph in (converted[mode], fused):
        ids, _ = _run(graph, source)
        np.testing.assert_array_equal(ids, expected)
    # int8 and float16 may flip near-ties, never to a suppressed id.
    for quantize in ("int8", "float16"):
        ids, _ = _run(quantize_search(converted[mode], quantize), source)
        tokens = _generated(ids)
        assert tokens and not set(RESERVED) & set(tokens)


def test_onnxruntime_beam_search_op_keeps_the_suppression(marian_like):
    from keras_transformer.export.onnx.beam_op import convert_beam_op

    translator = marian_like.translator
    source = marian_like.source
    graph = convert_beam_op(translator)
    ids, _ = _runner(graph).run(["target_ids", "score"], {
        "source_ids": source, "length_penalty": np.zeros([1], np.float32)})
    tokens = _generated(ids)
    assert tokens and not set(RESERVED) & set(tokens)
    reference = Translator(
        translator.model, None, None, settings=dataclasses.replace(
            translator.settings, length_penalty=0.0))
    expected = _keras_ids(reference, source, "beam")
    width = max(ids.shape[1], expected.shape[1])
    same = [np.array_equal(np.pad(a, (0, width - len(a))),
                           np.pad(b, (0, width - len(b))))
            for a, b in zip(ids, expected)]
    assert sum(same) >= len(source) - 1
