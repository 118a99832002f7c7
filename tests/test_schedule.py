"""Tests for keras_transformer.training.schedule."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest

from keras_transformer.config import TransformerConfig
from keras_transformer.training.schedule import (
    LinearDecaySchedule,
    TransformerSchedule,
    make_optimizer,
    make_schedule,
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


def linear_decay_reference(step, peak, warmup, total):
    """The linear schedule as written in its docstring, step from 1."""
    if step <= warmup:
        return peak * step / warmup
    return peak * max(0.0, (total + 1 - step) / (total + 1 - warmup))


@pytest.mark.parametrize("peak,warmup,total", [(1e-3, 10, 110),
                                               (5e-4, 1, 2),
                                               (2e-3, 400, 4321)])
def test_linear_decay_matches_its_formula(peak, warmup, total):
    schedule = LinearDecaySchedule(peak, warmup, total)
    for iterations in sorted({0, 1, warmup - 1, warmup, (warmup + total) // 2,
                              total - 1, total, total + 5}):
        np.testing.assert_allclose(
            float(schedule(iterations)),
            linear_decay_reference(iterations + 1, peak, warmup, total),
            rtol=1e-5, atol=1e-12)
    rates = np.array([float(schedule(i)) for i in range(total + 3)])
    assert int(np.argmax(rates)) == warmup - 1
    assert rates[total - 1] > 0 and rates[total] == 0.0


def test_linear_decay_round_trips_and_rejects_bad_plans():
    schedule = LinearDecaySchedule(1e-3, 10, 50)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule))
    assert restored.get_config() == {"peak": 1e-3, "warmup_steps": 10,
                                     "total_steps": 50}
    with pytest.raises(ValueError, match="`total_steps`"):
        LinearDecaySchedule(1e-3, 10, 10)
    with pytest.raises(ValueError, match="`peak`"):
        LinearDecaySchedule(0.0, 10, 50)


def test_linear_decay_replans_inside_a_traced_step():
    import tensorflow as tf

    schedule = LinearDecaySchedule(1e-3, 10, 110)
    rate = tf.function(lambda step: schedule(step))
    np.testing.assert_allclose(float(rate(tf.constant(59))),
                               linear_decay_reference(60, 1e-3, 10, 110),
                               rtol=1e-5)
    # The function traced with the first plan computes the second.
    assert schedule.replan(70) == 70
    np.testing.assert_allclose(float(rate(tf.constant(59))),
                               linear_decay_reference(60, 1e-3, 10, 70),
                               rtol=1e-5)
    assert float(rate(tf.constant(70))) == 0.0
    assert schedule.get_config()["total_steps"] == 70
    # A plan inside the warm-up still ends after it.
    assert schedule.replan(3) == 11
    with pytest.raises(ValueError, match="`total_steps`"):
        schedule.replan(0)


def test_make_optimizer_follows_the_config_schedule():
    config = TransformerConfig.from_preset("tiny", warmup_steps=20,
                                           schedule="linear",
                                           learning_rate=3e-3)
    schedule = make_optimizer(config, total_steps=200)._learning_rate
    assert isinstance(schedule, LinearDecaySchedule)
    assert schedule.get_config() == {"peak": 3e-3, "warmup_steps": 20,
                                     "total_steps": 200}
    with pytest.raises(ValueError, match="`total_steps`"):
        make_optimizer(config)
    # The paper's schedule with another peak: eq. 3 scaled.
    paper = dataclasses.replace(config, schedule="paper")
    scaled = make_schedule(paper)
    paper_peak = reference.learning_rate(20, config.d_model, 20)
    for iterations in (0, 19, 500):
        np.testing.assert_allclose(
            float(scaled(iterations)),
            reference.learning_rate(iterations + 1, config.d_model, 20)
            * 3e-3 / paper_peak, rtol=1e-5)
    # Without `learning_rate`, the linear peak is the paper's.
    default = dataclasses.replace(config, learning_rate=None)
    np.testing.assert_allclose(make_schedule(default, 200).peak, paper_peak,
                               rtol=1e-6)


@pytest.mark.parametrize("name,value,error", [
    ("schedule", "cosine", ValueError), ("learning_rate", 0.0, ValueError),
    ("learning_rate", "1e-3", TypeError)])
def test_config_rejects_bad_schedules(name, value, error):
    with pytest.raises(error, match=f"`{name}`"):
        TransformerConfig.from_preset("tiny", **{name: value})
