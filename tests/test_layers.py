"""Generic tests run on every public layer (STYLE.md section 8)."""

import inspect

import keras
import numpy as np
import pytest

from keras_transformer import layers
from keras_transformer.layers.stack import Block, Stack
from keras_transformer.masks import causal_mask

B, S, T, D = 2, 5, 4, 8

# Each case: class, non-default init arguments, inputs (positional), call
# kwargs, expected output shape, expected number of trainable weights.
CASES = {
    "attention": (
        layers.MultiHeadAttention,
        dict(num_heads=2, key_dim=3, dropout_rate=0.1, use_bias=False,
             kernel_initializer="he_normal"),
        lambda r: [r.normal(size=(B, T, D)), r.normal(size=(B, S, D))],
        {}, (B, T, D), 4),
    "positional": (
        layers.SinusoidalPositionalEncoding,
        dict(max_length=11, layout="split"),
        lambda r: [r.normal(size=(B, T, D))], {}, (B, T, D), 0),
    "embedding": (
        layers.TokenEmbedding,
        dict(vocabulary_size=13, d_model=D, scale=False, mask_zero=True),
        lambda r: [r.integers(0, 13, size=(B, T)).astype("int32")],
        {}, (B, T, D), 1),
    "feed_forward": (
        layers.PositionwiseFeedForward,
        dict(d_ff=6, activation="gelu", dropout_rate=0.2),
        lambda r: [r.normal(size=(B, T, D))], {}, (B, T, D), 4),
    "output_bias": (
        layers.OutputBias,
        dict(vocabulary_size=D),
        lambda r: [r.normal(size=(B, T, D))], {}, (B, T, D), 0),
    "residual": (
        layers.ResidualNorm,
        dict(dropout_rate=0.3, epsilon=1e-5),
        lambda r: [r.normal(size=(B, T, D)), r.normal(size=(B, T, D))],
        {}, (B, T, D), 2),
    "encoder_layer": (
        layers.EncoderLayer,
        dict(num_heads=2, d_ff=6, dropout_rate=0.2,
             attention_dropout_rate=0.1, activation="gelu", norm_first=True,
             layer_norm_epsilon=1e-5),
        lambda r: [r.normal(size=(B, S, D))], {}, (B, S, D), 16),
    "encoder": (
        layers.Encoder,
        dict(num_layers=2, num_heads=4, d_ff=6, dropout_rate=0.2,
             norm_first=True),
        lambda r: [r.normal(size=(B, S, D))], {}, (B, S, D), 34),
    "decoder_layer": (
        layers.DecoderLayer,
        dict(num_heads=2, d_ff=6, dropout_rate=0.0, activation="gelu"),
        lambda r: [r.normal(size=(B, T, D)), r.normal(size=(B, S, D))],
        {}, (B, T, D), 26),
    "decoder": (
        layers.Decoder,
        dict(num_layers=3, num_heads=2, d_ff=6, layer_norm_epsilon=1e-4),
        lambda r: [r.normal(size=(B, T, D)), r.normal(size=(B, S, D))],
        {}, (B, T, D), 78),
}

BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}
# Non-trainable weights of a case (none unless listed): training leaves
# them as they are.
NON_TRAINABLE_WEIGHTS = {"output_bias": 1}


def _cast(inputs):
    return [x if x.dtype.kind == "i" else x.astype("float32") for x in inputs]


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer(case, rng):
    cls, init_kwargs, make_inputs, call_kwargs, out_shape, num_weights = (
        CASES[case])
    inputs = _cast(make_inputs(rng))

    # Build: every weight exists before the first call.
    layer = cls(**init_kwargs)
    layer.build(*[x.shape for x in inputs])
    assert len(layer.trainable_weights) == num_weights
    assert len(layer.non_trainable_weights) == NON_TRAINABLE_WEIGHTS.get(
        case, 0)

    # Symbolic call.
    symbolic = [keras.Input(x.shape[1:], dtype=x.dtype) for x in inputs]
    output = cls(**init_kwargs)(*symbolic, **call_kwargs)
    assert tuple(output.shape) == (None, *out_shape[1:])
    assert output.dtype == "float32"

    # Eager call.
    eager = layer(*inputs, **call_kwargs)
    assert tuple(eager.shape) == out_shape
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(eager)))

    # Config and serialization round trips.
    config = layer.get_config()
    assert cls.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls and restored.get_config() == config

    # One fit step changes the weights and gives a finite loss.
    model = keras.Model(symbolic, output)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    fixed = [keras.ops.convert_to_numpy(w)
             for w in model.non_trainable_weights]
    history = model.fit(inputs, rng.normal(size=out_shape), batch_size=B,
                        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert len(after) == num_weights
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    for a, b in zip(fixed, model.non_trainable_weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_mixed_float16(case, rng):
    cls, init_kwargs, make_inputs, call_kwargs, out_shape, _ = CASES[case]
    keras.config.set_dtype_policy("mixed_float16")
    layer = cls(**init_kwargs)
    output = layer(*_cast(make_inputs(rng)), **call_kwargs)
    assert output.dtype == "float16"
    assert tuple(output.shape) == out_shape
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))
    assert all(w.dtype == "float32" for w in layer.weights)


@pytest.mark.parametrize("case", sorted(CASES))
def test_signature_matches_config(case):
    cls, init_kwargs = CASES[case][:2]
    parameters = {
        name for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD}
    config = cls(**init_kwargs).get_config()
    assert set(config) - BASE_CONFIG_KEYS == parameters
    for name, value in init_kwargs.items():
        if isinstance(value, str) and name.endswith("initializer"):
            continue
        assert config[name] == value, name


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_from_its_public_steps(norm_first, rng):
    # The steps a decoder with its own cache uses (the BeamSearch-op
    # export): self-attention, `cross_and_feed_forward`, `finish`.
    decoder = layers.Decoder(num_layers=2, num_heads=2, d_ff=6,
                             dropout_rate=0.0, norm_first=norm_first)
    x = rng.normal(size=(B, T, D)).astype("float32")
    memory = rng.normal(size=(B, S, D)).astype("float32")
    expected = decoder(x, memory)
    assert isinstance(decoder, Stack)
    hidden = x
    for layer in decoder.blocks:
        assert isinstance(layer, Block)
        normed = layer.self_attention_residual.normalize_input(hidden)
        out = layer.self_attention(normed, normed,
                                   attention_mask=causal_mask(T))
        hidden = layer.self_attention_residual(hidden, out)
        key, value = layer.cross_attention.compute_key_value(memory)
        hidden, weights = layer.cross_and_feed_forward(hidden, key, value,
                                                       None)
        assert tuple(weights.shape) == (B, 2, T, S)
    assert (decoder.final_norm is not None) == norm_first
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(decoder.finish(hidden)),
        keras.ops.convert_to_numpy(expected), atol=1e-5)


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def test_swish_feed_forward_equals_numpy(rng):
    # FFN(x) = swish(x W1 + b1) W2 + b2, swish(h) = h * sigmoid(h) (SiLU,
    # Hugging Face Marian's "swish").
    ffn = layers.PositionwiseFeedForward(d_ff=6, activation="swish")
    x = rng.normal(size=(B, T, D)).astype("float32")
    got = _numpy(ffn(x))
    inner = x @ _numpy(ffn.inner_dense.kernel) + _numpy(ffn.inner_dense.bias)
    inner = inner / (1.0 + np.exp(-inner))
    expected = (inner @ _numpy(ffn.output_dense.kernel)
                + _numpy(ffn.output_dense.bias))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    relu = layers.PositionwiseFeedForward(d_ff=6)
    relu.build(x.shape)
    relu.set_weights(ffn.get_weights())
    assert np.abs(_numpy(relu(x)) - got).max() > 1e-3


def test_output_bias_adds_its_weight(rng):
    layer = layers.OutputBias(vocabulary_size=D)
    x = rng.normal(size=(B, T, D)).astype("float32")
    # Zeros until assigned: a new layer is the identity.
    np.testing.assert_array_equal(_numpy(layer(x)), x)
    bias = rng.normal(size=D).astype("float32")
    layer.bias.assign(bias)
    np.testing.assert_array_equal(_numpy(layer(x)), x + bias)
    assert layer.bias.path.endswith("bias")
    assert not layer.bias.trainable and not layer.trainable_weights


def test_output_bias_checks_its_arguments():
    with pytest.raises(ValueError, match="`vocabulary_size`"):
        layers.OutputBias(vocabulary_size=0)
    with pytest.raises(ValueError, match="`vocabulary_size`"):
        layers.OutputBias(vocabulary_size=5)(np.zeros((1, 2, 4), "float32"))


def test_swish_is_checked_by_name():
    layers.EncoderLayer(num_heads=2, d_ff=6, activation="swish")
    with pytest.raises(ValueError, match="`activation`.*silu"):
        layers.PositionwiseFeedForward(d_ff=6, activation="silu")
