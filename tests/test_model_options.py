"""The options for imported Marian models: swish, the split positional
table, unscaled embeddings, the output bias and suppressed reserved ids.

References: NumPy (the bias added to the logits, unscaled embedding rows,
the split table of the model), and the same weights with an option off
(`decode_step` logits with `suppress_reserved` equal the plain ones but
at ids 0 and 2). A random tiny model with every option on shows that the
Keras searches never produce [PAD] or [START] (where the same weights
without the option do) and that it reloads from a .keras file.
"""

import keras
import numpy as np
import pytest

from keras_transformer.config import TransformerConfig
from keras_transformer.contract import SearchSettings
from keras_transformer.layers.positional import sinusoidal_table
from keras_transformer.model import build_transformer
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID
from keras_transformer.translator import Translator

V = 60
# Every option for imported Marian models on, in a random tiny model.
ALL_OPTIONS = dict(activation="swish", positional_layout="split",
                   scale_embeddings=False, output_bias=True,
                   suppress_reserved=True, layer_norm_epsilon=1e-5)


def _config(**overrides):
    values = dict(source_vocab_size=V, target_vocab_size=V, num_layers=2,
                  d_model=32, num_heads=4, d_ff=64, dropout_rate=0.0,
                  max_length=24)
    values.update(overrides)
    return TransformerConfig(**values)


def _ids(rng, shape):
    ids = rng.integers(4, V, size=shape).astype("int32")
    ids[:, -1] = END_ID
    return ids


def _run(model, source, target):
    return keras.ops.convert_to_numpy(
        model({"encoder_inputs": source, "decoder_inputs": target}))


def _twin(model, **overrides):
    """A model of `model`'s config with `overrides`, and its weights."""
    import dataclasses

    twin = build_transformer(dataclasses.replace(model.config, **overrides))
    values = {w.path: w for w in model.weights}
    for weight in twin.weights:
        weight.assign(values[weight.path])
    return twin


def _with_bias(model, rng, reserved=30.0):
    """Random output bias; [PAD] and [START] far above every other logit,
    so that a search that does not suppress them picks them."""
    bias = rng.normal(scale=0.5, size=V).astype("float32")
    bias[[PAD_ID, START_ID]] = reserved
    model.output_bias.bias.assign(bias)
    return bias


@pytest.mark.parametrize("tied", [True, False])
def test_output_bias_is_added_to_the_logits(tied, rng):
    model = build_transformer(_config(output_bias=True,
                                      tie_output_projection=tied,
                                      share_embeddings=False))
    assert model.output_bias.bias.trainable is False
    assert model.output_bias.bias in model.non_trainable_weights
    source, target = _ids(rng, (2, 6)), _ids(rng, (2, 5))
    plain = _twin(model, output_bias=False)
    assert plain.output_bias is None
    # Zeros until set: the model equals the one without the option.
    np.testing.assert_array_equal(_run(model, source, target),
                                  _run(plain, source, target))
    bias = _with_bias(model, rng)
    np.testing.assert_allclose(_run(model, source, target),
                               _run(plain, source, target) + bias,
                               rtol=1e-6, atol=1e-5)


def test_unscaled_embeddings_are_the_rows(rng):
    model = build_transformer(_config(scale_embeddings=False,
                                      share_embeddings=False))
    ids = _ids(rng, (2, 5))
    for embedding in (model.source_embedding, model.target_embedding):
        assert embedding.scale is False
        table = keras.ops.convert_to_numpy(embedding.embeddings)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(embedding(ids)), table[ids])
    assert build_transformer(_config()).target_embedding.scale is True


def test_model_uses_the_configured_layout():
    model = build_transformer(_config(positional_layout="split"))
    assert model.positional_encoding.layout == "split"
    np.testing.assert_array_equal(model.positional_encoding.table,
                                  sinusoidal_table(24, 32, "split"))


@pytest.mark.parametrize("copy_attention", [False, True])
def test_decode_step_suppresses_only_pad_and_start(copy_attention, rng):
    model = build_transformer(_config(suppress_reserved=True,
                                      copy_attention=copy_attention))
    plain = _twin(model, suppress_reserved=False)
    source, target = _ids(rng, (3, 6)), _ids(rng, (3, 4))
    source[0, 3:] = PAD_ID
    # Teacher forcing (training, the loss) is unchanged.
    np.testing.assert_array_equal(_run(model, source, target),
                                  _run(plain, source, target))
    caches = []
    for each in (model, plain):
        memory, mask = each.encode(source)
        caches.append(each.initial_cache(memory, mask, 6, source))
    for index in range(4):
        got, expected = [], []
        for each, (cache, context), out in ((model, caches[0], got),
                                            (plain, caches[1], expected)):
            logits, cache = each.decode_step(target[:, index], index, cache,
                                             context)
            out.append(keras.ops.convert_to_numpy(logits))
        got, expected = got[0], expected[0]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got[:, [PAD_ID, START_ID]], -1e9)
        others = np.setdiff1d(np.arange(V), [PAD_ID, START_ID])
        np.testing.assert_array_equal(got[:, others], expected[:, others])
        assert np.all(expected[:, [PAD_ID, START_ID]] > -1e8)


def _searches(model, source, modes=("greedy", "beam")):
    """The target ids of the Translator's searches over `source`."""
    translator = Translator(model, None, None,
                            settings=SearchSettings(extra_length=6))
    functions = {"greedy": translator.translate_tokens_greedy,
                 "beam": translator.translate_tokens}
    return [keras.ops.convert_to_numpy(functions[mode](source)["target_ids"])
            for mode in modes]


def _generated(ids):
    """The tokens before each row's first [END]."""
    tokens = []
    for row in ids:
        ends = np.flatnonzero(row == END_ID)
        tokens += row[:ends[0] if ends.size else len(row)].tolist()
    return tokens


def test_all_options_searches_never_produce_reserved_ids(rng, tmp_path):
    keras.utils.set_random_seed(0)
    model = build_transformer(_config(**ALL_OPTIONS))
    _with_bias(model, rng)
    source = _ids(rng, (4, 7))
    source[1, 4:] = PAD_ID
    source[1, 3] = END_ID
    searches = _searches(model, source)
    for ids in searches:
        tokens = _generated(ids)
        assert tokens and not {PAD_ID, START_ID} & set(tokens)
    # The check can fail: the same weights without the option pick them.
    plain = _twin(model, suppress_reserved=False)
    [ids] = _searches(plain, source, modes=("greedy",))
    assert {PAD_ID, START_ID} & set(_generated(ids))

    path = tmp_path / "options.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    assert restored.config == model.config
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.output_bias.bias),
        keras.ops.convert_to_numpy(model.output_bias.bias))
    target = _ids(rng, (4, 5))
    np.testing.assert_array_equal(_run(restored, source, target),
                                  _run(model, source, target))
    [ids] = _searches(restored, source, modes=("greedy",))
    np.testing.assert_array_equal(ids, searches[0])


def test_output_bias_is_not_trained(rng):
    model = build_transformer(_config(output_bias=True))
    bias = _with_bias(model, rng, reserved=0.0)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    source, target = _ids(rng, (4, 6)), _ids(rng, (4, 5))
    model.fit({"encoder_inputs": source, "decoder_inputs": target},
              _ids(rng, (4, 5)), epochs=1, verbose=0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.output_bias.bias), bias)
