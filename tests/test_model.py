"""The functional model: shapes, causality, padding, saving, precision."""

import dataclasses

import keras
import numpy as np
import pytest

import keras_transformer as kt

V = 40


def _config(**overrides):
    return kt.TransformerConfig.from_preset(
        "tiny", source_vocab_size=V, target_vocab_size=V, dropout_rate=0.0,
        max_length=32, **overrides)


def _ids(rng, shape):
    return rng.integers(4, V, size=shape).astype("int32")


def _run(model, source, target):
    return keras.ops.convert_to_numpy(
        model({"encoder_inputs": source, "decoder_inputs": target}))


VARIANTS = {
    "paper": dict(share_embeddings=True, tie_output_projection=True),
    "separate": dict(share_embeddings=False, tie_output_projection=False),
    "pre_norm_gelu": dict(norm_first=True, activation="gelu"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_output_shape_and_dtype(variant, rng):
    model = kt.build_transformer(_config(**VARIANTS[variant]))
    logits = _run(model, _ids(rng, (3, 7)), _ids(rng, (3, 5)))
    assert logits.shape == (3, 5, V) and logits.dtype == np.float32
    assert sorted(model.input) == ["decoder_inputs", "encoder_inputs"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_causality(variant, rng):
    model = kt.build_transformer(_config(**VARIANTS[variant]))
    source, target = _ids(rng, (2, 6)), _ids(rng, (2, 7))
    before = _run(model, source, target)
    for t in range(1, 7):
        changed = target.copy()
        changed[:, t:] = _ids(rng, (2, 7 - t))
        after = _run(model, source, changed)
        np.testing.assert_allclose(after[:, :t], before[:, :t], atol=1e-5)
        assert np.abs(after[:, t] - before[:, t]).max() > 1e-4


def test_padding_does_not_change_real_positions(rng):
    model = kt.build_transformer(_config())
    source, target = _ids(rng, (2, 6)), _ids(rng, (2, 5))
    before = _run(model, source, target)
    padded_source = np.pad(source, [(0, 0), (0, 4)])
    padded_target = np.pad(target, [(0, 0), (0, 3)])
    after = _run(model, padded_source, padded_target)
    assert np.abs(after[:, :5] - before).max() <= 1e-5
    # Padding inside a batch: a short row equals the same row alone.
    mixed = source.copy()
    mixed[1, 3:] = 0
    alone = _run(model, source[1:, :3], target[1:])
    np.testing.assert_allclose(_run(model, mixed, target)[1:], alone,
                               atol=1e-5)


def test_cached_step_equals_full_model(rng):
    model = kt.build_transformer(_config())
    source, target = _ids(rng, (2, 6)), _ids(rng, (2, 5))
    source[0, 4:] = 0
    full = _run(model, source, target)
    memory, memory_mask = kt.encode(model, source)
    step_fn, cache = kt.make_step_fn(model, memory, memory_mask, 9)
    for index in range(5):
        logits, cache = step_fn(target[:, index], index, cache)
        np.testing.assert_allclose(logits, full[:, index], atol=1e-5)


def test_keras_round_trip_without_custom_objects(tmp_path, rng):
    model = kt.build_transformer(_config(share_embeddings=False))
    source, target = _ids(rng, (2, 6)), _ids(rng, (2, 5))
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(_run(restored, source, target),
                                  _run(model, source, target))
    # The reloaded model still decodes step by step.
    memory, mask = kt.encode(restored, source)
    step_fn, cache = kt.make_step_fn(restored, memory, mask, 4)
    logits, _ = step_fn(target[:, 0], 0, cache)
    np.testing.assert_allclose(logits, _run(model, source, target)[:, 0],
                               atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_forward(policy, rng):
    keras.config.set_dtype_policy(policy)
    model = kt.build_transformer(_config())
    source = _ids(rng, (2, 6))
    source[1, 2:] = 0
    logits = _run(model, source, _ids(rng, (2, 5)))
    assert logits.dtype == np.float32 and np.all(np.isfinite(logits))
    assert all(w.dtype == "float32" for w in model.weights)


def _expected_parameters(c: kt.TransformerConfig) -> int:
    d, f = c.d_model, c.d_ff
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    norm = 2 * d
    encoder = c.num_layers * (attention + ffn + 2 * norm)
    decoder = c.num_layers * (2 * attention + ffn + 3 * norm)
    embeddings = c.target_vocab_size * d
    if not c.share_embeddings:
        embeddings += c.source_vocab_size * d
    if not c.tie_output_projection:
        embeddings += c.target_vocab_size * d + c.target_vocab_size
    final = 2 * norm if c.norm_first else 0
    return encoder + decoder + embeddings + final


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_parameter_count(preset):
    config = kt.TransformerConfig.from_preset(preset)
    model = kt.build_transformer(config)
    assert model.count_params() == _expected_parameters(config)


def test_base_is_paper_scale():
    # Table 3 gives 65M for base; with a shared 37,000-token vocabulary and
    # tied projection we count 63.1M (biases and LayerNorms included).
    config = kt.TransformerConfig.from_preset("base")
    assert 60e6 < _expected_parameters(config) < 66e6


def test_config_type_error():
    with pytest.raises(TypeError, match="`config`"):
        kt.build_transformer(dataclasses.asdict(_config()))
