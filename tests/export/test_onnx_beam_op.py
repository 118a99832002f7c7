"""`export.onnx.beam_op`: the opt-in file with onnxruntime's BeamSearch op.

Its ranking at the translator's length penalty is compared on a model
that has learned its task (`reverse_digits`, `tests/export/conftest.py`):
the pytest run's shared model, trained in seconds, is unsure enough that the two
length penalties often pick different hypotheses.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.contract import SearchSettings
from keras_transformer.export.onnx import export as onnx_export_module
from keras_transformer.export.onnx.runtime import make_session, run_search
from keras_transformer.translator import Translator
from tests.export.onnx_helpers import padded

pytestmark = pytest.mark.slow


def test_beam_op_graph_equals_the_translator_at_length_penalty_0(
        reverse_digits, tmp_path):
    """The opt-in BeamSearch-op file: verified ids, then run by hand."""
    from keras_transformer.contract import ONNX_BEAM_OP_GRAPH

    translator = reverse_digits.translator
    report = onnx_export_module.export_onnx(
        translator, tmp_path, modes=("beam",), texts=reverse_digits.texts,
        beam_op=True)
    # The verification sentences (the texts and the bad inputs): at least
    # 95% the Translator's ids at alpha 0.
    checked = report["beam_op"]
    assert checked["sentences"] == report["verification"]["sentences"]
    assert checked["identical"] >= 0.95 * checked["sentences"]
    assert len(checked["mismatches"]) == min(
        5, checked["sentences"] - checked["identical"])
    assert checked["max_score_difference"] < 1e-3
    config = json.loads((tmp_path / "onnx_config.json").read_text())
    assert config["beam_op_graph"] == ONNX_BEAM_OP_GRAPH
    # At the translator's alpha (0.6) it ranks by log P / length^alpha:
    # where it picks our hypothesis, the two scores are the same log P.
    session = make_session(tmp_path / ONNX_BEAM_OP_GRAPH)
    ids = translator.source_ids(
        tf.constant(reverse_digits.texts[:32])).numpy()
    got = run_search(session, ids)
    expected = translator.translate_tokens(ids)
    width = max(got["target_ids"].shape[1], expected["target_ids"].shape[1])
    same = (padded(got["target_ids"].tolist(), width) == padded(
        expected["target_ids"].numpy().tolist(), width)).all(axis=1)
    assert same.mean() >= 0.9
    lengths = (got["target_ids"] != 0).sum(axis=1)
    np.testing.assert_allclose(
        (got["score"] * lengths ** 0.6)[same],
        (expected["score"].numpy() * ((5 + lengths) / 6) ** 0.6)[same],
        rtol=1e-4)


def test_beam_op_rejects_rules_it_cannot_follow(translator):
    from keras_transformer.export.onnx.beam_op import convert_beam_op

    blocking = Translator(
        translator.model, translator.source_tokenizer,
        translator.target_tokenizer,
        settings=SearchSettings(no_repeat_ngram_size=2))
    with pytest.raises(ValueError, match="no_repeat_ngram_size=2"):
        convert_beam_op(blocking)
    with pytest.raises(ValueError, match="beam_op"):
        onnx_export_module.export_onnx(translator, "unused", beam_op=True,
                                       quantize="int8")
