"""A fixed bias on the vocabulary logits (Marian's `final_logits_bias`).

The paper's pre-softmax projection is the transposed embedding matrix,
without a bias (section 3.4). Hugging Face's Marian models add a bias
vector to the logits, a buffer that is not trained; this layer holds it for
imported checkpoints (`TransformerConfig.output_bias`).
"""

import keras
from keras import ops

from keras_transformer.checks import check_positive_int


@keras.saving.register_keras_serializable(package="keras_transformer")
class OutputBias(keras.layers.Layer):
    """Adds a non-trainable bias (V,) to logits (..., V).

    Not in the paper, whose tied projection has no bias (section 3.4). The
    weight `bias` is created non-trainable with zeros, so a new layer is
    the identity and training never changes it: an importer sets it with
    `layer.bias.assign(values)` (Hugging Face Marian's
    `final_logits_bias`, a buffer there too). The addition is in the
    layer's compute dtype. Keras masks pass through unchanged.

    Args:
        vocabulary_size: int, V, the size of the logits' last axis.

    Call arguments:
        inputs: logits (..., V).

    Returns:
        (..., V): inputs + bias.

    Example:
    >>> layer = OutputBias(vocabulary_size=5)
    >>> tuple(layer(keras.ops.zeros((2, 3, 5))).shape)
    (2, 3, 5)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, section 3.4;
        Junczys-Dowmunt et al., "Marian: Fast Neural Machine Translation
        in C++", 2018.
    """

    def __init__(self, vocabulary_size, **kwargs):
        check_positive_int("vocabulary_size", vocabulary_size)
        super().__init__(**kwargs)
        self.vocabulary_size = vocabulary_size
        self.supports_masking = True

    def build(self, inputs_shape=None):
        if inputs_shape is not None and inputs_shape[-1] not in (
                None, self.vocabulary_size):
            raise ValueError(
                "The last dimension of the inputs must be "
                f"`vocabulary_size`. Received: vocabulary_size="
                f"{self.vocabulary_size}, inputs_shape={inputs_shape}")
        self.bias = self.add_weight(
            name="bias", shape=(self.vocabulary_size,),
            initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs):
        return ops.add(inputs, ops.cast(self.bias, inputs.dtype))

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        config = super().get_config()
        config.update({"vocabulary_size": self.vocabulary_size})
        return config
