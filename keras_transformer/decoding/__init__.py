"""Greedy and beam search over a step function, independent of the model.

The model is seen only through a step function
`step_fn(ids, index, cache) -> (logits, cache)`: `ids` int32 [B] are the
tokens at position `index` (an int32 scalar tensor; step 0 feeds the start
token at index 0), `logits` are [B, V], and `cache` is a nested structure
of tensors that all have the batch as their leading dimension and keep
their shapes from step to step.

Both searches are a single while loop over fixed-shape buffers, written
once against the small set of operations in `_ops` (the one backend seam).
On Keras' TensorFlow backend that is a `tf.while_loop` of the same `tf` ops
as ever, so it runs eagerly, in `tf.function` (with `jit_compile=True` when
`max_length` is a python int) and converts to ONNX with tf2onnx. On JAX it
is a `jax.lax.while_loop` of `keras.ops` (`max_length` must then be a
python int, as for XLA on TensorFlow) and on PyTorch a Python loop; both
give TensorFlow's ids.

Modules: `greedy` and `beam` (the searches), `rules` (the rules every
runtime must match: `constrain`, `gnmt_length_penalty`,
`max_output_length`), `checks` (argument checks and the step-function
contract) and `_ops` (the backend seam).

Shapes: B batch, K beam size, L maximum output length, V vocabulary.
"""

from keras_transformer.contract import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_EXTRA_LENGTH,
    DEFAULT_LENGTH_PENALTY,
    LENGTH_PENALTY_DIVISOR,
    LENGTH_PENALTY_OFFSET,
)
from keras_transformer.decoding.beam import beam_search, tile_beams
from keras_transformer.decoding.greedy import greedy_search
from keras_transformer.decoding.rules import (
    constrain,
    gnmt_length_penalty,
    max_output_length,
)
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

__all__ = [
    "DEFAULT_BEAM_SIZE",
    "DEFAULT_EXTRA_LENGTH",
    "DEFAULT_LENGTH_PENALTY",
    "END_ID",
    "LENGTH_PENALTY_DIVISOR",
    "LENGTH_PENALTY_OFFSET",
    "PAD_ID",
    "START_ID",
    "beam_search",
    "constrain",
    "gnmt_length_penalty",
    "greedy_search",
    "max_output_length",
    "tile_beams",
]
