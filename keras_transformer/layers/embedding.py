"""Token embeddings scaled by sqrt(d_model), also the tied output projection.

Paper section 3.4: "we share the same weight matrix between the two
embedding layers and the pre-softmax linear transformation ... In the
embedding layers, we multiply those weights by sqrt(d_model)."
"""

import math

import keras
from keras import ops

from keras_transformer.checks import check_positive_int


@keras.saving.register_keras_serializable(package="keras_transformer")
class TokenEmbedding(keras.layers.Layer):
    """Embeds token ids, or projects vectors back to vocabulary logits.

    `call(ids)` returns E[ids] * sqrt(d_model). `call(x, reverse=True)`
    returns x E^T, the pre-softmax projection tied to the same matrix (no
    scaling, no bias). One layer instance can serve as the source embedding,
    the target embedding and the output projection (section 3.4).

    Keras masks: with `mask_zero=True` the layer emits a mask, True at ids
    other than the pad id 0. The model uses explicit masks, so it defaults
    to False.

    Args:
        vocabulary_size: int, V.
        d_model: int, D.
        scale: bool, multiply embeddings by sqrt(d_model) as the paper does.
            Defaults to True.
        mask_zero: bool, emit a Keras mask for pad id 0. Defaults to False.
        embeddings_initializer: initializer of E, (V, D). Defaults to a
            normal with stddev d_model^-0.5, so scaled embeddings have unit
            variance.

    Call arguments:
        inputs: int ids (B, T), or (B, T, D) with `reverse=True`.
        reverse: bool, project to logits instead of embedding.

    Returns:
        (B, T, D) embeddings, or (B, T, V) logits with `reverse=True`.

    Example:
    >>> embedding = TokenEmbedding(vocabulary_size=100, d_model=8)
    >>> x = embedding(keras.ops.array([[5, 6, 0]]))
    >>> tuple(embedding(x, reverse=True).shape)
    (1, 3, 100)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.4.
    """

    def __init__(self, vocabulary_size, d_model, scale=True, mask_zero=False,
                 embeddings_initializer=None, **kwargs):
        check_positive_int("vocabulary_size", vocabulary_size)
        check_positive_int("d_model", d_model)
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.d_model = d_model
        self.scale = scale
        self.mask_zero = mask_zero
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomNormal(
                stddev=d_model ** -0.5)
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer)
        self.supports_masking = mask_zero

    def build(self, inputs_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocabulary_size, self.d_model),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, reverse=False):
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        if reverse:
            return ops.matmul(inputs, ops.transpose(embeddings))
        outputs = ops.take(embeddings, ops.cast(inputs, "int32"), axis=0)
        if self.scale:
            outputs = ops.multiply(
                outputs, ops.cast(math.sqrt(self.d_model), outputs.dtype))
        return outputs

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def compute_output_shape(self, inputs_shape):
        return (*inputs_shape, self.d_model)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(
                (*inputs.shape[:-1], self.vocabulary_size),
                dtype=self.compute_dtype)
        return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                 dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocabulary_size": self.vocabulary_size,
            "d_model": self.d_model,
            "scale": self.scale,
            "mask_zero": self.mask_zero,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer),
        })
        return config
