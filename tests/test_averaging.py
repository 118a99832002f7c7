"""Tests for keras_transformer.training.averaging."""

import os

import h5py
import keras
import numpy as np
import pytest

from keras_transformer.training import averaging
from keras_transformer.training.averaging import (
    average_checkpoints,
    average_last_checkpoints,
    checkpoint_paths,
)
from tests.training_script import tiny_config


def small_model():
    inputs = keras.Input((3,), dtype="int32", name="encoder_inputs")
    hidden = keras.layers.Embedding(11, 4, name="embedding")(inputs)
    outputs = keras.layers.Dense(5, name="dense")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def h5_arrays(path):
    """The model variables in a .weights.h5 file, read with h5py alone."""
    with h5py.File(path, "r") as file:
        return [file["layers/embedding/vars/0"][()],
                file["layers/dense/vars/0"][()],
                file["layers/dense/vars/1"][()]]


def write_checkpoints(model, directory, rng, count):
    paths = []
    for epoch in range(1, count + 1):
        model.set_weights([rng.normal(size=w.shape).astype("float32")
                           for w in model.get_weights()])
        path = os.path.join(directory, averaging.EPOCH_CHECKPOINT.format(
            epoch=epoch))
        model.save_weights(path)
        paths.append(path)
    return paths


def test_average_equals_numpy_mean_of_the_files(tmp_path, rng):
    model = small_model()
    paths = write_checkpoints(model, tmp_path, rng, 4)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    assert average_checkpoints(model, paths[1:]) is model
    files = [h5_arrays(path) for path in paths[1:]]
    for index, weight in enumerate(model.get_weights()):
        expected = np.mean([arrays[index] for arrays in files], axis=0)
        np.testing.assert_allclose(weight, expected, rtol=1e-6, atol=1e-7)


def test_average_last_takes_the_newest(tmp_path, rng):
    model = small_model()
    paths = write_checkpoints(model, tmp_path, rng, 12)
    used = average_last_checkpoints(model, str(tmp_path), num_checkpoints=5)
    assert used == paths[-5:]  # epoch-0010..12 sort after epoch-0009
    files = [h5_arrays(path) for path in paths[-5:]]
    np.testing.assert_allclose(
        model.get_weights()[1], np.mean([f[1] for f in files], axis=0),
        rtol=1e-6, atol=1e-7)
    # Fewer files than asked: all of them.
    assert average_last_checkpoints(model, str(tmp_path), 50) == paths


def test_single_checkpoint_is_loaded_exactly(tmp_path, rng):
    model = small_model()
    [path] = write_checkpoints(model, tmp_path, rng, 1)
    saved = model.get_weights()
    model.set_weights([np.zeros_like(w) for w in saved])
    average_checkpoints(model, [path])
    for got, want in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(got, want)


def test_checkpoint_paths_order(tmp_path):
    names = ["epoch-0010.weights.h5", "epoch-0002-batch-000100.weights.h5",
             "epoch-0002.weights.h5", "epoch-0002-batch-000020.weights.h5",
             "epoch-0001.weights.h5", "model.keras", "notes.txt",
             "epoch-3.weights.h5.tmp"]
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "backup").mkdir()
    assert [os.path.basename(p) for p in checkpoint_paths(str(tmp_path))] == [
        "epoch-0001.weights.h5", "epoch-0002-batch-000020.weights.h5",
        "epoch-0002-batch-000100.weights.h5", "epoch-0002.weights.h5",
        "epoch-0010.weights.h5"]
    assert checkpoint_paths(str(tmp_path / "missing")) == []


def test_averages_a_transformer(tmp_path):
    from keras_transformer.model import build_transformer

    model = build_transformer(tiny_config())
    paths, saved = [], []
    for epoch in (1, 2):
        for variable in model.weights:
            variable.assign(keras.random.normal(variable.shape))
        saved.append(model.get_weights())
        paths.append(str(tmp_path / f"epoch-000{epoch}.weights.h5"))
        model.save_weights(paths[-1])
    average_checkpoints(model, paths)
    for got, first, second in zip(model.get_weights(), *saved):
        np.testing.assert_allclose(got, (first + second) / 2, rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.parametrize("paths,error,name", [
    ([], ValueError, "paths"), ("epoch-0001.weights.h5", ValueError, "paths"),
    (["/nonexistent/epoch-0001.weights.h5"], ValueError, "paths"),
])
def test_average_rejects_bad_paths(paths, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        average_checkpoints(small_model(), paths)


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="`model`"):
        average_checkpoints("model", ["a"])
    with pytest.raises(ValueError, match="`num_checkpoints`"):
        average_last_checkpoints(small_model(), str(tmp_path), 0)
    with pytest.raises(TypeError, match="`num_checkpoints`"):
        average_last_checkpoints(small_model(), str(tmp_path), 2.0)
    with pytest.raises(ValueError, match="`directory`"):
        average_last_checkpoints(small_model(), str(tmp_path), 5)
    with pytest.raises(TypeError, match="`directory`"):
        checkpoint_paths(5)
