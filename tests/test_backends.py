"""The layers, model, training and searches on Keras' JAX and PyTorch backends.

Keras fixes its backend when imported, so each other backend runs
`tests/backend_worker.py` in a subprocess (`KERAS_BACKEND=...`), and this
TensorFlow process compares what it writes with its own numbers: a model
saved here reloads there with the same logits, searches (ids equal,
scores within 1e-5), compiled loss and accuracy, and `fit` losses on the
package's tf.data pipeline; the model fitted there reloads here with the
same logits. A run trained with `keras-transformer train` under JAX is
exported here (SavedModel and ONNX) and searches to the same ids.

A backend whose package is not installed is skipped, with the reason;
`.ci/install` installs them all (the `backends` extra).
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests import backend_worker
from tests.training_script import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = {"jax": "jax", "torch": "torch"}  # backend -> its package
TOLERANCE = 1e-5


def _require(backend):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"the optional {backend} backend is not installed "
                    "(pip install -e '.[backends]')")


def _run_worker(backend, *args, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "tests.backend_worker", *args], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]


def _pairs(rng, count):
    """Pairs of id strings (targets the reversed sources), lengths 2-9."""
    pairs = []
    for length in rng.integers(2, 10, count):
        source = rng.integers(4, backend_worker.VOCAB, length)
        pairs.append((" ".join(map(str, source)),
                      " ".join(map(str, source[::-1]))))
    return np.array(pairs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A saved tiny model, its inputs, and its numbers on TensorFlow."""
    directory = str(tmp_path_factory.mktemp("backends"))
    rng = np.random.default_rng(0)
    source = rng.integers(4, backend_worker.VOCAB, (3, 7)).astype("int32")
    source[1, 5:] = 0
    decoder = rng.integers(4, backend_worker.VOCAB, (3, 6)).astype("int32")
    decoder[2, 4:] = 0
    labels = np.concatenate([decoder[:, 1:], np.zeros((3, 1), "int32")], 1)
    np.savez(os.path.join(directory, "inputs.npz"), source=source,
             decoder=decoder, labels=labels, pairs=_pairs(rng, 96))
    keras.utils.set_random_seed(0)
    from keras_transformer.model import build_transformer

    build_transformer(tiny_config()).save(
        os.path.join(directory, "model.keras"))
    backend_worker.parity(directory)
    return directory, dict(np.load(os.path.join(directory,
                                                "tensorflow.npz")))


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_same_numbers_as_tensorflow(backend, reference):
    _require(backend)
    directory, expected = reference
    _run_worker(backend, "parity", directory)
    actual = dict(np.load(os.path.join(directory, f"{backend}.npz")))
    for key in ("logits", "loss", "accuracy"):
        np.testing.assert_allclose(actual[key], expected[key],
                                   atol=TOLERANCE, err_msg=key)
    for search in ("greedy", "greedy_rules", "beam", "beam_rules"):
        np.testing.assert_array_equal(actual[f"{search}_ids"],
                                      expected[f"{search}_ids"], search)
        np.testing.assert_allclose(actual[f"{search}_scores"],
                                   expected[f"{search}_scores"],
                                   atol=TOLERANCE, err_msg=search)
    assert expected["fit_losses"].shape == (3,)
    np.testing.assert_allclose(actual["fit_losses"], expected["fit_losses"],
                               rtol=TOLERANCE)
    np.testing.assert_allclose(actual["fitted_logits"],
                               expected["fitted_logits"], atol=TOLERANCE)

    # The model fitted on `backend` reloads here with its own logits.
    model = keras.models.load_model(os.path.join(directory,
                                                 f"{backend}.keras"))
    inputs = np.load(os.path.join(directory, "inputs.npz"))
    logits = model({"encoder_inputs": inputs["source"],
                    "decoder_inputs": inputs["decoder"]})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits),
                               actual["fitted_logits"], atol=TOLERANCE)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_copy_attention_model(backend, tmp_path):
    # A copy-attention model (its scatter-add, its step reading the source
    # ids from the context, the previous-token projection of the summarizer
    # preset) gives TensorFlow's numbers on `backend`.
    _require(backend)
    from keras_transformer.model import build_transformer

    rng = np.random.default_rng(1)
    source = rng.integers(4, backend_worker.VOCAB, (3, 7)).astype("int32")
    source[0, 2] = source[0, 5]  # a repeated token
    source[1, 5:] = 0
    decoder = rng.integers(4, backend_worker.VOCAB, (3, 6)).astype("int32")
    np.savez(tmp_path / "inputs.npz", source=source, decoder=decoder)
    keras.utils.set_random_seed(0)
    build_transformer(tiny_config(share_embeddings=True,
                                  copy_attention=True,
                                  previous_source_token=True)).save(
        tmp_path / "copy.keras")
    backend_worker.copy(str(tmp_path))
    _run_worker(backend, "copy", str(tmp_path))
    expected = dict(np.load(tmp_path / "copy_tensorflow.npz"))
    actual = dict(np.load(tmp_path / f"copy_{backend}.npz"))
    np.testing.assert_allclose(expected["steps"], expected["log_probs"],
                               atol=1e-4)
    for key in ("log_probs", "steps", "greedy_scores", "beam_scores"):
        np.testing.assert_allclose(actual[key], expected[key],
                                   atol=TOLERANCE, err_msg=key)
    for key in ("greedy_ids", "beam_ids"):
        np.testing.assert_array_equal(actual[key], expected[key], key)


def _trimmed(rows):
    """Each row of ids without its trailing padding, as a list."""
    return [list(np.trim_zeros(np.asarray(row), "b")) for row in rows]


@pytest.mark.slow
def test_a_run_trained_on_jax_exports_through_tensorflow(tmp_path):
    _require("jax")
    import onnxruntime as ort
    import tensorflow as tf

    from keras_transformer.data import write_bundled_tsv
    from keras_transformer.export.onnx import convert as onnx_export
    from keras_transformer.export.saved_model import export_saved_model
    from keras_transformer.runs import load_translator

    corpus = write_bundled_tsv(tmp_path / "corpus", "de", max_number=999,
                               train_size=300, valid_size=20, test_size=20)
    _run_worker("jax", "train_run", str(tmp_path), str(corpus["train"]))
    jax_ids = np.load(tmp_path / "run_search.npz")
    translator = load_translator(str(tmp_path / "run"))
    source = tf.constant(jax_ids["source"])

    saved = export_saved_model(translator, str(tmp_path / "saved_model"))
    loaded = tf.saved_model.load(saved)
    result = loaded.signatures["translate_tokens"](source_ids=source)
    assert _trimmed(result["target_ids"].numpy()) == \
        _trimmed(jax_ids["beam"])

    for mode in ("greedy", "beam"):
        proto = onnx_export.convert_search(translator, mode)
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        ids = session.run(["target_ids"],
                          {"source_ids": jax_ids["source"]})[0]
        assert _trimmed(ids) == _trimmed(jax_ids[mode]), mode
