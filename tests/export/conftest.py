"""Exports of the pytest run's trained run, written once per pytest run.

The run is `tests/conftest.py`'s `trained_run` (its `translator`); every
export test that needs a trained model's export uses these fixtures, so
the run is trained once and each format written once. That run is trained
in seconds and translates few sentences right; the checks that need a
model which has learned its task use `reverse_digits` instead. Requesting
any of these fixtures trains: tests that do are marked slow.
"""

import types

import pytest

from tests.export.onnx_helpers import padded, reverse_task

# `reverse_digits`' model: long enough for its sentences plus [END].
REVERSE_MAX_LENGTH = 24


@pytest.fixture(scope="session")
def saved_model_export(translator, tmp_path_factory):
    """The SavedModel of the trained run (its path)."""
    from keras_transformer.export.saved_model import export_saved_model

    path = tmp_path_factory.mktemp("saved_model") / "1"
    return export_saved_model(translator, str(path))


@pytest.fixture(scope="session")
def onnx_export(translator, trained_run, saved_model_export,
                tmp_path_factory):
    """The float32 ONNX export of the trained run, verified.

    Both searches and their text graphs; the export's verification runs
    on the run's held-out sentences (`verification_texts`) plus the bad
    inputs, against the Translator and the SavedModel.
    """
    from keras_transformer.export import verification_texts
    from keras_transformer.export.onnx.export import export_onnx
    from keras_transformer.export.onnx.runtime import OnnxTranslator

    texts = verification_texts(trained_run)
    onnx_dir = tmp_path_factory.mktemp("onnx")
    report = export_onnx(translator, onnx_dir, texts=texts,
                         saved_model_dir=saved_model_export)
    return types.SimpleNamespace(
        translator=translator, texts=texts, onnx_dir=onnx_dir,
        saved_model_dir=saved_model_export, report=report,
        runtime=OnnxTranslator(onnx_dir))


@pytest.fixture(scope="session")
def ctranslate2_export(translator, trained_run, tmp_path_factory):
    """The float32 CTranslate2 export of the trained run, verified (its
    report); skipped where ctranslate2 is not installed."""
    pytest.importorskip("ctranslate2")
    from keras_transformer.export import verification_texts
    from keras_transformer.export.ctranslate2.convert import (
        export_ctranslate2,
    )

    path = tmp_path_factory.mktemp("ct2") / "float32"
    return export_ctranslate2(translator, path,
                              texts=verification_texts(trained_run))


@pytest.fixture(scope="session")
def reverse_digits():
    """A 1-layer model trained briefly to reverse digit words (it learns
    the task), with SentencePiece tokenizers: its `translator` and 200
    held-out sentences (`texts`)."""
    import keras
    import tensorflow as tf

    from keras_transformer.config import TransformerConfig
    from keras_transformer.model import build_transformer
    from keras_transformer.text.sentencepiece_model import (
        learn_tokenizer_models,
    )
    from keras_transformer.text.sentencepiece_tokenizer import (
        SentencePieceTokenizer,
    )
    from keras_transformer.text.special_tokens import END_ID, START_ID
    from keras_transformer.translator import Translator

    keras.utils.set_random_seed(0)
    sources, targets = reverse_task(1600, seed=0)
    source_model, target_model = learn_tokenizer_models(
        sources[:200], targets[:200], vocab_size=300)
    source_tokenizer = SentencePieceTokenizer(source_model)
    target_tokenizer = SentencePieceTokenizer(target_model)
    source = source_tokenizer.tokenize(tf.constant(sources)).to_list()
    target = target_tokenizer.tokenize(tf.constant(targets)).to_list()
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=source_tokenizer.vocab_size,
        target_vocab_size=target_tokenizer.vocab_size, num_layers=1,
        d_model=64, num_heads=2, d_ff=512, dropout_rate=0.0,
        max_length=REVERSE_MAX_LENGTH)
    model = build_transformer(config)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True, ignore_class=0),
                  jit_compile=False)
    width = max(map(len, source + target)) + 1
    model.fit({"encoder_inputs": padded([r + [END_ID] for r in source],
                                        width),
               "decoder_inputs": padded([[START_ID] + r for r in target],
                                        width)},
              padded([r + [END_ID] for r in target], width), batch_size=64,
              epochs=3, verbose=0)
    texts, _ = reverse_task(200, seed=1)
    return types.SimpleNamespace(
        translator=Translator(model, source_tokenizer, target_tokenizer),
        texts=texts)


@pytest.fixture(scope="session")
def reverse_digits_onnx(reverse_digits, tmp_path_factory):
    """`reverse_digits` exported to ONNX in standard operators (what the
    web export needs; unverified: its tests compare), run by an
    `OnnxTranslator`. The trained run's `onnx_export` has the default,
    onnxruntime's fused operators."""
    from keras_transformer.export.onnx.export import export_onnx
    from keras_transformer.export.onnx.runtime import OnnxTranslator

    onnx_dir = tmp_path_factory.mktemp("reverse_digits_onnx")
    export_onnx(reverse_digits.translator, onnx_dir, verify=False,
                operators="standard")
    return OnnxTranslator(onnx_dir)
