"""A reference Transformer built the way TensorFlow's NMT tutorial builds it.

The official tutorial "Neural machine translation with a Transformer and
Keras" (tensorflow.org/text/tutorials/transformer) assembles the model from
stock Keras layers: `keras.layers.MultiHeadAttention`, `Add` followed by
`LayerNormalization` after every sub-layer (post-norm), a `Dense`-`Dense`-
`Dropout` feed-forward block, an `Embedding` with `mask_zero=True` whose
outputs are multiplied by sqrt(d_model) and added to a sinusoidal table
whose sines and cosines are *concatenated* (not interleaved), a final
`Dense` to the vocabulary, masked cross-entropy and Adam with the paper's
warm-up schedule. Its translator re-runs the model on the whole prefix at
every step, with no cache. This module follows that recipe (written here,
not copied) with two deliberate changes, so that the comparison is fair:

- each head has d_model / num_heads dimensions (the tutorial passes
  `key_dim=d_model`, which makes every attention layer num_heads times
  larger than the paper's);
- the no-cache greedy loop runs the encoder once and re-runs only the
  decoder and the final layer on the whole prefix at each step (the
  tutorial's loop re-runs the encoder too, so it is slower still), and
  handles a batch, stopping when every row has produced [END].
"""

import keras
import numpy as np
import tensorflow as tf

from keras_transformer.text.special_tokens import END_ID, START_ID


def concatenated_sinusoids(length: int, depth: int) -> np.ndarray:
    """The tutorial's table: sin in the first half, cos in the second."""
    half = depth // 2
    positions = np.arange(length)[:, None]
    rates = 1.0 / (10000.0 ** (np.arange(half)[None, :] / half))
    angles = positions * rates
    return np.concatenate([np.sin(angles), np.cos(angles)],
                          axis=-1).astype(np.float32)


class PositionalEmbedding(keras.layers.Layer):
    def __init__(self, vocab_size, d_model, max_length=2048, **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.embedding = keras.layers.Embedding(vocab_size, d_model,
                                                mask_zero=True)
        self.table = tf.constant(concatenated_sinusoids(max_length, d_model))

    def compute_mask(self, inputs, mask=None):
        return self.embedding.compute_mask(inputs, mask)

    def call(self, x):
        length = tf.shape(x)[1]
        x = self.embedding(x) * tf.math.sqrt(tf.cast(self.d_model,
                                                     tf.float32))
        return x + self.table[tf.newaxis, :length, :]


class GlobalSelfAttention(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__()
        self.supports_masking = True
        self.mha = keras.layers.MultiHeadAttention(**kwargs)
        self.layernorm = keras.layers.LayerNormalization()
        self.add = keras.layers.Add()

    def call(self, x):
        return self.layernorm(self.add([x, self.mha(query=x, value=x,
                                                     key=x)]))


class CausalSelfAttention(GlobalSelfAttention):
    def call(self, x):
        attended = self.mha(query=x, value=x, key=x, use_causal_mask=True)
        return self.layernorm(self.add([x, attended]))


class CrossAttention(GlobalSelfAttention):
    def call(self, x, context):
        attended = self.mha(query=x, key=context, value=context)
        return self.layernorm(self.add([x, attended]))


class FeedForward(keras.layers.Layer):
    def __init__(self, d_model, dff, dropout_rate=0.1):
        super().__init__()
        self.supports_masking = True
        self.seq = keras.Sequential([
            keras.layers.Dense(dff, activation="relu"),
            keras.layers.Dense(d_model),
            keras.layers.Dropout(dropout_rate),
        ])
        self.add = keras.layers.Add()
        self.layer_norm = keras.layers.LayerNormalization()

    def call(self, x):
        return self.layer_norm(self.add([x, self.seq(x)]))


class EncoderLayer(keras.layers.Layer):
    def __init__(self, *, d_model, num_heads, dff, dropout_rate=0.1):
        super().__init__()
        self.supports_masking = True
        self.self_attention = GlobalSelfAttention(
            num_heads=num_heads, key_dim=d_model // num_heads,
            dropout=dropout_rate)
        self.ffn = FeedForward(d_model, dff, dropout_rate)

    def call(self, x):
        return self.ffn(self.self_attention(x))


class Encoder(keras.layers.Layer):
    def __init__(self, *, num_layers, d_model, num_heads, dff, vocab_size,
                 dropout_rate=0.1):
        super().__init__()
        self.supports_masking = True
        self.pos_embedding = PositionalEmbedding(vocab_size, d_model)
        self.enc_layers = [
            EncoderLayer(d_model=d_model, num_heads=num_heads, dff=dff,
                         dropout_rate=dropout_rate)
            for _ in range(num_layers)]
        self.dropout = keras.layers.Dropout(dropout_rate)

    def call(self, x):
        x = self.dropout(self.pos_embedding(x))
        for layer in self.enc_layers:
            x = layer(x)
        return x


class DecoderLayer(keras.layers.Layer):
    def __init__(self, *, d_model, num_heads, dff, dropout_rate=0.1):
        super().__init__()
        self.supports_masking = True
        arguments = dict(num_heads=num_heads, key_dim=d_model // num_heads,
                         dropout=dropout_rate)
        self.causal_self_attention = CausalSelfAttention(**arguments)
        self.cross_attention = CrossAttention(**arguments)
        self.ffn = FeedForward(d_model, dff, dropout_rate)

    def call(self, x, context):
        x = self.causal_self_attention(x)
        x = self.cross_attention(x, context)
        return self.ffn(x)


class Decoder(keras.layers.Layer):
    def __init__(self, *, num_layers, d_model, num_heads, dff, vocab_size,
                 dropout_rate=0.1):
        super().__init__()
        self.supports_masking = True
        self.pos_embedding = PositionalEmbedding(vocab_size, d_model)
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.dec_layers = [
            DecoderLayer(d_model=d_model, num_heads=num_heads, dff=dff,
                         dropout_rate=dropout_rate)
            for _ in range(num_layers)]

    def call(self, x, context):
        x = self.dropout(self.pos_embedding(x))
        for layer in self.dec_layers:
            x = layer(x, context)
        return x


class TutorialTransformer(keras.Model):
    """Encoder, decoder and a final Dense, called on (context, x)."""

    def __init__(self, *, num_layers, d_model, num_heads, dff,
                 input_vocab_size, target_vocab_size, dropout_rate=0.1):
        super().__init__()
        sizes = dict(num_layers=num_layers, d_model=d_model,
                     num_heads=num_heads, dff=dff, dropout_rate=dropout_rate)
        self.encoder = Encoder(vocab_size=input_vocab_size, **sizes)
        self.decoder = Decoder(vocab_size=target_vocab_size, **sizes)
        self.final_layer = keras.layers.Dense(target_vocab_size)

    def call(self, inputs, training=None):
        # `training` in the signature makes Keras 3's `fit` pass
        # training=True, which reaches the Dropout layers: without it the
        # reference would train with no dropout at all (as it did before
        # 2026-12-07), less work per step than the recipe it stands for.
        context, x = inputs
        context = self.encoder(context, training=training)
        logits = self.final_layer(self.decoder(x, context,
                                               training=training))
        try:
            # The loss must not see the decoder's Keras mask.
            del logits._keras_mask
        except AttributeError:
            pass
        return logits


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)."""

    def __init__(self, d_model, warmup_steps=4000):
        super().__init__()
        self.d_model = float(d_model)
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0
        return self.d_model ** -0.5 * tf.minimum(
            tf.math.rsqrt(step), step * self.warmup_steps ** -1.5)


def masked_loss(label, pred):
    mask = tf.cast(label != 0, pred.dtype)
    loss = keras.losses.sparse_categorical_crossentropy(
        label, pred, from_logits=True) * mask
    return tf.reduce_sum(loss) / tf.reduce_sum(mask)


def masked_accuracy(label, pred):
    pred = tf.argmax(pred, axis=2, output_type=label.dtype)
    match = tf.cast((label == pred) & (label != 0), tf.float32)
    return tf.reduce_sum(match) / tf.reduce_sum(
        tf.cast(label != 0, tf.float32))


def build(config) -> TutorialTransformer:
    """The reference model with the sizes of a `TransformerConfig`."""
    model = TutorialTransformer(
        num_layers=config.num_layers, d_model=config.d_model,
        num_heads=config.num_heads, dff=config.d_ff,
        input_vocab_size=config.source_vocab_size,
        target_vocab_size=config.target_vocab_size,
        dropout_rate=config.dropout_rate)
    ids = tf.ones((1, 2), tf.int32)
    model((ids, ids))
    return model


def compile_model(model, config, jit_compile: bool = False):
    model.compile(
        loss=masked_loss,
        optimizer=keras.optimizers.Adam(
            WarmupSchedule(config.d_model, config.warmup_steps),
            beta_1=0.9, beta_2=0.98, epsilon=1e-9),
        metrics=[masked_accuracy], jit_compile=jit_compile)
    return model


def suppress_token(model, token_id: int) -> None:
    """Benchmark helper: the final layer never predicts `token_id`.

    Zeroes its column of the final Dense, so its logit is exactly 0 while
    the other (random) logits of a wide vocabulary reach far above it.
    """
    kernel = model.final_layer.kernel
    kernel.assign(tf.tensor_scatter_nd_update(
        kernel, [[i, token_id] for i in range(kernel.shape[0])],
        tf.zeros([kernel.shape[0]])))
    bias = model.final_layer.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[token_id]], [0.0]))


def make_greedy(model, max_length: int):
    """A tf.function: source ids (B, S) -> ids (B, max_length), no cache.

    Every step runs the decoder and the final layer on the whole prefix
    and keeps the last position's argmax, as the tutorial's `Translator`.
    """

    @tf.function
    def greedy(source_ids):
        context = model.encoder(source_ids, training=False)
        batch = tf.shape(source_ids)[0]
        output = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        output = output.write(0, tf.fill([batch], START_ID))
        finished = tf.zeros([batch], tf.bool)
        for i in tf.range(max_length):
            prefix = tf.transpose(output.stack())  # (B, i + 1)
            logits = model.final_layer(
                model.decoder(prefix, context, training=False))
            next_ids = tf.argmax(logits[:, -1, :], axis=-1,
                                 output_type=tf.int32)
            output = output.write(i + 1, next_ids)
            finished = finished | (next_ids == END_ID)
            if tf.reduce_all(finished):
                break
        return tf.transpose(output.stack())[:, 1:]

    return greedy
