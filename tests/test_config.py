"""TransformerConfig: presets, validation, JSON round trip."""

import dataclasses

import pytest

from keras_transformer import TransformerConfig


def test_defaults_are_the_paper_base_model():
    config = TransformerConfig()
    assert (config.num_layers, config.d_model, config.d_ff,
            config.num_heads, config.dropout_rate, config.label_smoothing,
            config.warmup_steps) == (6, 512, 2048, 8, 0.1, 0.1, 4000)
    assert TransformerConfig.from_preset("base") == config


def test_big_preset_is_table_3():
    big = TransformerConfig.from_preset("big")
    assert (big.num_layers, big.d_model, big.d_ff, big.num_heads,
            big.dropout_rate, big.label_smoothing) == (
                6, 1024, 4096, 16, 0.3, 0.1)


def test_preset_overrides_and_frozen():
    config = TransformerConfig.from_preset("tiny", num_layers=3)
    assert config.num_layers == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.num_layers = 4


@pytest.mark.parametrize("name", ["tiny", "small", "base", "big"])
def test_json_round_trip(name):
    config = TransformerConfig.from_preset(name, norm_first=True,
                                           activation="gelu")
    assert TransformerConfig.from_json(config.to_json()) == config
    assert TransformerConfig.from_dict(config.to_dict()) == config


def test_unknown_preset_lists_the_known_ones():
    known = "'base', 'big', 'small', 'summarization', 'tiny'"
    with pytest.raises(ValueError, match=f"huge.*{known}|{known}.*huge"):
        TransformerConfig.from_preset("huge")


@pytest.mark.parametrize("overrides, pattern", [
    (dict(d_model=100, num_heads=8), "`d_model`.*d_model=100, num_heads=8"),
    (dict(dropout_rate=1.0), "`dropout_rate`.*dropout_rate=1.0"),
    (dict(dropout_rate=-0.1), "`dropout_rate`"),
    (dict(attention_dropout_rate=2.0), "`attention_dropout_rate`"),
    (dict(label_smoothing=1.0), "`label_smoothing`"),
    (dict(num_layers=0), "`num_layers`.*num_layers=0"),
    (dict(num_layers=2.5), "`num_layers`"),
    (dict(activation="tanh"), "`activation`.*tanh"),
    (dict(max_length=1), "`max_length`"),
    (dict(layer_norm_epsilon=0.0), "`layer_norm_epsilon`"),
    (dict(source_vocab_size=100, target_vocab_size=200),
     "`share_embeddings=True`.*source_vocab_size=100"),
    (dict(target_vocab_size=3, source_vocab_size=3),
     "`source_vocab_size`"),
    (dict(norm_first="no"), "`norm_first`"),
    (dict(activation="silu"), "`activation`.*'swish'.*silu"),
    (dict(positional_layout="concatenated"),
     "`positional_layout`.*positional_layout='concatenated'"),
    (dict(scale_embeddings="yes"), "`scale_embeddings`.*'yes'"),
    (dict(output_bias=1), "`output_bias`.*output_bias=1"),
    (dict(suppress_reserved=None), "`suppress_reserved`"),
])
def test_validation(overrides, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        TransformerConfig(**overrides)


def test_unknown_field_in_dict():
    with pytest.raises(ValueError, match="num_layer"):
        TransformerConfig.from_dict({"num_layer": 3})


def test_marian_options_default_to_the_paper():
    config = TransformerConfig()
    assert (config.positional_layout, config.scale_embeddings,
            config.output_bias, config.suppress_reserved) == (
                "interleaved", True, False, False)
    marian = TransformerConfig(
        activation="swish", positional_layout="split",
        scale_embeddings=False, output_bias=True, suppress_reserved=True,
        layer_norm_epsilon=1e-5)
    assert TransformerConfig.from_json(marian.to_json()) == marian


def test_dict_without_the_new_keys_loads_with_defaults():
    # A config.json written before the options existed.
    old = TransformerConfig.from_preset("tiny").to_dict()
    for name in ("positional_layout", "scale_embeddings", "output_bias",
                 "suppress_reserved"):
        del old[name]
    assert TransformerConfig.from_dict(old) == TransformerConfig.from_preset(
        "tiny")


def test_suppress_reserved_goes_with_copy_attention():
    # decode_step suppresses the pointer-generator's log P the same way.
    config = TransformerConfig.from_preset("summarization",
                                           suppress_reserved=True)
    assert config.copy_attention and config.suppress_reserved
