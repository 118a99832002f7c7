"""Tests for keras_transformer.training.schedule."""

import inspect

import keras
import numpy as np
import pytest

from keras_transformer.config import TransformerConfig
from keras_transformer.training.schedule import (
    TransformerSchedule,
    make_optimizer,
)
from tests import reference_training as reference


@pytest.mark.parametrize("d_model,warmup_steps", [(512, 4000), (64, 10)])
def test_matches_eq_3_at_iterations_plus_one(d_model, warmup_steps):
    schedule = TransformerSchedule(d_model, warmup_steps)
    for iterations in [0, 1, 7, warmup_steps - 1, warmup_steps,
                       3 * warmup_steps, 100_000]:
        expected = reference.learning_rate(iterations + 1, d_model,
                                           warmup_steps)
        np.testing.assert_allclose(float(schedule(iterations)), expected,
                                   rtol=1e-6)


def test_sentinel_values():
    schedule = TransformerSchedule(512, 4000)
    # Peak at paper step 4000: (512 * 4000) ** -0.5.
    np.testing.assert_allclose(float(schedule(3999)), 6.987712429686844e-4,
                               rtol=1e-6)
    # Paper step 1: never zero.
    np.testing.assert_allclose(float(schedule(0)), 1.746928107421711e-7,
                               rtol=1e-6)


def test_rises_during_warmup_then_decays():
    schedule = TransformerSchedule(32, 50)
    rates = np.array([float(schedule(i)) for i in range(200)])
    peak = int(np.argmax(rates))
    assert peak == 49  # iterations 49 is the paper's step 50
    assert np.all(np.diff(rates[:peak + 1]) > 0)
    assert np.all(np.diff(rates[peak:]) < 0)


def test_accepts_tensor_iterations():
    schedule = TransformerSchedule(64, 10)
    values = keras.ops.convert_to_numpy(
        schedule(keras.ops.convert_to_tensor(np.int64(4))))
    np.testing.assert_allclose(values, reference.learning_rate(5, 64, 10),
                               rtol=1e-6)


def test_config_round_trips():
    schedule = TransformerSchedule(d_model=96, warmup_steps=123)
    config = schedule.get_config()
    assert set(config) == set(
        inspect.signature(TransformerSchedule.__init__).parameters) - {
            "self"}
    assert config == {"d_model": 96, "warmup_steps": 123}
    restored = TransformerSchedule.from_config(config)
    assert float(restored(10)) == float(schedule(10))
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, TransformerSchedule)
    assert restored.get_config() == config


@pytest.mark.parametrize("name,value,error", [
    ("d_model", 0, ValueError), ("d_model", -8, ValueError),
    ("d_model", 8.0, TypeError), ("d_model", True, TypeError),
    ("warmup_steps", 0, ValueError), ("warmup_steps", "4000", TypeError),
])
def test_rejects_bad_arguments(name, value, error):
    arguments = {"d_model": 64, "warmup_steps": 10, name: value}
    with pytest.raises(error, match=f"`{name}`"):
        TransformerSchedule(**arguments)


def test_make_optimizer_is_the_papers_adam():
    config = TransformerConfig.from_preset("tiny", warmup_steps=77)
    optimizer = make_optimizer(config)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.beta_1 == 0.9
    assert optimizer.beta_2 == 0.98
    assert optimizer.epsilon == 1e-9
    schedule = optimizer._learning_rate
    assert isinstance(schedule, TransformerSchedule)
    assert schedule.get_config() == {"d_model": config.d_model,
                                     "warmup_steps": 77}
    # A fresh optimizer (iterations 0) uses the rate of paper step 1.
    np.testing.assert_allclose(
        float(optimizer.learning_rate),
        reference.learning_rate(1, config.d_model, 77), rtol=1e-6)
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer))
    assert restored._learning_rate.get_config() == schedule.get_config()


def test_make_optimizer_rejects_non_config():
    with pytest.raises(TypeError, match="`config`"):
        make_optimizer({"d_model": 512})
