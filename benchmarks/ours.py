"""Our model in the benchmarks: random weights, forced lengths.

Decoding benchmarks compare runtimes at a *forced* output length: the
[END] row of the (tied) target embedding is zeroed, so its logit is exactly
0 while the other 8,000 random logits reach far above it: no search ever
ends early, in any runtime (TensorFlow, SavedModel, ONNX Runtime,
CTranslate2), without a benchmark-only branch in the exported graphs.
Sources have a fixed length S; for N output tokens the translator gets
`extra_length = N - S`, so the paper's maximum output length (source
length + extra) is exactly N.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_transformer.contract import SearchSettings
from keras_transformer.model import build_transformer
from keras_transformer.text import (
    RESERVED_TOKENS,
    SentencePieceTokenizer,
    learn_sentencepiece,
)
from keras_transformer.translator import Translator


def synthetic_tokenizer(size: int) -> SentencePieceTokenizer:
    """A SentencePiece model of exactly `size` pieces, for random models.

    The reserved and byte pieces of a real model, then "▁t1", "▁t2", ...
    (unique piece strings, as CTranslate2's vocabularies need).
    """
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto.FromString(
        learn_sentencepiece(["a"], vocab_size=300))
    del model.pieces[len(RESERVED_TOKENS) + 256:]
    if size < len(model.pieces):
        raise ValueError(f"`size` must be >= {len(model.pieces)}. "
                         f"Received: size={size}")
    for i in range(1, size - len(model.pieces) + 1):
        piece = model.pieces.add()
        piece.piece, piece.score = f"\u2581t{i}", -float(i)
    # Every piece is a model id (the recorded size limits the ids:
    # `text.sentencepiece_model.model_vocab_size`).
    model.trainer_spec.vocab_size = len(model.pieces)
    return SentencePieceTokenizer(model.SerializeToString())


def build_model(config, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_transformer(config)


def suppress_token(model: keras.Model, token_id: int) -> None:
    """Zeroes the token's output row: its logit is 0 at every step."""
    projection = model.output_projection
    if projection is None:
        variable = model.target_embedding.embeddings
        variable.assign(tf.tensor_scatter_nd_update(
            variable, [[token_id]], tf.zeros([1, variable.shape[1]])))
    else:
        kernel = projection.kernel
        kernel.assign(tf.tensor_scatter_nd_update(
            kernel, [[i, token_id] for i in range(kernel.shape[0])],
            tf.zeros([kernel.shape[0]])))


def make_translator(model: keras.Model, tokenizer: SentencePieceTokenizer,
                    extra_length: int = 0, beam_size: int = 4,
                    jit_compile: bool = False) -> Translator:
    """A Translator whose outputs are source length + `extra_length`."""
    settings = SearchSettings(beam_size=beam_size, extra_length=extra_length)
    return Translator(model, tokenizer, tokenizer, settings=settings,
                      jit_compile=jit_compile)


def random_ids(rng: np.random.Generator, batch: int, length: int,
               vocab_size: int) -> np.ndarray:
    """int32 (batch, length) ids above the reserved ones; no padding."""
    return rng.integers(len(RESERVED_TOKENS), vocab_size,
                        size=(batch, length)).astype(np.int32)


def count_matmul_parameters(config) -> dict:
    """Weights that multiply activations, per token, by part (no biases).

    Encoder layer: 4 D^2 (Q, K, V, O) + 2 D F; decoder layer: 8 D^2 (self
    and cross attention) + 2 D F; output projection: V D.
    """
    d, f = config.d_model, config.d_ff
    return {"encoder": config.num_layers * (4 * d * d + 2 * d * f),
            "decoder": config.num_layers * (8 * d * d + 2 * d * f),
            "output_projection": config.target_vocab_size * d}


def training_flops(config, batch: int, source_length: int,
                   target_length: int) -> float:
    """FLOPs of one training step (forward + backward).

    6 x (P_enc x B S + (P_dec + P_out) x B T) for the weight matmuls (2 per
    multiply-add, x3 for the backward pass) plus the attention products
    Q K^T and A V: 12 x B x D x (N S^2 + N (T^2 + T S)), counting the full
    score matrices (the causal half is computed and masked, not skipped).
    """
    parameters = count_matmul_parameters(config)
    b, s, t = batch, source_length, target_length
    dense = 6 * (parameters["encoder"] * b * s
                 + (parameters["decoder"] + parameters["output_projection"])
                 * b * t)
    attention = 12 * b * config.d_model * config.num_layers * (
        s * s + t * t + t * s)
    return float(dense + attention)
