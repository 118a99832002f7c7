"""Tests for keras_transformer.training.losses."""

import inspect

import keras
import numpy as np
import pytest

from keras_transformer.training.losses import (
    MaskedAccuracy,
    MaskedSparseCategoricalCrossentropy,
    label_smoothed_crossentropy,
)
from tests import reference_training as reference

B, T, V = 3, 5, 7


@pytest.fixture
def batch(rng):
    """Labels with padding (rows of 5, 3 and 1 real tokens) and logits."""
    labels = rng.integers(1, V, size=(B, T)).astype("int32")
    labels[1, 3:] = 0
    labels[2, 1:] = 0
    logits = rng.normal(scale=2.0, size=(B, T, V)).astype("float32")
    return labels, logits


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.35])
def test_per_token_loss_matches_reference(batch, label_smoothing):
    labels, logits = batch
    got = keras.ops.convert_to_numpy(
        label_smoothed_crossentropy(labels, logits, label_smoothing))
    assert got.shape == (B, T)
    np.testing.assert_allclose(
        got, reference.token_losses(labels, logits, label_smoothing),
        rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("pad_id", [0, None])
def test_loss_is_the_token_average(batch, label_smoothing, pad_id):
    labels, logits = batch
    loss = MaskedSparseCategoricalCrossentropy(label_smoothing, pad_id=pad_id)
    expected = reference.masked_loss(labels, logits, label_smoothing, pad_id)
    np.testing.assert_allclose(float(loss(labels, logits)), expected,
                               rtol=1e-5)


def test_masking_differs_from_no_masking(batch):
    # Guards the test above: padding really changes the value.
    labels, logits = batch
    masked = reference.masked_loss(labels, logits, 0.1, pad_id=0)
    unmasked = reference.masked_loss(labels, logits, 0.1, pad_id=None)
    assert abs(masked - unmasked) > 1e-2


def test_padding_does_not_change_the_loss(batch, rng):
    labels, logits = batch
    loss = MaskedSparseCategoricalCrossentropy()
    other = logits.copy()
    other[labels == 0] = rng.normal(size=other[labels == 0].shape)
    wider_labels = np.pad(labels, [(0, 0), (0, 3)])
    wider_logits = np.pad(other, [(0, 0), (0, 3), (0, 0)])
    np.testing.assert_allclose(float(loss(wider_labels, wider_logits)),
                               float(loss(labels, logits)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(B,), (B, 1), (B, T)])
def test_sample_weight_weighs_tokens(batch, rng, shape):
    labels, logits = batch
    weights = rng.uniform(0.5, 2.0, size=shape)
    loss = MaskedSparseCategoricalCrossentropy(0.1)
    reference_weights = weights[:, 0] if shape == (B, 1) else weights
    expected = reference.masked_loss(labels, logits, 0.1, 0,
                                     reference_weights)
    np.testing.assert_allclose(float(loss(labels, logits, weights)),
                               expected, rtol=1e-5)


def test_sentinels():
    loss = MaskedSparseCategoricalCrossentropy(0.1)
    labels = np.array([[1, 2, 0]])
    # Uniform logits: log(V) whatever the smoothing.
    np.testing.assert_allclose(float(loss(labels, np.zeros((1, 3, 8)))),
                               np.log(8.0), rtol=1e-6)
    # A batch with no real token has loss 0, not NaN.
    assert float(loss(np.zeros((2, 3), "int32"), np.ones((2, 3, 8)))) == 0.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_are_computed_in_float32(batch, dtype):
    labels, logits = batch
    low = keras.ops.cast(logits, dtype)
    rounded = keras.ops.convert_to_numpy(keras.ops.cast(low, "float32"))
    value = MaskedSparseCategoricalCrossentropy(0.1)(labels, low)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    np.testing.assert_allclose(
        float(value), reference.masked_loss(labels, rounded, 0.1), rtol=1e-5)


def test_keras_fit_reports_the_token_average(batch):
    # compile/evaluate must not rescale: one batch's logged loss equals
    # the reference token average of the logits the model produces.
    labels, logits = batch
    inputs = keras.Input((T, V))
    model = keras.Model(inputs, keras.layers.Dense(V)(inputs))
    model.compile(loss=MaskedSparseCategoricalCrossentropy(0.1),
                  metrics=[MaskedAccuracy()])
    loss, accuracy = model.evaluate(logits, labels, batch_size=B, verbose=0)
    outputs = model.predict(logits, batch_size=B, verbose=0)
    np.testing.assert_allclose(
        loss, reference.masked_loss(labels, outputs, 0.1), rtol=1e-5)
    np.testing.assert_allclose(
        accuracy, reference.masked_accuracy(labels, outputs), rtol=1e-6)


def test_gradient_flows_only_from_real_tokens(batch):
    import tensorflow as tf

    labels, logits = batch
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = MaskedSparseCategoricalCrossentropy(0.1)(labels, logits)
    gradient = tape.gradient(value, logits).numpy()
    assert np.all(gradient[labels == 0] == 0)
    assert np.all(np.abs(gradient[labels != 0]).sum(-1) > 0)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.35])
def test_gradient_is_softmax_minus_the_smoothed_target(batch, rng,
                                                       label_smoothing):
    # d/dz of the per-token loss, weighted by w: w (softmax(z) - q), with
    # q = (1 - eps) onehot(y) + eps / V (numpy), whatever path computes it
    # (TensorFlow's is a custom gradient around its fused kernel).
    import tensorflow as tf

    labels, logits = batch
    weights = rng.random((B, T)).astype("float32")
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(weights * label_smoothed_crossentropy(
            labels, variable, label_smoothing))
    got = tape.gradient(value, variable).numpy()
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    softmax = shifted / shifted.sum(-1, keepdims=True)
    target = ((1 - label_smoothing) * np.eye(V)[labels]
              + label_smoothing / V)
    np.testing.assert_allclose(got, weights[..., None] * (softmax - target),
                               rtol=1e-5, atol=1e-6)


def test_loss_config_round_trips():
    loss = MaskedSparseCategoricalCrossentropy(label_smoothing=0.2,
                                               pad_id=None, name="ls")
    config = loss.get_config()
    assert set(config) == set(inspect.signature(
        MaskedSparseCategoricalCrossentropy.__init__).parameters) - {"self"}
    assert config == {"label_smoothing": 0.2, "pad_id": None, "name": "ls"}
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, MaskedSparseCategoricalCrossentropy)
    assert restored.get_config() == config


@pytest.mark.parametrize("kwargs,name,error", [
    (dict(label_smoothing=1.0), "label_smoothing", ValueError),
    (dict(label_smoothing=-0.1), "label_smoothing", ValueError),
    (dict(label_smoothing="0.1"), "label_smoothing", TypeError),
    (dict(pad_id=-1), "pad_id", ValueError),
    (dict(pad_id=0.0), "pad_id", TypeError),
])
def test_loss_rejects_bad_arguments(kwargs, name, error):
    with pytest.raises(error, match=f"`{name}`"):
        MaskedSparseCategoricalCrossentropy(**kwargs)


@pytest.mark.parametrize("y_true,y_pred,sample_weight,name", [
    (np.zeros((2, 3)), np.zeros((2, 3)), None, "y_pred"),
    (np.zeros((2,)), np.zeros((2, 3, 4)), None, "y_true"),
    (np.zeros((2, 4)), np.zeros((2, 3, 4)), None, "y_true"),
    (np.zeros((2, 3)), np.zeros((2, 3, 4)), np.zeros((2, 3, 1, 1)),
     "sample_weight"),
])
@pytest.mark.parametrize("target", ["loss", "metric"])
def test_rejects_bad_shapes(y_true, y_pred, sample_weight, name, target):
    with pytest.raises(ValueError, match=f"`{name}`"):
        if target == "loss":
            MaskedSparseCategoricalCrossentropy()(y_true, y_pred,
                                                  sample_weight)
        else:
            MaskedAccuracy().update_state(y_true, y_pred, sample_weight)


def test_accuracy_accumulates_tokens_across_batches(batch, rng):
    labels, logits = batch
    metric = MaskedAccuracy()
    assert float(metric.result()) == 0.0
    other_labels = rng.integers(0, V, size=(2, 8)).astype("int32")
    other_logits = rng.normal(size=(2, 8, V))
    metric.update_state(labels, logits)
    metric.update_state(other_labels, other_logits)
    # Pooled over tokens, not the mean of the two batch accuracies.
    all_labels = np.concatenate([labels.ravel(), other_labels.ravel()])
    all_logits = np.concatenate([logits.reshape(-1, V),
                                 other_logits.reshape(-1, V)])
    expected = reference.masked_accuracy(all_labels, all_logits)
    np.testing.assert_allclose(float(metric.result()), expected, rtol=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_accuracy_sentinel_and_options():
    labels = np.array([[1, 2, 0]])
    logits = np.eye(3)[None, [1, 0, 0]]  # predicts 1, 0, 0
    metric = MaskedAccuracy()
    metric.update_state(labels, logits)
    assert float(metric.result()) == 0.5
    metric = MaskedAccuracy(pad_id=None)
    metric.update_state(labels, logits)
    np.testing.assert_allclose(float(metric.result()), 2 / 3, rtol=1e-6)
    metric = MaskedAccuracy()
    metric.update_state(labels, logits, sample_weight=np.array([[3.0, 1.0,
                                                                 5.0]]))
    assert float(metric.result()) == 0.75


def test_accuracy_config_round_trips():
    metric = MaskedAccuracy(pad_id=5, name="acc")
    config = metric.get_config()
    assert set(config) == set(inspect.signature(
        MaskedAccuracy.__init__).parameters) - {"self"}
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(metric))
    assert isinstance(restored, MaskedAccuracy)
    assert restored.get_config() == config
    with pytest.raises(ValueError, match="`pad_id`"):
        MaskedAccuracy(pad_id=-2)
