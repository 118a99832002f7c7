"""The same Transformer from keras-hub's layers, with keras-hub's own cache.

`keras_hub.layers.TransformerEncoder` / `TransformerDecoder` (post-norm,
as the paper), `SinePositionEncoding` (interleaved, as the paper) and a
`ReversibleEmbedding` whose matrix is also the output projection (tied, as
ours). Cached greedy decoding follows keras-hub's seq2seq models (BART,
T5): at step 0 each decoder layer fills its cross-attention cache
(`cross_attention_cache_update_index=0`), later steps reuse it (`None`);
the self-attention cache (B, 2, L, H, K) is written in place at the step
index by `ops.slice_update`. The loop is one `tf.while_loop`, compiled with
XLA or not.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_transformer.text.special_tokens import END_ID, START_ID


def build(config) -> dict:
    """Returns {"model", "encoder", "parts"} with the sizes of `config`."""
    import keras_hub

    layers = keras_hub.layers
    encoder_inputs = keras.Input((None,), dtype="int32",
                                 name="encoder_inputs")
    decoder_inputs = keras.Input((None,), dtype="int32",
                                 name="decoder_inputs")
    source_embedding = keras.layers.Embedding(
        config.source_vocab_size, config.d_model, name="source_embedding")
    target_embedding = layers.ReversibleEmbedding(
        config.target_vocab_size, config.d_model, tie_weights=True,
        name="target_embedding")
    positions = layers.SinePositionEncoding(name="positions")
    arguments = dict(intermediate_dim=config.d_ff,
                     num_heads=config.num_heads,
                     dropout=config.dropout_rate,
                     layer_norm_epsilon=config.layer_norm_epsilon)
    encoder_layers = [layers.TransformerEncoder(**arguments,
                                                name=f"encoder_{i}")
                      for i in range(config.num_layers)]
    decoder_layers = [layers.TransformerDecoder(**arguments,
                                                name=f"decoder_{i}")
                      for i in range(config.num_layers)]
    dropout = keras.layers.Dropout(config.dropout_rate)

    source_mask = ops.not_equal(encoder_inputs, 0)
    target_mask = ops.not_equal(decoder_inputs, 0)
    hidden = source_embedding(encoder_inputs)
    memory = dropout(hidden + positions(hidden))
    for layer in encoder_layers:
        memory = layer(memory, padding_mask=source_mask)
    encoder = keras.Model(encoder_inputs, memory, name="hub_encoder")

    hidden = target_embedding(decoder_inputs)
    hidden = dropout(hidden + positions(hidden))
    for layer in decoder_layers:
        hidden = layer(hidden, memory, decoder_padding_mask=target_mask,
                       encoder_padding_mask=source_mask)
    logits = target_embedding(hidden, reverse=True)
    model = keras.Model({"encoder_inputs": encoder_inputs,
                         "decoder_inputs": decoder_inputs}, logits,
                        name="hub_transformer")
    parts = {"target_embedding": target_embedding, "positions": positions,
             "decoder_layers": decoder_layers,
             "num_heads": config.num_heads,
             "head_size": config.d_model // config.num_heads}
    return {"model": model, "encoder": encoder, "parts": parts}


def suppress_token(peer: dict, token_id: int) -> None:
    """Benchmark helper: zero the token's tied embedding row (logit 0)."""
    embeddings = peer["parts"]["target_embedding"].embeddings
    embeddings.assign(tf.tensor_scatter_nd_update(
        embeddings, [[token_id]], tf.zeros([1, embeddings.shape[1]])))


def make_greedy(peer: dict, max_length: int, jit_compile: bool = False):
    """A tf.function: source ids (B, S) -> ids (B, max_length), cached."""
    parts = peer["parts"]
    embedding = parts["target_embedding"]
    layers = parts["decoder_layers"]
    heads, head_size = parts["num_heads"], parts["head_size"]

    def step(ids, index, memory, memory_mask, self_caches, cross_caches,
             fill_cross):
        hidden = embedding(ids[:, None])
        hidden = hidden + parts["positions"](hidden, start_index=index)
        new_self, new_cross = [], []
        for layer, self_cache, cross_cache in zip(layers, self_caches,
                                                  cross_caches):
            hidden, self_cache, cross_cache = layer(
                hidden, memory, encoder_padding_mask=memory_mask,
                self_attention_cache=self_cache,
                self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache,
                cross_attention_cache_update_index=0 if fill_cross else None,
                training=False)
            new_self.append(self_cache)
            new_cross.append(cross_cache)
        logits = embedding(hidden, reverse=True)[:, 0]
        return logits, new_self, new_cross

    @tf.function(jit_compile=jit_compile)
    def greedy(source_ids):
        memory = peer["encoder"](source_ids, training=False)
        memory_mask = ops.not_equal(source_ids, 0)
        batch = tf.shape(source_ids)[0]
        source_length = tf.shape(source_ids)[1]
        self_caches = [tf.zeros([batch, 2, max_length, heads, head_size])
                       for _ in layers]
        cross_caches = [tf.zeros([batch, 2, source_length, heads,
                                  head_size]) for _ in layers]
        ids = tf.fill([batch], START_ID)
        logits, self_caches, cross_caches = step(
            ids, 0, memory, memory_mask, self_caches, cross_caches, True)
        ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        output = tf.tensor_scatter_nd_update(
            tf.zeros([max_length, batch], tf.int32), [[0]], ids[None])

        def cond(index, ids, output, finished, self_caches):
            return (index < max_length) & ~tf.reduce_all(finished)

        def body(index, ids, output, finished, self_caches):
            logits, self_caches, _ = step(ids, index, memory, memory_mask,
                                          self_caches, cross_caches, False)
            ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
            ids = tf.where(finished, 0, ids)
            output = tf.tensor_scatter_nd_update(output, [[index]],
                                                 ids[None])
            return (index + 1, ids, output, finished | (ids == END_ID),
                    self_caches)

        _, _, output, _, _ = tf.while_loop(
            cond, body, (tf.constant(1), ids, output, ids == END_ID,
                         self_caches))
        return tf.transpose(output)

    return greedy
