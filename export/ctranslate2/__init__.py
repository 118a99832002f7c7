"""The CTranslate2 export and its TensorFlow-free runtime.

    convert   the Keras model as a CTranslate2 TransformerSpec, written and
              verified (export_ctranslate2)
    verify    greedy ids, translations and log-probabilities against the
              Keras model
    runtime   CTranslate2Translator: ctranslate2 + sentencepiece only

This `__init__` imports nothing: `import keras_transformer.export
.ctranslate2.runtime` works where TensorFlow is not installed.
"""

import importlib

_LAZY_NAMES = {
    "export_ctranslate2": ".convert",
    "convert_model": ".convert",
    "CTranslate2Translator": ".runtime",
}


def __getattr__(name):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY_NAMES[name], __name__),
                   name)


def __dir__():
    return sorted([*globals(), *_LAZY_NAMES])
