"""`export.onnx.verify`: the bad-input cases, and verification that fails
on a tampered export, on the trained run's export (`onnx_export`, written
once per pytest run in `tests/export/conftest.py`)."""

import json
import shutil

import onnx
import pytest
import tensorflow as tf
from onnx import numpy_helper

from keras_transformer.export.onnx.runtime import read_config
from keras_transformer.export.onnx.verify import bad_input_texts, verify_onnx

pytestmark = pytest.mark.slow


def test_bad_input_cases(onnx_export):
    translator = onnx_export.translator
    cases = bad_input_texts(translator, onnx_export.texts)
    assert len(cases) == 5
    empty, blank, long_text, unseen, invalid = cases
    assert empty == "" and not blank.strip() and len(set(blank)) >= 4
    tokens = translator.source_tokenizer.tokenize(tf.constant(
        [long_text, unseen]))
    assert len(tokens[0]) > translator.source_limit
    # Emoji and other characters without a piece: byte pieces (4-259).
    assert any(ord(c) > 0xFFFF for c in unseen)
    assert any(4 <= i < 4 + 256 for i in tokens[1].numpy().tolist())
    with pytest.raises(UnicodeDecodeError):
        invalid.decode("utf-8")


def tamper(onnx_dir, out_dir, name):
    """Copies the export with the largest weight of `name` reversed."""
    shutil.copytree(onnx_dir, out_dir)
    path = out_dir / name
    model = onnx.load(path)
    largest = max(model.graph.initializer,
                  key=lambda t: numpy_helper.to_array(t).size)
    value = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array(value[::-1].copy(),
                                             largest.name))
    onnx.save(model, path)
    config = read_config(out_dir)
    config["graphs"] = {"beam": "beam.onnx"}
    config["text_graphs"] = {"beam": "beam_text.onnx"}
    (out_dir / "onnx_config.json").write_text(json.dumps(config))


def test_verification_raises_on_a_tampered_token_graph(onnx_export,
                                                       tmp_path):
    tampered = tmp_path / "tampered"
    tamper(onnx_export.onnx_dir, tampered, "beam.onnx")
    texts = onnx_export.texts[:16]
    with pytest.raises(ValueError, match="ONNX graph 'beam.onnx' differs"):
        verify_onnx(tampered, onnx_export.translator, texts=texts)
    report = verify_onnx(tampered, onnx_export.translator, texts=texts,
                         strict=False)
    assert report["identical"]["beam"] < len(texts)
    assert report["text"]["identical"] == {"beam": len(texts) + 5}
    assert len(report["mismatches"]) == len(texts) + 5 - report[
        "identical"]["beam"]


def test_verification_raises_on_a_tampered_text_graph(onnx_export,
                                                      tmp_path):
    tampered = tmp_path / "tampered"
    tamper(onnx_export.onnx_dir, tampered, "beam_text.onnx")
    with pytest.raises(ValueError,
                       match="ONNX graph 'beam_text.onnx' differs from the "
                             "Translator's translate"):
        verify_onnx(tampered, onnx_export.translator,
                    texts=onnx_export.texts[:16])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(texts=[]), ValueError, "`texts`"),
    (dict(texts="one"), TypeError, "`texts`"),
    (dict(texts=["one"], source_ids=[[4, 3]]), ValueError, "`source_ids`"),
    (dict(source_ids=[4, 3]), ValueError, "`source_ids`"),
    (dict(texts=["one"], batch_size=0), ValueError, "`batch_size`")])
def test_verification_rejects_bad_arguments(onnx_export, kwargs, error,
                                            match):
    with pytest.raises(error, match=match):
        verify_onnx(onnx_export.onnx_dir, onnx_export.translator, **kwargs)
