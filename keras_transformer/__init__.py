"""keras-transformer: the Transformer of Vaswani et al. (2017) in Keras 3.

Public API:
    TransformerConfig, PRESETS           hyperparameters and the presets
    build_transformer(config)            the functional seq2seq model
    encode, make_step_fn                 encoder once; cached decoder step
    layers.*                             one Keras layer per paper component
    masks.*                              padding / causal mask helpers
    SubwordTokenizer (text)              tensorflow-text WordPiece, lossless
    load_corpus, make_dataset (data)     corpora and the tf.data pipeline
    TransformerSchedule, train (training) the paper's recipe with model.fit
    greedy_search, beam_search           cached search over a step function
    Translator                           tokenizers + model + search
    train_run, load_translator,          run directories (the CLI's API)
    evaluate_run (runs)

Shape glossary: B batch, S source length, T target length, D d_model,
H heads, K head size, F d_ff, V vocabulary.
"""

import os

# TensorFlow's C++ start-up notes (oneDNN, CPU features) are noise for users
# of this package; a value the user set is kept.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_transformer import data, decoding, layers, masks, text, training
from keras_transformer.config import PRESETS, TransformerConfig
from keras_transformer.data import load_corpus, make_dataset
from keras_transformer.decoding import beam_search, greedy_search
from keras_transformer.layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    MultiHeadAttention,
    PositionwiseFeedForward,
    ResidualNorm,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    scaled_dot_product_attention,
)
from keras_transformer.model import (
    build_transformer,
    cross_attention_weights,
    encode,
    make_step_fn,
)
from keras_transformer.runs import (
    evaluate_run,
    load_translator,
    train_run,
)
from keras_transformer.text import SubwordTokenizer
from keras_transformer.training import TransformerSchedule, train
from keras_transformer.translator import Translator

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "SubwordTokenizer",
    "Translator",
    "TransformerSchedule",
    "beam_search",
    "data",
    "decoding",
    "evaluate_run",
    "greedy_search",
    "load_corpus",
    "load_translator",
    "make_dataset",
    "text",
    "train",
    "train_run",
    "training",
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "ResidualNorm",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "TransformerConfig",
    "build_transformer",
    "cross_attention_weights",
    "encode",
    "layers",
    "make_step_fn",
    "masks",
    "scaled_dot_product_attention",
]
