"""`export.saved_model`: fresh-process parity, signatures, bad input, on
the trained run's SavedModel (written once per pytest run in
`tests/export/conftest.py`)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.data import read_tsv
from keras_transformer.export.saved_model import verify_saved_model

pytestmark = pytest.mark.slow


@pytest.fixture
def exported(saved_model_export):
    """The trained run's SavedModel (`tests/export/conftest.py`)."""
    return saved_model_export


def test_fresh_process_parity(exported, translator, corpus_files):
    texts = read_tsv(corpus_files["test"]).sources[:60]
    report = verify_saved_model(exported, translator, texts)
    assert report["sentences"] == 60
    assert report["identical"] == report["comparisons"] == 300
    assert report["max_score_difference"] <= 1e-4


def test_verification_detects_another_model(exported, translator):
    from keras_transformer.model import Transformer
    from keras_transformer.translator import Translator
    other_model = Transformer(translator.model.config)  # new weights
    other = Translator(other_model, translator.source_tokenizer,
                       translator.target_tokenizer)
    with pytest.raises(ValueError, match="differs"):
        verify_saved_model(exported, other, ["twelve", "four hundred"])


def test_saved_model_cli_lists_signatures(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    output = subprocess.run([cli, "show", "--all", "--dir", exported],
                            capture_output=True, text=True, check=True).stdout
    for name in ("serving_default", "translate_greedy", "translate_tokens",
                 "translate_xla", "translate_greedy_xla"):
        assert f"signature_def['{name}']" in output
    assert "source_ids" in output and "target_ids" in output


@pytest.mark.parametrize("signature", ["serving_default",
                                       "translate_greedy",
                                       "translate_xla",
                                       "translate_greedy_xla"])
def test_bad_input(exported, translator, signature):
    fn = tf.saved_model.load(exported).signatures[signature]
    texts = ["", "  ", b"four \xff hundred", "我喜欢猫",
             " ".join(["nine"] * 300), "twelve"]
    result = fn(text=tf.constant(texts))
    translation = result["translation"].numpy()
    assert translation[0] == b"" and translation[1] == b""
    assert np.all(np.isfinite(result["score"].numpy()))
    expected = (translator.translate
                if signature in ("serving_default", "translate_xla")
                else translator.translate_greedy)(tf.constant(texts))
    np.testing.assert_array_equal(translation,
                                  expected["translation"].numpy())
    empty = fn(text=tf.constant([], tf.string))
    assert empty["translation"].shape == (0,)


def test_token_signature_rejects_ids_outside_the_vocabulary(exported,
                                                            translator):
    loaded = tf.saved_model.load(exported)
    signature = loaded.signatures["translate_tokens"]
    vocab = translator.source_vocab_size
    for bad in (vocab, -3):
        ids = tf.constant([[5, bad, 3]], tf.int32)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"`source_ids`(.|\n)*{bad}"):
            signature(source_ids=ids)
    # A batch with no columns follows the empty-input rule.
    result = signature(source_ids=tf.zeros([3, 0], tf.int32))
    assert result["target_ids"].shape == (3, 0)
    np.testing.assert_array_equal(result["score"].numpy(), [0.0] * 3)


def test_serving_latency_benchmark(onnx_export, tmp_path):
    """`benchmarks/serving_latency.py` on the trained run's exports: every
    way timed at batch 1, each process free of the other's framework, and
    the XLA signature equal to the graph's greedy search."""
    from keras_transformer.benchmarks import serving_latency

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(onnx_export.texts[:4]) + "\n",
                         encoding="utf-8")
    rows = serving_latency.main([
        "--saved-model", str(onnx_export.saved_model_dir),
        "--onnx", str(onnx_export.onnx_dir), "--sentences", str(sentences),
        "--passes", "1", "--rounds", "1"])
    ways = {row["way"]: row for row in rows}
    assert set(ways) == {"translate_greedy", "translate_greedy_xla",
                         "serving_default", "translate_xla",
                         "translate_tokens", "onnx_beam", "onnx_greedy"}
    assert all(row["sentences"] == 4 and row["batch1_ms"] > 0
               for row in rows)
    assert ways["translate_greedy_xla"]["xla_differs_from_graph"] == 0
    assert ways["translate_xla"]["xla_differs_from_graph"] == 0
