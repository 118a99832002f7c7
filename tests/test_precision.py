"""Mixed-precision training: the argument, its record, float32 saving."""

import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_transformer import run_directory as files
from keras_transformer.checks import (
    TRAINING_PRECISIONS,
    check_training_precision,
)
from keras_transformer.cli import main
from keras_transformer.model import Transformer
from keras_transformer.training import precision as precision_module
from keras_transformer.training.averaging import checkpoint_paths
from keras_transformer.training.precision import (
    check_runnable,
    dtype_policy,
    float32_model,
)
from keras_transformer.training.trainer import train
from tests.test_trainer import stand_in_model
from tests.training_script import copy_task_dataset, tiny_config


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


_FRESH_PROCESS_LOAD = r"""
import json, sys
import numpy as np, keras
import keras_transformer  # noqa: F401 (registers the serializable classes)
model = keras.models.load_model(sys.argv[1], safe_mode=True)
ids = np.array(json.loads(sys.argv[2]), "int32")
logits = model({"encoder_inputs": ids, "decoder_inputs": ids})
print(json.dumps({
    "policy": model.dtype_policy.name,
    "layer_policies": sorted({layer.dtype_policy.name
                              for layer in model._flatten_layers()}),
    "variable_dtypes": sorted({str(v.dtype) for v in model.weights}),
    "logits_dtype": keras.backend.standardize_dtype(logits.dtype),
    "logits": keras.ops.convert_to_numpy(logits).tolist()}))
"""


@pytest.mark.slow
def test_cli_trains_in_mixed_bfloat16_and_saves_float32(
        tmp_path, corpus_files, capsys):
    run = str(tmp_path / "run")
    argv = ["train", "--data", str(corpus_files["train"]), "--valid-data",
            str(corpus_files["validation"]), "--run", run, "--preset",
            "tiny", "--epochs", "2", "--vocab-size", "400",
            "--batch-tokens", "2048", "--average-last", "2",
            "--set", "d_model=32", "--set", "max_length=40",
            "--precision", "mixed_bfloat16"]
    assert main(argv) == 0
    assert "(precision mixed_bfloat16)" in capsys.readouterr().out
    assert keras.config.dtype_policy().name == "float32"
    # Recorded: the run's state and every row of history.json.
    state = read_json(os.path.join(run, files.STATE))
    assert state["precision"] == "mixed_bfloat16" and state["finished"]
    history = read_json(os.path.join(run, files.HISTORY))
    assert history["precision"] == ["mixed_bfloat16"] * 2
    assert all(np.isfinite(history["loss"]))

    # model.keras is the float32 average of the two mixed-precision
    # checkpoints ...
    from keras_transformer.runs import load_translator

    model = load_translator(run).model
    assert model.dtype_policy.name == "float32"
    probe = Transformer(model.config)
    averaged = []
    for path in checkpoint_paths(os.path.join(run, files.CHECKPOINTS)):
        probe.load_weights(path)
        averaged.append(probe.get_weights())
    assert len(averaged) == 2
    for index, weight in enumerate(model.get_weights()):
        np.testing.assert_allclose(
            weight, np.mean([w[index] for w in averaged], axis=0),
            rtol=1e-5, atol=1e-6)
    # ... and reloads as float32, every layer, in a fresh process.
    ids = [[5, 6, 7, 3], [8, 9, 3, 0]]
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_LOAD,
         os.path.join(run, files.MODEL), json.dumps(ids)],
        capture_output=True, text=True, check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    fresh = json.loads(out.stdout.splitlines()[-1])
    assert fresh["policy"] == "float32"
    assert fresh["layer_policies"] == ["float32"]
    assert fresh["variable_dtypes"] == ["float32"]
    assert fresh["logits_dtype"] == "float32"
    ids = np.array(ids, "int32")
    expected = model({"encoder_inputs": ids, "decoder_inputs": ids})
    np.testing.assert_allclose(fresh["logits"], np.asarray(expected),
                               atol=1e-5)

    # Resuming with another precision is refused, naming both.
    argv[-1] = "float32"
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "`precision`" in error
    assert "'mixed_bfloat16'" in error and "'float32'" in error


class _Interrupt(keras.callbacks.Callback):
    """Stops training in the second epoch, after the first is backed up."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() > 6:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_python_train_resumes_in_its_recorded_precision(tmp_path):
    config, run_dir = tiny_config(), str(tmp_path / "run")
    arguments = dict(epochs=2, steps_per_epoch=5, average_last=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, copy_task_dataset(), None, run_dir,
              precision="mixed_float16", callbacks=[_Interrupt()],
              **arguments)
    assert keras.config.dtype_policy().name == "float32"
    state = read_json(os.path.join(run_dir, files.STATE))
    assert state.pop("seconds_trained") > 0  # saved at the epoch's end
    assert state == {"precision": "mixed_float16"}
    assert not os.path.exists(os.path.join(run_dir, files.MODEL))
    # Another precision (float32 is also what None means for a config)
    # cannot resume it.
    for other in ("float32", None, "mixed_bfloat16"):
        with pytest.raises(ValueError, match="`precision`") as raised:
            train(config, copy_task_dataset(), None, run_dir,
                  precision=other, **arguments)
        assert "'mixed_float16'" in str(raised.value)
        assert repr(other or "float32") in str(raised.value)
    # The recorded one resumes it, with loss scaling.
    model, history = train(config, copy_task_dataset(), None, run_dir,
                           precision="mixed_float16", **arguments)
    assert keras.config.dtype_policy().name == "float32"
    assert model.dtype_policy.name == "mixed_float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert history["precision"] == ["mixed_float16"] * 2
    assert all(np.isfinite(history["loss"]))
    state = read_json(os.path.join(run_dir, files.STATE))
    assert state["finished"] and state["precision"] == "mixed_float16"
    saved = keras.saving.load_model(os.path.join(run_dir, files.MODEL))
    assert saved.dtype_policy.name == "float32"
    assert {str(w.dtype) for w in saved.weights} == {"float32"}
    inputs, _ = next(iter(copy_task_dataset(batch_size=4)))
    np.testing.assert_allclose(saved.predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), atol=0.05)


@pytest.mark.parametrize("bad", ["float16", "bfloat16", "Auto", None, 16])
def test_unknown_precisions_are_rejected_naming_precision(bad, tmp_path):
    from keras_transformer.runs import train_run

    message = r"`precision` must be one of \((?:'auto', )?'float32', "
    with pytest.raises(ValueError, match=message):
        check_training_precision(bad)
    # Before any file is read or written.
    with pytest.raises(ValueError, match=message):
        train_run(str(tmp_path / "missing.tsv"), str(tmp_path / "run"),
                  precision=bad)
    if bad is not None:  # None: float32 for a config
        with pytest.raises(ValueError, match=message):
            train(tiny_config(), None, None, str(tmp_path / "run"),
                  epochs=1, precision=bad)
    assert os.listdir(tmp_path) == []
    assert keras.config.dtype_policy().name == "float32"


def test_cli_rejects_an_unknown_precision(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["train", "--data", "bundled", "--run", "x", "--precision",
              "half"])
    assert raised.value.code == 2
    assert "--precision" in capsys.readouterr().err


def test_a_given_model_trains_in_its_own_precision(tmp_path):
    with dtype_policy("mixed_bfloat16"):
        model = stand_in_model(tiny_config())
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="`precision`.*'mixed_bfloat16'"):
        train(model, copy_task_dataset(), None, str(tmp_path), epochs=1,
              steps_per_epoch=1, precision="float32")
    assert os.listdir(tmp_path) == []


def test_float32_model_copies_a_mixed_precision_transformer():
    assert TRAINING_PRECISIONS == ("float32", "mixed_bfloat16",
                                   "mixed_float16")
    config = tiny_config()
    for policy in ("mixed_bfloat16", "mixed_float16"):
        with dtype_policy(policy):
            model = Transformer(config)
        copy = float32_model(model)
        assert copy is not model and copy.dtype_policy.name == "float32"
        assert {layer.dtype_policy.name
                for layer in copy._flatten_layers()} == {"float32"}
        for got, want in zip(copy.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(got, want)
    float32 = Transformer(config)
    assert float32_model(float32) is float32


@pytest.mark.parametrize("flags,noted", [
    (set(), True), ({"avx512_bf16"}, False), ({"amx_bf16"}, False),
    (None, False)])
def test_bfloat16_without_native_support_is_noted(flags, noted,
                                                  monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision_module, "_has_gpu", lambda: False)
    with caplog.at_level(logging.WARNING, logger=precision_module.__name__):
        assert check_runnable("mixed_bfloat16") == "mixed_bfloat16"
    assert ("no native bfloat16" in caplog.text) == noted
    assert check_runnable("float32") == "float32"


def test_a_precision_this_machine_cannot_compute_is_an_error(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("no kernel")

    monkeypatch.setattr(keras.ops, "matmul", fail)
    with pytest.raises(ValueError, match="`precision` 'mixed_float16' cannot"
                                         " run on this machine"):
        check_runnable("mixed_float16")


@pytest.mark.parametrize("flags,gpu,expected", [
    ({"avx512_bf16"}, False, "mixed_bfloat16"),
    ({"amx_bf16", "avx2"}, False, "mixed_bfloat16"),
    ({"avx2"}, False, "float32"), (None, False, "float32"),
    (set(), True, "mixed_bfloat16")])
def test_auto_picks_bfloat16_where_it_is_native(flags, gpu, expected,
                                                monkeypatch, tmp_path):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision_module, "_has_gpu", lambda: gpu)
    assert precision_module.resolve_precision("auto") == expected
    # A run that recorded a precision resumes in it, whatever the machine.
    run = files.RunDirectory(str(tmp_path))
    run.claim_precision("mixed_float16")
    assert precision_module.resolve_precision("auto", run) == "mixed_float16"
    assert precision_module.resolve_precision("float32", run) == "float32"
    with pytest.raises(ValueError, match="`precision`"):
        precision_module.resolve_precision("bfloat16")


@pytest.mark.slow
def test_train_with_auto_records_what_it_chose(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(precision_module, "_has_gpu", lambda: False)
    _, history = train(tiny_config(), copy_task_dataset(batch_size=8),
                       None, str(tmp_path), epochs=1, steps_per_epoch=2,
                       average_last=None, precision="auto")
    assert history["precision"] == ["float32"]
    state = read_json(tmp_path / "checkpoints" / "state.json")
    assert state["precision"] == "float32"
