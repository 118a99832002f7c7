"""The CTranslate2 export and its TensorFlow-free runtime.

    convert   the Keras model as a CTranslate2 TransformerSpec, written and
              verified (export_ctranslate2)
    verify    greedy ids, translations and log-probabilities against the
              Keras model
    runtime   CTranslate2Translator: ctranslate2 + sentencepiece only

This `__init__` imports nothing: `import keras_transformer.export
.ctranslate2.runtime` works where TensorFlow is not installed.
"""

from keras_transformer._lazy import lazy_attributes

_LAZY_NAMES = {
    "export_ctranslate2": ".convert",
    "convert_model": ".convert",
    "CTranslate2Translator": ".runtime",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)
