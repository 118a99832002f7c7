"""`build_transformer`: the paper's encoder-decoder as a functional model.

Also the pieces a decoder loop needs from a built (or loaded) model:
`encode` runs the encoder once; `make_step_fn` returns the cached
`(ids, index, cache) -> (logits, cache)` step of `keras_transformer.decoding`.
They find the layers by the names `build_transformer` gives them, so they
work on a model reloaded from a `.keras` file too.
"""

import keras
from keras import ops

from keras_transformer import masks
from keras_transformer.config import TransformerConfig
from keras_transformer.layers import (
    Decoder,
    Encoder,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)


def build_transformer(config: TransformerConfig,
                      name: str = "transformer") -> keras.Model:
    """Builds the encoder-decoder Transformer (paper Figure 1).

    Inputs are int32 token ids with pad id 0: "encoder_inputs" (B, S) and
    "decoder_inputs" (B, T), the targets shifted right behind [START]. The
    output is float32 logits (B, T, V_target), whatever the dtype policy.

    Args:
        config: the hyperparameters.
        name: the model's name.

    Returns:
        An uncompiled `keras.Model`.

    Example:
    >>> config = TransformerConfig.from_preset("tiny")
    >>> model = build_transformer(config)
    >>> ids = keras.ops.ones((2, 7), dtype="int32")
    >>> tuple(model({"encoder_inputs": ids, "decoder_inputs": ids}).shape)
    (2, 7, 8000)
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(
            "`config` must be a TransformerConfig. "
            f"Received: config={config!r}")
    encoder_inputs = keras.Input((None,), dtype="int32",
                                 name="encoder_inputs")
    decoder_inputs = keras.Input((None,), dtype="int32",
                                 name="decoder_inputs")

    if config.share_embeddings:
        source_embedding = target_embedding = TokenEmbedding(
            config.target_vocab_size, config.d_model,
            name="shared_embedding")
    else:
        source_embedding = TokenEmbedding(
            config.source_vocab_size, config.d_model,
            name="source_embedding")
        target_embedding = TokenEmbedding(
            config.target_vocab_size, config.d_model,
            name="target_embedding")
    positional_encoding = SinusoidalPositionalEncoding(
        config.max_length, name="positional_encoding")
    stack_arguments = dict(
        num_layers=config.num_layers, num_heads=config.num_heads,
        d_ff=config.d_ff, dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        activation=config.activation, norm_first=config.norm_first,
        layer_norm_epsilon=config.layer_norm_epsilon)

    source_mask = masks.padding_mask(encoder_inputs)  # (B, S)
    target_mask = masks.padding_mask(decoder_inputs)  # (B, T)

    # Section 3.4-3.5 and 5.4: scaled embeddings plus positional encodings,
    # then dropout on the sums.
    hidden = positional_encoding(source_embedding(encoder_inputs))
    hidden = keras.layers.Dropout(config.dropout_rate,
                                  name="encoder_dropout")(hidden)
    memory = Encoder(**stack_arguments, name="encoder")(
        hidden, padding_mask=source_mask)  # (B, S, D)

    hidden = positional_encoding(target_embedding(decoder_inputs))
    hidden = keras.layers.Dropout(config.dropout_rate,
                                  name="decoder_dropout")(hidden)
    hidden = Decoder(**stack_arguments, name="decoder")(
        hidden, memory, padding_mask=target_mask,
        memory_mask=source_mask)  # (B, T, D)

    if config.tie_output_projection:
        logits = target_embedding(hidden, reverse=True)
    else:
        logits = keras.layers.Dense(config.target_vocab_size,
                                    name="output_projection")(hidden)
    # Logits in float32 under mixed precision keep the softmax and the loss
    # stable.
    logits = keras.layers.Activation("linear", dtype="float32",
                                     name="logits")(logits)
    return keras.Model(
        inputs={"encoder_inputs": encoder_inputs,
                "decoder_inputs": decoder_inputs},
        outputs=logits, name=name)


def _layer(model, *names):
    for layer_name in names:
        try:
            return model.get_layer(layer_name)
        except ValueError:
            continue
    raise ValueError(
        f"`model` has no layer named {' or '.join(names)}; was it made by "
        f"build_transformer? Received: model={model.name!r}")


def _parts(model):
    shared = ("shared_embedding",)
    return {
        "source_embedding": _layer(model, "source_embedding", *shared),
        "target_embedding": _layer(model, "target_embedding", *shared),
        "positional_encoding": _layer(model, "positional_encoding"),
        "encoder": _layer(model, "encoder"),
        "decoder": _layer(model, "decoder"),
        "output_projection": _output_projection(model),
    }


def _output_projection(model):
    try:
        dense = model.get_layer("output_projection")
        return dense
    except ValueError:
        embedding = _layer(model, "target_embedding", "shared_embedding")
        return lambda hidden: embedding(hidden, reverse=True)


def encode(model: keras.Model, encoder_inputs):
    """Runs the encoder once (inference mode).

    Args:
        model: a model made by `build_transformer` (or reloaded).
        encoder_inputs: int32 (B, S), pad id 0.

    Returns:
        `(memory (B, S, D), memory_mask bool (B, S))`.
    """
    parts = _parts(model)
    memory_mask = masks.padding_mask(encoder_inputs)
    hidden = parts["positional_encoding"](
        parts["source_embedding"](encoder_inputs))
    memory = parts["encoder"](hidden, padding_mask=memory_mask,
                              training=False)
    return memory, memory_mask


def make_step_fn(model: keras.Model, memory, memory_mask, max_length,
                 beam_size: int = 1):
    """The cached decoder step for `greedy_search` / `beam_search`.

    Cross-attention keys and values are computed here, once per source.
    They and the source mask never change during a search, so they live in
    the step function's closure, repeated `beam_size` times per source row
    (the layout `beam_search` gives its hypotheses), and only the
    self-attention caches travel in `cache`: beam search then reorders
    nothing but what actually differs between hypotheses.

    Args:
        model: a model made by `build_transformer`.
        memory: (B, S, D) from `encode`. memory_mask: bool (B, S).
        max_length: int or int32 scalar, the cache length: the number of
            positions the search may feed (start token included).
        beam_size: int, the beam size K the step will serve (1 for
            greedy search); the step then sees B * K rows.

    Returns:
        `(step_fn, initial_cache)`: `step_fn(ids (B*K,), index, cache) ->
        (logits float32 (B*K, V), cache)`; `initial_cache` has B rows (the
        search tiles it to B * K).
    """
    parts = _parts(model)
    decoder = parts["decoder"]
    full = decoder.initial_cache(memory, max_length)
    constants = {name: {key: _repeat(layer[key], beam_size)
                        for key in ("cross_key", "cross_value")}
                 for name, layer in full.items()}
    constant_mask = _repeat(memory_mask, beam_size)
    cache = {name: {key: layer[key] for key in ("self_key", "self_value")}
             for name, layer in full.items()}

    def step_fn(ids, index, cache):
        hidden = parts["target_embedding"](ops.expand_dims(ids, 1))
        hidden = parts["positional_encoding"](hidden, start_index=index)
        merged = {name: dict(layer, **constants[name])
                  for name, layer in cache.items()}
        hidden, merged, _ = decoder.decode_step(hidden, merged, index,
                                                constant_mask)
        logits = parts["output_projection"](hidden)[:, 0]  # (B*K, V)
        new_cache = {name: {key: merged[name][key]
                            for key in ("self_key", "self_value")}
                     for name in cache}
        return ops.cast(logits, "float32"), new_cache

    return step_fn, cache


def _repeat(x, times):
    """(B, ...) -> (B * times, ...), each row `times` times in a row."""
    return x if times == 1 else ops.repeat(x, times, axis=0)


def cross_attention_weights(model: keras.Model, encoder_inputs,
                            decoder_inputs):
    """Last decoder layer's cross-attention (B, H, T, S), teacher forced."""
    parts = _parts(model)
    memory, memory_mask = encode(model, encoder_inputs)
    hidden = parts["positional_encoding"](
        parts["target_embedding"](decoder_inputs))
    _, weights = parts["decoder"](
        hidden, memory, padding_mask=masks.padding_mask(decoder_inputs),
        memory_mask=memory_mask, return_attention_scores=True,
        training=False)
    return weights
