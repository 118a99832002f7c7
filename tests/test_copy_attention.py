"""Copy attention: `PointerGenerator`, the config flag, the model with it.

See et al. (2017), "Get To The Point": P(w) = p_gen P_vocab(w) +
(1 - p_gen) sum_{i: x_i = w} a_i, returned as log P by the model and by
its cached step.
"""

import inspect
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_transformer as kt
from keras_transformer import decoding
from keras_transformer.layers import PointerGenerator, copy_distribution
from keras_transformer.layers.pointer_generator import MIN_PROBABILITY
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID
from keras_transformer.training import MaskedSparseCategoricalCrossentropy
from tests import reference
from tests.test_model import _expected_parameters

B, T, S, D, H, V = 2, 3, 6, 4, 2, 11


def _config(**overrides):
    values = dict(source_vocab_size=V, target_vocab_size=V, num_layers=2,
                  d_model=16, num_heads=2, d_ff=32, dropout_rate=0.0,
                  max_length=32, copy_attention=True)
    values.update(overrides)
    return kt.TransformerConfig(**values)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _layer_inputs(rng):
    """Inputs with a repeated source token and padding in the 2nd row."""
    logits = rng.normal(size=(B, T, V)).astype("float32")
    hidden = rng.normal(size=(B, T, D)).astype("float32")
    embedded = rng.normal(size=(B, T, D)).astype("float32")
    source = np.array([[5, 7, 5, 9, 5, 3], [4, 8, 8, 3, 0, 0]], "int32")
    scores = rng.normal(size=(B, H, T, S))
    scores = np.where(source[:, None, None] != 0, scores, -np.inf)
    attention = reference.softmax(scores).astype("float32")
    return [logits, hidden, embedded, attention, source]


def _run(model, source, target):
    return _numpy(model({"encoder_inputs": source,
                         "decoder_inputs": target}))


# -- the layer ------------------------------------------------------------


def test_matches_the_numpy_reference(rng):
    inputs = _layer_inputs(rng)
    layer = PointerGenerator(bias_initializer="ones")
    log_probs = _numpy(layer(*inputs))
    kernel, bias = (_numpy(w) for w in layer.gate.weights)
    expected = reference.pointer_generator(
        *[x.astype("float64") if x.dtype.kind == "f" else x
          for x in inputs], kernel, bias, MIN_PROBABILITY)
    assert log_probs.dtype == np.float32 and log_probs.shape == (B, T, V)
    np.testing.assert_allclose(log_probs, expected, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=1e-5)
    # The repeated token 5 holds the weights of its three positions.
    copied = _numpy(copy_distribution(inputs[3].mean(1), inputs[4], V))
    np.testing.assert_allclose(
        copied[0, :, 5], inputs[3].mean(1)[0][:, [0, 2, 4]].sum(-1),
        atol=1e-6)
    # Padding (id 0, weight 0) copies nothing.
    assert np.all(copied[1, :, 0] == 0.0)


def test_sentinel_values():
    # p_gen = sigmoid(0) = 1/2, uniform generation 1/8, attention
    # (0.5, 0.25, 0.25) over the tokens (5, 6, 5): P(5) = 1/16 + 3/8.
    layer = PointerGenerator(kernel_initializer="zeros")
    log_probs = layer(np.zeros((1, 1, 8), "float32"),
                      np.ones((1, 1, 4), "float32"),
                      np.ones((1, 1, 4), "float32"),
                      np.array([[[[0.5, 0.25, 0.25]]]], "float32"),
                      np.array([[5, 6, 5]], "int32"))
    expected = np.full(8, 0.0625)
    expected[5], expected[6] = 0.4375, 0.1875
    np.testing.assert_allclose(np.exp(_numpy(log_probs))[0, 0], expected,
                               rtol=1e-6)


def test_a_word_with_no_probability_is_clamped():
    # p_gen = sigmoid(-200) is 0 in float32: only the source's token 5 has
    # mass; every other word gets log(MIN_PROBABILITY), not -inf.
    layer = PointerGenerator(kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(
                                 -200.0))
    log_probs = _numpy(layer(np.zeros((1, 1, 8), "float32"),
                             np.zeros((1, 1, 4), "float32"),
                             np.zeros((1, 1, 4), "float32"),
                             np.ones((1, 1, 1, 2), "float32") / 2,
                             np.array([[5, 5]], "int32")))[0, 0]
    assert log_probs[5] == 0.0
    np.testing.assert_allclose(np.delete(log_probs, 5),
                               np.log(np.float32(MIN_PROBABILITY)))


def test_layer_anatomy(rng):
    # The generic layer test of test_layers.py, but the output is float32
    # under every policy (as the model's logits are).
    inputs = _layer_inputs(rng)
    layer = PointerGenerator(kernel_initializer="he_normal",
                             bias_initializer="ones")
    layer.build(*[x.shape for x in inputs])
    assert len(layer.trainable_weights) == 2
    assert tuple(layer.gate.kernel.shape) == (2 * D, 1)
    assert len(layer.non_trainable_weights) == 0

    symbolic = [keras.Input(x.shape[1:], dtype=x.dtype) for x in inputs]
    output = PointerGenerator()(*symbolic)
    assert tuple(output.shape) == (None, T, V) and output.dtype == "float32"

    config = layer.get_config()
    assert PointerGenerator.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert type(restored) is PointerGenerator
    assert restored.get_config() == config
    parameters = {
        name for name, p in inspect.signature(
            PointerGenerator.__init__).parameters.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD}
    assert set(config) - {"name", "trainable", "dtype"} == parameters

    # One fit step moves both gate weights.
    model = keras.Model(symbolic, layer(*symbolic))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [_numpy(w) for w in model.trainable_weights]
    history = model.fit(inputs, rng.normal(size=(B, T, V)), batch_size=B,
                        verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [_numpy(w) for w in model.trainable_weights]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_layer_mixed_precision(policy, rng):
    keras.config.set_dtype_policy(policy)
    output = PointerGenerator()(*_layer_inputs(rng))
    assert output.dtype == "float32" and tuple(output.shape) == (B, T, V)
    assert np.all(np.isfinite(_numpy(output)))


# -- the config -----------------------------------------------------------


def test_config():
    assert kt.TransformerConfig().copy_attention is False
    presets = {name: c.copy_attention for name, c in kt.PRESETS.items()}
    assert presets == {"tiny": False, "small": False,
                       "summarization": True, "base": False, "big": False}
    old = kt.TransformerConfig().to_dict()
    del old["copy_attention"]  # a run saved before copy attention
    assert kt.TransformerConfig.from_dict(old).copy_attention is False
    assert kt.TransformerConfig.from_json(
        _config().to_json()).copy_attention is True


@pytest.mark.parametrize("overrides", [
    dict(share_embeddings=False),
    dict(share_embeddings=False, target_vocab_size=V + 1),
    dict(target_vocab_size=V + 1),
])
def test_copy_needs_one_vocabulary(overrides):
    with pytest.raises(ValueError, match="`copy_attention=True`.*"
                       "Received: copy_attention=True"):
        _config(**overrides)


# -- the model ------------------------------------------------------------


VARIANTS = {
    "paper": {},
    "untied_pre_norm": dict(tie_output_projection=False, norm_first=True),
    "previous_token": dict(previous_source_token=True),
}


def test_without_copy_nothing_changes():
    plain = kt.build_transformer(_config(copy_attention=False))
    copy = kt.build_transformer(_config())
    assert plain.pointer_generator is None
    assert plain.count_params() == _expected_parameters(plain.config)
    # The gate: a (2D, 1) kernel and a bias.
    assert copy.count_params() == plain.count_params() + 2 * 16 + 1
    paths = [w.path for w in plain.weights]
    assert [w.path for w in copy.weights if "pointer" not in w.path] == paths
    assert not any("pointer" in layer.name for layer in plain.layers)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_step_equals_full_model(variant, rng):
    model = kt.build_transformer(_config(**VARIANTS[variant]))
    source = rng.integers(4, V, (2, 7)).astype("int32")
    source[0, 1] = source[0, 4]  # a repeated token
    source[1, 5:] = 0
    target = rng.integers(4, V, (2, 6)).astype("int32")
    full = _run(model, source, target)
    assert full.dtype == np.float32
    np.testing.assert_allclose(np.exp(full).sum(-1), 1.0, atol=1e-5)
    memory, memory_mask = model.encode(source)
    cache, context = model.initial_cache(memory, memory_mask, 8, source)
    assert sorted(context) == ["layer_0", "layer_1", "source_ids"]
    for index in range(6):
        log_probs, cache = model.decode_step(target[:, index], index, cache,
                                             context)
        assert keras.backend.standardize_dtype(log_probs.dtype) == "float32"
        np.testing.assert_allclose(_numpy(log_probs), full[:, index],
                                   atol=1e-4)
    with pytest.raises(ValueError, match="`source_ids`"):
        model.initial_cache(memory, memory_mask, 8)


def test_previous_token_projection_matches_numpy(rng):
    """x~_i = e_i + W e_{i-1}, zeros before the first position; the model
    feeds it (plus the positional encoding) to the encoder."""
    from keras_transformer.layers import PreviousTokenProjection

    embedded = rng.normal(size=(2, 5, 4)).astype("float32")
    layer = PreviousTokenProjection()
    layer.build(embedded.shape)
    kernel = rng.normal(size=(4, 4)).astype("float32")
    layer.projection.kernel.assign(kernel)
    previous = np.concatenate([np.zeros((2, 1, 4), "float32"),
                               embedded[:, :-1]], axis=1)
    np.testing.assert_allclose(_numpy(layer(embedded)),
                               embedded + previous @ kernel, atol=1e-5)
    model = kt.build_transformer(_config(previous_source_token=True))
    source = rng.integers(4, V, (2, 6)).astype("int32")
    table = _numpy(model.source_embedding.embeddings) * np.sqrt(16)
    weights = _numpy(model.previous_token.projection.kernel)
    e = table[source]
    e_previous = np.concatenate([np.zeros((2, 1, 16)), e[:, :-1]], axis=1)
    positions = _numpy(model.positional_encoding.table)[:6]
    np.testing.assert_allclose(_numpy(model.embed_source(source)),
                               e + e_previous @ weights + positions,
                               atol=1e-4)
    plain = kt.build_transformer(_config())
    assert plain.previous_token is None
    assert model.count_params() == plain.count_params() + 16 * 16
    assert [w.path for w in model.weights
            if "previous" not in w.path] == [w.path for w in plain.weights]


def _naive_greedy(model, source, max_length):
    """Greedy search by a Python loop over the full forward, no cache."""
    rows = []
    for row in source:
        ids = [START_ID]
        while len(ids) <= max_length and ids[-1] != END_ID:
            log_probs = _run(model, row[None], np.array([ids], "int32"))
            log_probs[0, -1, PAD_ID] = -np.inf  # as `_without_pad`
            ids.append(int(np.argmax(log_probs[0, -1])))
        rows.append(ids[1:] + [0] * (max_length + 1 - len(ids)))
    return np.array(rows)


def _without_pad(step_fn):
    """`step_fn` that never chooses [PAD]: a random model may, and the full
    forward reads a [PAD] in its prefix as padding (masked), the cached step
    as a token, so the two would differ for a reason unrelated to caching.
    """
    def step(ids, index, cache):
        logits, cache = step_fn(ids, index, cache)
        banned = keras.ops.one_hot(PAD_ID, logits.shape[-1]) * -1e4
        return logits + banned, cache

    return step


def _uncached_step(model, source, length):
    """A step function (and its cache) that runs the full forward.

    Its cache is the prefix of each hypothesis, which the beam search
    reorders with the beams; position `index` of the forward on the whole
    prefix depends only on the tokens up to `index` (causality).
    """
    def step_fn(ids, index, cache):
        prefix = keras.ops.slice_update(
            cache["prefix"], (0, int(index)), keras.ops.expand_dims(ids, 1))
        sources = keras.ops.repeat(source, prefix.shape[0] // len(source),
                                   axis=0)
        log_probs = model({"encoder_inputs": sources,
                           "decoder_inputs": prefix})
        return log_probs[:, int(index)], {"prefix": prefix}

    return step_fn, {"prefix": np.zeros((len(source), length), "int32")}


@pytest.mark.parametrize("beam_size", [1, 3])
def test_searches_equal_the_uncached_full_forward(beam_size, rng):
    model = kt.build_transformer(_config())
    source = rng.integers(4, V, (2, 6)).astype("int32")
    source[1, 4:] = 0
    length = 7
    memory, memory_mask = model.encode(source)
    cache, context = model.initial_cache(memory, memory_mask, length,
                                         source)
    context = decoding.tile_beams(context, beam_size)

    @_without_pad
    def step_fn(ids, index, cache):
        return model.decode_step(ids, index, cache, context)

    start = np.full((2,), START_ID, "int32")
    uncached, prefix = _uncached_step(model, source, length)
    uncached = _without_pad(uncached)
    if beam_size == 1:
        ids, scores = decoding.greedy_search(step_fn, start, cache, length)
        np.testing.assert_array_equal(
            _numpy(ids), _naive_greedy(model, source, length)[:, :length])
        expected_ids, expected_scores = decoding.greedy_search(
            uncached, start, prefix, length)
    else:
        ids, scores = decoding.beam_search(step_fn, start, cache, length,
                                           beam_size=beam_size)
        expected_ids, expected_scores = decoding.beam_search(
            uncached, start, prefix, length, beam_size=beam_size)
    np.testing.assert_array_equal(_numpy(ids), _numpy(expected_ids))
    np.testing.assert_allclose(_numpy(scores), _numpy(expected_scores),
                               atol=1e-4)


def test_translator_searches_with_copy(rng):
    import tensorflow as tf

    from keras_transformer.text.sentencepiece_model import (
        learn_tokenizer_models,
    )
    from keras_transformer.text.sentencepiece_tokenizer import (
        SentencePieceTokenizer,
    )

    # The smallest vocabulary SentencePiece learns: the reserved tokens,
    # 256 byte pieces and a few words.
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    texts = [" ".join(rng.choice(words, 4)) for _ in range(40)]
    source_proto, target_proto = learn_tokenizer_models(texts, texts, 280)
    source_tokenizer = SentencePieceTokenizer(source_proto)
    target_tokenizer = SentencePieceTokenizer(target_proto)
    vocabulary = source_tokenizer.vocab_size
    model = kt.build_transformer(_config(source_vocab_size=vocabulary,
                                         target_vocab_size=vocabulary))
    translator = kt.Translator(model, source_tokenizer, target_tokenizer,
                               kt.SearchSettings(beam_size=3,
                                                 extra_length=3))
    source = _numpy(translator.source_ids(
        tf.constant(["alpha beta alpha", "omega"])))
    greedy = _numpy(translator.translate_tokens_greedy(source)[
        "target_ids"])
    limit = int(np.sum(source != 0, 1).max()) + 3
    expected = _naive_greedy(model, source, limit)[:, :limit]
    np.testing.assert_array_equal(greedy, expected[:, :greedy.shape[1]])
    assert np.all(expected[:, greedy.shape[1]:] == 0)
    ids, _ = translator.search_tokens(source, 3)
    step_fn, prefix = _uncached_step(model, source, limit)
    start = np.full((2,), START_ID, "int32")
    expected, _ = decoding.beam_search(
        step_fn, start, prefix, limit, beam_size=3,
        length_penalty=translator.settings.length_penalty)
    np.testing.assert_array_equal(_numpy(ids), _numpy(expected))
    source_tokens, target_tokens, weights = translator.attention(
        "alpha beta alpha")
    assert weights.shape == (len(target_tokens), len(source_tokens))


_FRESH_PROCESS = r"""
import json, sys
import keras, numpy as np
import keras_transformer  # noqa: F401 (registers the serializable classes)
model = keras.models.load_model(sys.argv[1], safe_mode=True)
source, target = (np.array(x, "int32") for x in json.loads(sys.argv[2]))
log_probs = model({"encoder_inputs": source, "decoder_inputs": target})
memory, mask = model.encode(source)
cache, context = model.initial_cache(memory, mask, 4, source)
step, _ = model.decode_step(target[:, 0], 0, cache, context)
print(json.dumps({"copy": model.config.copy_attention,
                  "log_probs": keras.ops.convert_to_numpy(
                      log_probs).tolist(),
                  "step": keras.ops.convert_to_numpy(step).tolist()}))
"""


@pytest.mark.parametrize("previous", [False, True])
def test_keras_file_loads_in_a_fresh_process(previous, tmp_path, rng):
    model = kt.build_transformer(_config(previous_source_token=previous))
    source = rng.integers(4, V, (2, 5)).astype("int32")
    source[1, 3:] = 0
    target = rng.integers(4, V, (2, 4)).astype("int32")
    expected = _run(model, source, target)
    path = str(tmp_path / "copy.keras")
    model.save(path)
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, path,
         json.dumps([source.tolist(), target.tolist()])],
        capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["copy"] is True
    np.testing.assert_allclose(result["log_probs"], expected, atol=1e-5)
    np.testing.assert_allclose(result["step"], expected[:, 0], atol=1e-4)


def test_mixed_bfloat16_output_is_float32_and_close(rng):
    config = _config()
    model = kt.build_transformer(config)
    source = rng.integers(4, V, (2, 6)).astype("int32")
    source[1, 4:] = 0
    target = rng.integers(4, V, (2, 5)).astype("int32")
    expected = _run(model, source, target)
    keras.config.set_dtype_policy("mixed_bfloat16")
    mixed = kt.build_transformer(config)
    mixed.set_weights(model.get_weights())
    log_probs = _run(mixed, source, target)
    assert log_probs.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa (relative error ~4e-3 per value):
    # through two layers the probabilities move by up to ~4e-3 (measured
    # on three seeds), and the attention weights, rounded to bfloat16, no
    # longer sum to exactly 1 (off by up to ~1.5e-3).
    np.testing.assert_allclose(np.exp(log_probs), np.exp(expected),
                               atol=1e-2)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, atol=5e-3)


def test_the_loss_on_log_probabilities(rng):
    # The label-smoothed loss on log P is the cross-entropy of the smoothed
    # targets with P itself: log_softmax(log P) = log P.
    model = kt.build_transformer(_config())
    source = rng.integers(4, V, (3, 6)).astype("int32")
    target = rng.integers(4, V, (3, 5)).astype("int32")
    labels = rng.integers(4, V, (3, 5)).astype("int32")
    labels[1, 3:] = 0
    log_probs = _run(model, source, target)
    eps = 0.1
    loss = MaskedSparseCategoricalCrossentropy(label_smoothing=eps)
    value = float(loss(labels, log_probs))
    probabilities = np.exp(log_probs.astype("float64"))
    picked = np.take_along_axis(np.log(probabilities), labels[..., None],
                                -1)[..., 0]
    per_token = (-(1 - eps) * picked
                 - eps * np.log(probabilities).mean(-1))
    real = labels != 0
    np.testing.assert_allclose(value, per_token[real].sum() / real.sum(),
                               rtol=1e-5)


def test_training_step_reaches_the_gate(rng):
    model = kt.build_transformer(_config())
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=MaskedSparseCategoricalCrossentropy())
    gate = [_numpy(w) for w in model.pointer_generator.weights]
    x = {"encoder_inputs": rng.integers(4, V, (4, 6)).astype("int32"),
         "decoder_inputs": rng.integers(4, V, (4, 5)).astype("int32")}
    history = model.fit(x, x["encoder_inputs"][:, :5], verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(a, _numpy(b))
               for a, b in zip(gate, model.pointer_generator.weights))
