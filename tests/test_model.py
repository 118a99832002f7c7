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
    # The options of imported Marian models (tests/test_model_options.py).
    "marian": dict(activation="swish", positional_layout="split",
                   scale_embeddings=False, output_bias=True,
                   suppress_reserved=True, layer_norm_epsilon=1e-5),
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
    memory, memory_mask = model.encode(source)
    cache, context = model.initial_cache(memory, memory_mask, 9)
    for index in range(5):
        logits, cache = model.decode_step(target[:, index], index, cache,
                                          context)
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
    assert isinstance(restored, kt.Transformer)
    assert restored.config == model.config
    memory, mask = restored.encode(source)
    cache, context = restored.initial_cache(memory, mask, 4)
    logits, _ = restored.decode_step(target[:, 0], 0, cache, context)
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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_named_parts(variant):
    config = _config(**VARIANTS[variant])
    model = kt.build_transformer(config)
    assert isinstance(model, kt.Transformer) and model.config == config
    assert isinstance(model.encoder, kt.Encoder)
    assert isinstance(model.decoder, kt.Decoder)
    assert isinstance(model.positional_encoding,
                      kt.SinusoidalPositionalEncoding)
    assert isinstance(model.source_embedding, kt.TokenEmbedding)
    shared = model.source_embedding is model.target_embedding
    assert shared == config.share_embeddings
    tied = model.output_projection is None
    assert tied == config.tie_output_projection
    assert (model.output_bias is None) == (not config.output_bias)
    assert model.positional_encoding.layout == config.positional_layout
    assert model.target_embedding.scale == config.scale_embeddings
    # The parts are the model's own layers, holding all of its weights.
    own = {id(w) for layer in (model.source_embedding,
                               model.target_embedding, model.encoder,
                               model.decoder, model.output_projection,
                               model.output_bias)
           if layer is not None for w in layer.weights}
    assert own == {id(w) for w in model.weights}


def test_fit_one_step(rng):
    model = kt.build_transformer(_config())
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    x = {"encoder_inputs": _ids(rng, (4, 6)),
         "decoder_inputs": _ids(rng, (4, 5))}
    history = model.fit(x, _ids(rng, (4, 5)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


_FRESH_PROCESS_LOAD = r"""
import sys, json
import numpy as np, keras
import keras_transformer  # noqa: F401 (registers the serializable classes)
model = keras.models.load_model(sys.argv[1], safe_mode=True)
ids = np.array(json.loads(sys.argv[2]), "int32")
logits = model({"encoder_inputs": ids, "decoder_inputs": ids})
print(json.dumps({"class": type(model).__name__,
                  "policy": model.dtype_policy.name,
                  "d_model": model.config.d_model,
                  "logits": keras.ops.convert_to_numpy(
                      keras.ops.cast(logits, "float32")).tolist()}))
"""


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_keras_file_loads_in_a_fresh_process(policy, tmp_path, rng):
    import json
    import subprocess
    import sys

    keras.config.set_dtype_policy(policy)
    model = kt.build_transformer(_config())
    keras.config.set_dtype_policy("float32")
    ids = _ids(rng, (2, 5))
    expected = _run(model, ids, ids)
    path = str(tmp_path / "m.keras")
    model.save(path)
    # The child finds the class by its registered name, with
    # safe_mode=True and no custom_objects.
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS_LOAD, path,
         json.dumps(ids.tolist())], capture_output=True, text=True,
        check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["class"] == "Transformer"
    assert result["policy"] == policy and result["d_model"] == 64
    np.testing.assert_allclose(result["logits"], expected, atol=1e-5)


@pytest.mark.parametrize("imports", [
    "import keras_transformer, keras",
    "import keras_transformer; import tensorflow; import keras",
    "import keras, keras_transformer",
])
def test_keras_file_loads_in_any_import_order(imports, tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "m.keras")
    kt.build_transformer(_config()).save(path)
    script = (f"{imports}\nimport sys\n"
              f"m = keras.models.load_model({path!r}, safe_mode=True)\n"
              "print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["Transformer"]
