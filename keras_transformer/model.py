"""`Transformer`: the paper's encoder-decoder as one functional Keras model.

`build_transformer(config)` returns a `Transformer`: a functional-API
`keras.Model` subclass (the graph is built in `__init__`, as keras-hub's
backbones are) that holds its parts as attributes and keeps its
`TransformerConfig`, and offers what a decoder loop needs:

    memory, memory_mask = model.encode(source_ids)
    cache, context = model.initial_cache(memory, memory_mask, max_length,
                                         source_ids)
    logits, cache = model.decode_step(ids, index, cache, context)

`context` (cross-attention keys and values, source mask, and with copy
attention the source ids) is constant for a source; only `cache`
(self-attention keys and values) changes from step to step. Nothing looks
a layer up by name.
"""

import keras
import numpy as np
from keras import ops

from keras_transformer import masks
from keras_transformer.config import TransformerConfig
from keras_transformer.layers import (
    Decoder,
    Encoder,
    OutputBias,
    PointerGenerator,
    PreviousTokenProjection,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from keras_transformer.text.special_tokens import PAD_ID, START_ID


@keras.saving.register_keras_serializable(package="keras_transformer")
class Transformer(keras.Model):
    """The encoder-decoder Transformer (paper Figure 1) with named parts.

    Inputs are int32 token ids with pad id 0: "encoder_inputs" (B, S) and
    "decoder_inputs" (B, T), the targets shifted right behind [START]. The
    output is float32 logits (B, T, V_target), whatever the dtype policy;
    with `config.copy_attention` it is log P of the pointer-generator
    (`PointerGenerator`, See et al., 2017), which every consumer of logits
    (the loss, the accuracy, the searches) takes as they are.
    `get_config()` holds the `TransformerConfig`, so a `.keras` file
    reloads with `keras.models.load_model(path, safe_mode=True)` and no
    custom objects.

    Args:
        config: `TransformerConfig`.
        dtype: optional dtype policy of every layer (default: the global
            policy, e.g. "mixed_float16").
        name: the model's name. Defaults to "transformer".

    Attributes:
        config: the `TransformerConfig`.
        source_embedding, target_embedding: `TokenEmbedding` (§3.4); one
            object when `config.share_embeddings`.
        positional_encoding: `SinusoidalPositionalEncoding` (§3.5).
        encoder_dropout, decoder_dropout: dropout on the embedding sums
            (§5.4).
        encoder: `Encoder`. decoder: `Decoder`.
        output_projection: `keras.layers.Dense`, or None when the
            projection is tied to the target embedding (§3.4).
        output_bias: `OutputBias` (its non-trainable `bias` (V_target,)
            added to the logits) with `config.output_bias`, else None.
        pointer_generator: `PointerGenerator` with
            `config.copy_attention`, else None.
        previous_token: `PreviousTokenProjection` with
            `config.previous_source_token`, else None.

    Example:
    >>> model = Transformer(TransformerConfig.from_preset("tiny"))
    >>> ids = keras.ops.ones((2, 7), dtype="int32")
    >>> tuple(model({"encoder_inputs": ids, "decoder_inputs": ids}).shape)
    (2, 7, 8000)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.
    """

    def __init__(self, config: TransformerConfig, dtype=None,
                 name: str = "transformer", **kwargs):
        if not isinstance(config, TransformerConfig):
            raise TypeError(
                "`config` must be a TransformerConfig. "
                f"Received: config={config!r}")
        # === Parts ===
        if config.share_embeddings:
            self.source_embedding = self.target_embedding = TokenEmbedding(
                config.target_vocab_size, config.d_model,
                scale=config.scale_embeddings, dtype=dtype,
                name="shared_embedding")
        else:
            self.source_embedding = TokenEmbedding(
                config.source_vocab_size, config.d_model,
                scale=config.scale_embeddings, dtype=dtype,
                name="source_embedding")
            self.target_embedding = TokenEmbedding(
                config.target_vocab_size, config.d_model,
                scale=config.scale_embeddings, dtype=dtype,
                name="target_embedding")
        self.positional_encoding = SinusoidalPositionalEncoding(
            config.max_length, layout=config.positional_layout, dtype=dtype,
            name="positional_encoding")
        stack_arguments = dict(
            num_layers=config.num_layers, num_heads=config.num_heads,
            d_ff=config.d_ff, dropout_rate=config.dropout_rate,
            attention_dropout_rate=config.attention_dropout_rate,
            activation=config.activation, norm_first=config.norm_first,
            layer_norm_epsilon=config.layer_norm_epsilon, dtype=dtype)
        self.encoder_dropout = keras.layers.Dropout(
            config.dropout_rate, dtype=dtype, name="encoder_dropout")
        self.encoder = Encoder(**stack_arguments, name="encoder")
        self.decoder_dropout = keras.layers.Dropout(
            config.dropout_rate, dtype=dtype, name="decoder_dropout")
        self.decoder = Decoder(**stack_arguments, name="decoder")
        self.output_projection = None
        if not config.tie_output_projection:
            self.output_projection = keras.layers.Dense(
                config.target_vocab_size, dtype=dtype,
                name="output_projection")
        self.output_bias = None
        if config.output_bias:
            self.output_bias = OutputBias(
                config.target_vocab_size, dtype=dtype, name="output_bias")
        self.previous_token = None
        if config.previous_source_token:
            self.previous_token = PreviousTokenProjection(
                dtype=dtype, name="previous_source_token")
        self.pointer_generator = None
        if config.copy_attention:
            self.pointer_generator = PointerGenerator(
                dtype=dtype, name="pointer_generator")
        # Logits in float32 under mixed precision keep the softmax and the
        # loss stable.
        self.logits_dtype = keras.layers.Activation(
            "linear", dtype="float32", name="logits")

        # === Functional graph ===
        encoder_inputs = keras.Input((None,), dtype="int32",
                                     name="encoder_inputs")
        decoder_inputs = keras.Input((None,), dtype="int32",
                                     name="decoder_inputs")
        source_mask = masks.padding_mask(encoder_inputs)  # (B, S)
        target_mask = masks.padding_mask(decoder_inputs)  # (B, T)
        # Sections 3.4-3.5 and 5.4: scaled embeddings plus positional
        # encodings, then dropout on the sums.
        hidden = self.embed_source(encoder_inputs)
        memory = self.encoder(self.encoder_dropout(hidden),
                              padding_mask=source_mask)  # (B, S, D)
        embedded = self.target_embedding(decoder_inputs)  # (B, T, D)
        hidden = self.decoder_dropout(self.positional_encoding(embedded))
        if self.pointer_generator is None:
            hidden = self.decoder(hidden, memory, padding_mask=target_mask,
                                  memory_mask=source_mask)  # (B, T, D)
            logits = self.project(hidden)
        else:
            # See et al. (2017): copy through the last layer's
            # cross-attention (B, H, T, S); the output is log P.
            hidden, weights = self.decoder(
                hidden, memory, padding_mask=target_mask,
                memory_mask=source_mask, return_attention_scores=True)
            logits = self.pointer_generator(self.project(hidden), hidden,
                                            embedded, weights,
                                            encoder_inputs)
        logits = self.logits_dtype(logits)
        super().__init__(
            inputs={"encoder_inputs": encoder_inputs,
                    "decoder_inputs": decoder_inputs},
            outputs=logits, name=name, **kwargs)
        # keras.Model's functional constructor ignores `dtype`: the model
        # reports (and saves) the policy its layers were built with.
        self.dtype_policy = self.encoder.dtype_policy
        self.config = config

    def __setattr__(self, name, value):
        # PyTorch's Module takes no attribute before `Module.__init__`,
        # which keras.Model's functional constructor runs only after the
        # parts above exist. The graph tracks the parts, so until then a
        # plain attribute is all they need (as keras-hub's backbones do).
        if ("_tracker" not in self.__dict__
                and keras.backend.backend() == "torch"):
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def project(self, hidden):
        """Decoder outputs to logits: (..., D) -> (..., V_target) (§3.4).

        The output projection, or the target embedding's transpose when
        `config.tie_output_projection`, then `output_bias` with
        `config.output_bias`. The logits are in the layers' compute dtype
        (float16 under "mixed_float16"): the model's output and
        `decode_step` cast them to float32, as a caller should before a
        softmax.

        Args:
            hidden: (..., D), the decoder's output.

        Returns:
            Logits (..., V_target).
        """
        if self.output_projection is None:
            logits = self.target_embedding(hidden, reverse=True)
        else:
            logits = self.output_projection(hidden)
        if self.output_bias is not None:
            logits = self.output_bias(logits)
        return logits

    def suppress_reserved(self, logits):
        """float32 logits (..., V) with [PAD] and [START] at -1e9 when
        `config.suppress_reserved` (what a search step outputs), else
        unchanged.

        A large finite value rather than -inf: a search's log-softmax then
        renormalizes over the other tokens, and no -inf reaches the
        arithmetic of an exported graph (tf2onnx writes a select as
        products).
        """
        if not self.config.suppress_reserved:
            return logits
        vocabulary_size = self.config.target_vocab_size
        reserved = np.zeros((vocabulary_size,), bool)
        reserved[[PAD_ID, START_ID]] = True
        return ops.where(reserved, ops.cast(-1e9, logits.dtype), logits)

    def get_config(self):
        return {"config": self.config.to_dict(),
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = TransformerConfig.from_dict(config.pop("config"))
        return cls(model_config, **config)

    def embed_source(self, source_ids):
        """The encoder's input: scaled embeddings (with
        `config.previous_source_token`, plus the map of each predecessor's)
        and the positional encoding, before dropout (§3.4-3.5).

        Args:
            source_ids: int (B, S), pad id 0.

        Returns:
            (B, S, D).
        """
        embedded = self.source_embedding(source_ids)
        if self.previous_token is not None:
            embedded = self.previous_token(embedded)
        return self.positional_encoding(embedded)

    # -- inference ---------------------------------------------------------

    def encode(self, source_ids):
        """Runs the encoder once (inference mode).

        Args:
            source_ids: int32 (B, S), pad id 0.

        Returns:
            `(memory (B, S, D), memory_mask bool (B, S))`.
        """
        memory_mask = masks.padding_mask(source_ids)
        hidden = self.embed_source(source_ids)
        memory = self.encoder(hidden, padding_mask=memory_mask,
                              training=False)
        return memory, memory_mask

    def initial_cache(self, memory, memory_mask, max_length,
                      source_ids=None):
        """The decoder's state for a search over `memory` (B, S, D).

        Args:
            memory: (B, S, D), from `encode`.
            memory_mask: bool (B, S), from `encode`.
            max_length: int or int32 scalar, the positions to cache.
            source_ids: int (B, S), the ids `encode` read; needed with
                `config.copy_attention` (the tokens to copy), ignored
                without it.

        Returns:
            `(cache, context)` as in `Decoder.initial_cache`: the
            self-attention cache of `max_length` positions, and the
            per-source constants (cross-attention keys, values, mask),
            with copy attention also "source_ids" int32 (B, S), so that a
            search's `tile_beams(context, beam_size)` tiles them too.
        """
        cache, context = self.decoder.initial_cache(memory, memory_mask,
                                                    max_length)
        if self.pointer_generator is not None:
            if source_ids is None:
                raise ValueError(
                    "`source_ids` is needed by a model with "
                    "`copy_attention`: the ids `encode` read, the tokens "
                    "it may copy. Received: source_ids=None")
            context["source_ids"] = ops.cast(source_ids, "int32")
        return cache, context

    def decode_step(self, ids, index, cache, context):
        """The cached step of `keras_transformer.decoding`'s searches.

        Args:
            ids: int32 (B,), the tokens at position `index`.
            index: int32 scalar, their position (0 for [START]).
            cache: the self-attention cache (from `initial_cache`).
            context: the per-source constants (from `initial_cache`, tiled
                to the beams by the search).

        Returns:
            `(logits float32 (B, V), cache)`; with `config.copy_attention`
            the logits are log P, as the model's output. With
            `config.suppress_reserved` [PAD] and [START] are at -1e9
            (`suppress_reserved`), which the teacher-forced output is not.
        """
        embedded = self.target_embedding(ops.expand_dims(ids, 1))
        hidden = self.positional_encoding(embedded, start_index=index)
        if self.pointer_generator is None:
            hidden, cache = self.decoder.decode_step(hidden, index, cache,
                                                     context)
            logits = self.project(hidden[:, 0])  # (B, D) -> (B, V)
            return self.suppress_reserved(ops.cast(logits, "float32")), cache
        hidden, cache, weights = self.decoder.decode_step(
            hidden, index, cache, context, return_attention_scores=True)
        logits = ops.expand_dims(self.project(hidden[:, 0]), 1)  # (B, 1, V)
        log_probs = self.pointer_generator(logits, hidden, embedded, weights,
                                           context["source_ids"])
        return self.suppress_reserved(log_probs[:, 0]), cache

    def cross_attention_weights(self, encoder_inputs, decoder_inputs):
        """Last decoder layer's cross-attention (B, H, T, S), teacher forced.
        """
        memory, memory_mask = self.encode(encoder_inputs)
        hidden = self.positional_encoding(
            self.target_embedding(decoder_inputs))
        _, weights = self.decoder(
            hidden, memory, padding_mask=masks.padding_mask(decoder_inputs),
            memory_mask=memory_mask, return_attention_scores=True,
            training=False)
        return weights


def build_transformer(config: TransformerConfig,
                      name: str = "transformer") -> Transformer:
    """Builds the encoder-decoder Transformer (paper Figure 1).

    Args:
        config: the hyperparameters.
        name: the model's name.

    Returns:
        An uncompiled `Transformer` (a functional `keras.Model`).

    Example:
    >>> model = build_transformer(TransformerConfig.from_preset("tiny"))
    >>> model.encoder.num_layers
    2
    """
    return Transformer(config, name=name)
