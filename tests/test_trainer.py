"""Tests for keras_transformer.training.trainer."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_transformer import run_directory as files
from keras_transformer.training import averaging
from keras_transformer.training.losses import (
    MaskedAccuracy,
    MaskedSparseCategoricalCrossentropy,
)
from keras_transformer.training.trainer import compile_transformer, train
from tests.training_script import VOCAB, copy_task_dataset, tiny_config

SCRIPT = os.path.join(os.path.dirname(__file__), "training_script.py")


class BatchCounter(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def stand_in_model(config, learning_rate=None):
    """A cheap compiled model with the Transformer's inputs and outputs."""
    encoder_inputs = keras.Input((None,), dtype="int32",
                                 name="encoder_inputs")
    decoder_inputs = keras.Input((None,), dtype="int32",
                                 name="decoder_inputs")
    hidden = keras.layers.Embedding(VOCAB, 8)(decoder_inputs)
    context = keras.ops.mean(keras.layers.Embedding(VOCAB, 8)(encoder_inputs),
                             axis=1, keepdims=True)
    logits = keras.layers.Dense(VOCAB)(hidden + context)
    model = keras.Model([encoder_inputs, decoder_inputs], logits)
    if learning_rate is None:
        return compile_transformer(model, config)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                  loss=MaskedSparseCategoricalCrossentropy(),
                  metrics=[MaskedAccuracy()])
    return model


def read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


@pytest.mark.slow
def test_learns_the_copy_task_and_writes_the_run(tmp_path):
    keras.utils.set_random_seed(0)
    config = tiny_config()
    run_dir = str(tmp_path / "run")
    epochs, steps = 8, 25
    model, history = train(config, copy_task_dataset(), None, run_dir,
                           epochs=epochs, steps_per_epoch=steps)
    # Learning: the loss falls and the tokens of a held-out-free copy task
    # are reproduced (200 steps; about 0.95 is typical).
    assert len(history["loss"]) == epochs
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert history["masked_accuracy"][-1] > 0.8
    assert history["learning_rate"][-1] == pytest.approx(
        (config.d_model ** -0.5) * (epochs * steps + 1) ** -0.5, rel=1e-5)
    # The run directory.
    assert read_json(os.path.join(run_dir, "history.json")) == history
    assert read_json(os.path.join(run_dir, "config.json")) == config.to_dict()
    state = read_json(os.path.join(run_dir, files.STATE))
    assert state.pop("seconds_trained") > 0
    assert state == {
        "finished": True, "epochs_completed": epochs, "stopped_early": False,
        "stopped": "epochs", "steps": epochs * steps, "precision": "float32"}
    assert os.listdir(os.path.join(run_dir, "logs"))
    assert not os.path.exists(os.path.join(run_dir, files.BACKUP))
    paths = averaging.checkpoint_paths(os.path.join(run_dir, "checkpoints"))
    assert [os.path.basename(p) for p in paths] == [
        f"epoch-{epoch:04d}.weights.h5" for epoch in range(1, epochs + 1)]
    # The final weights are the mean of the last 5 checkpoints.
    from keras_transformer.model import build_transformer

    probe = build_transformer(config)
    loaded = []
    for path in paths[-5:]:
        probe.load_weights(path)
        loaded.append(probe.get_weights())
    for index, weight in enumerate(model.get_weights()):
        np.testing.assert_allclose(
            weight, np.mean([w[index] for w in loaded], axis=0),
            rtol=1e-5, atol=1e-6)
    # model.keras reloads to the same function.
    reloaded = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    inputs, _ = next(iter(copy_task_dataset(batch_size=4)))
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0),
                               model.predict(inputs, verbose=0), atol=1e-5)
    # A finished run is not trained again.
    stamp = os.stat(os.path.join(run_dir, "model.keras")).st_mtime_ns
    counter = BatchCounter()
    again, again_history = train(config, copy_task_dataset(), None, run_dir,
                                 epochs=epochs, steps_per_epoch=steps,
                                 callbacks=[counter])
    assert counter.batches == 0
    assert again_history == history
    assert os.stat(os.path.join(run_dir, "model.keras")).st_mtime_ns == stamp
    for got, want in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_early_stopping_step_checkpoints_and_recovery(tmp_path):
    # With a zero learning rate the validation loss never improves, so
    # patience 0 stops after the second epoch.
    config = tiny_config()
    model = stand_in_model(config, learning_rate=0.0)
    run_dir = str(tmp_path / "run")
    data = copy_task_dataset(batch_size=8)
    _, history = train(model, data, data.take(2), run_dir, epochs=6,
                       steps_per_epoch=4, early_stopping_patience=0,
                       checkpoint_every=3, average_last=2)
    assert len(history["val_loss"]) == 2
    state = read_json(os.path.join(run_dir, files.STATE))
    assert state.pop("seconds_trained") > 0
    assert state == {"finished": True, "epochs_completed": 2,
                     "stopped_early": True, "stopped": "early_stopping",
                     "steps": 8, "precision": "float32"}
    assert not os.path.exists(os.path.join(run_dir, "config.json"))
    names = [os.path.basename(p) for p in averaging.checkpoint_paths(
        os.path.join(run_dir, "checkpoints"))]
    # Every 3 steps of 8: after steps 3 and 6 (epoch 2, its batch 2).
    assert names == ["epoch-0001-batch-000003.weights.h5",
                     "epoch-0002-batch-000002.weights.h5"]
    # Killed after fit but before model.keras: a new call only averages
    # and saves; it does not train.
    os.remove(os.path.join(run_dir, "model.keras"))
    counter = BatchCounter()
    fresh = stand_in_model(config, learning_rate=0.0)
    _, again = train(fresh, data, data.take(2), run_dir, epochs=6,
                     steps_per_epoch=4, early_stopping_patience=0,
                     checkpoint_every=3, average_last=2, callbacks=[counter])
    assert counter.batches == 0
    assert again == history
    assert os.path.exists(os.path.join(run_dir, "model.keras"))
    for got, want in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_without_averaging_keeps_the_last_weights(tmp_path):
    config = tiny_config()
    model = stand_in_model(config)
    data = copy_task_dataset(batch_size=8)
    trained, _ = train(model, data, None, str(tmp_path), epochs=2,
                       steps_per_epoch=3, average_last=None)
    final = [w.copy() for w in trained.get_weights()]
    # model.keras holds the weights of the last step.
    other = stand_in_model(config)
    averaging.build_optimizer(other)
    other.load_weights(str(tmp_path / "model.keras"))
    for got, want in zip(other.get_weights(), final):
        np.testing.assert_array_equal(got, want)


def test_train_refuses_a_run_dir_of_another_config(tmp_path):
    config = tiny_config()
    (tmp_path / "config.json").write_text(
        dataclasses.replace(config, num_layers=2).to_json())
    with pytest.raises(ValueError, match="num_layers"):
        train(config, copy_task_dataset(), None, str(tmp_path), epochs=1)
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


@pytest.mark.parametrize("kwargs,error,name", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(steps_per_epoch=0), ValueError, "steps_per_epoch"),
    (dict(average_last=0), ValueError, "average_last"),
    (dict(checkpoint_every="step"), TypeError, "checkpoint_every"),
    (dict(checkpoint_every=0), ValueError, "checkpoint_every"),
    (dict(backup_every=None), TypeError, "backup_every"),
    (dict(early_stopping_patience=-1), ValueError,
     "early_stopping_patience"),
])
def test_train_rejects_bad_arguments(tmp_path, kwargs, error, name):
    arguments = dict(epochs=1)
    arguments.update(kwargs)
    with pytest.raises(error, match=f"`{name}`"):
        train(tiny_config(), None, None, str(tmp_path), **arguments)


def test_train_rejects_bad_models(tmp_path):
    with pytest.raises(TypeError, match="`model_or_config`"):
        train({"d_model": 8}, None, None, str(tmp_path), epochs=1)
    uncompiled = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`model_or_config`"):
        train(uncompiled, None, None, str(tmp_path), epochs=1)
    with pytest.raises(TypeError, match="`run_dir`"):
        train(tiny_config(), None, None, 3, epochs=1)


def read_log(path):
    """The log's records; a line cut short by the SIGKILL is skipped."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


@pytest.mark.slow
def test_resumes_after_sigkill_mid_epoch(tmp_path):
    run_dir, log = str(tmp_path / "run"), str(tmp_path / "log.jsonl")
    epochs, steps = 4, 10
    command = [sys.executable, SCRIPT, "train", run_dir, str(epochs),
               str(steps), log]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    metadata_path = os.path.join(run_dir, files.BACKUP,
                                 "training_metadata.json")
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert first.poll() is None, first.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no mid-epoch backup"
            try:
                metadata = read_json(metadata_path)
            except (OSError, ValueError):
                metadata = {}
            # A backup written inside an epoch after the first.
            if metadata.get("epoch", 0) >= 1 and metadata.get("batch", 0) > 0:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()
    metadata = read_json(metadata_path)
    history = read_json(os.path.join(run_dir, "history.json"))
    assert len(history["loss"]) >= metadata["epoch"] >= 1
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))

    second = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, timeout=180)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    history = read_json(os.path.join(run_dir, "history.json"))
    assert len(history["loss"]) == epochs
    assert all(np.isfinite(history["loss"]))
    assert os.path.exists(os.path.join(run_dir, "model.keras"))

    records = read_log(log)
    second_pid = records[-1]["pid"]
    began = [r for r in records if r["pid"] == second_pid and "epoch" in r]
    batches = [r for r in records if r["pid"] == second_pid and "batch" in r]
    # It resumed at the interrupted epoch, not at epoch 0 ...
    resumed = metadata["epoch"]
    assert [r["epoch"] for r in began] == list(range(resumed, epochs))
    assert len(batches) == (epochs - resumed) * steps
    # ... from the weights and optimizer state of the mid-epoch backup.
    assert resumed * steps < began[0]["iterations"] <= (resumed + 1) * steps


@pytest.mark.slow
def test_linear_schedule_plans_the_runs_steps(tmp_path):
    # 2 epochs of the dataset's 4 batches: 8 planned steps, warm-up 2.
    config = tiny_config(schedule="linear", warmup_steps=2,
                         learning_rate=1e-3)
    data = copy_task_dataset(batch_size=8, repeat=False, num_examples=32)
    assert int(data.cardinality()) == 4
    _, history = train(config, data, None, str(tmp_path), epochs=2,
                       average_last=None)
    # The rate logged at an epoch's end is the next step's: step 5 of 8
    # after epoch 1 (1e-3 * (8 + 1 - 5) / (8 + 1 - 2)), 0 after the last.
    np.testing.assert_allclose(history["learning_rate"],
                               [1e-3 * 4 / 7, 0.0], rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_time_budget_replans_a_misjudged_decay(tmp_path, monkeypatch):
    # A probe that says steps are 1,000x faster than they are plans the
    # decay over all 4,000 steps of the epochs; once the first epoch has
    # ended, the plan follows the measured step time, so the run ends
    # with its rate near zero at the budget instead of stopping near the
    # peak.
    from keras_transformer.training import trainer

    monkeypatch.setattr(trainer, "_probe_step_seconds",
                        lambda *args, **kwargs: 1e-5)
    config = tiny_config(schedule="linear", warmup_steps=2,
                         learning_rate=1e-3)
    _, history = train(config, copy_task_dataset(batch_size=8), None,
                       str(tmp_path), epochs=1000, steps_per_epoch=20,
                       average_last=None, time_budget=12.0, backup_every=10)
    state = read_json(os.path.join(tmp_path, "checkpoints", "state.json"))
    assert state["probe_step_seconds"] == 0.0
    steps = state["steps"]
    assert 20 < steps <= state["planned_steps"] < 1000 * 20
    # Rates are logged at epoch ends: early ones near the first plan's,
    # the last near zero (within 10% of the peak).
    assert history["learning_rate"][0] > 0.9e-3
    assert history["learning_rate"][-1] < 0.1e-3
    assert state["seconds_trained"] < 40.0


def test_linear_schedule_needs_a_known_length(tmp_path):
    config = tiny_config(schedule="linear", warmup_steps=2)
    with pytest.raises(ValueError, match="`steps_per_epoch`"):
        train(config, copy_task_dataset(batch_size=8), None,
              str(tmp_path), epochs=1)
