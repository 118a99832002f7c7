"""keras-transformer: the Transformer of Vaswani et al. (2017) in Keras 3.

Public API:
    TransformerConfig, PRESETS           hyperparameters and the presets
    build_transformer(config)            the functional seq2seq model
    Transformer                          the model: named parts, encode /
                                         initial_cache / decode_step
    layers.*                             one Keras layer per paper component
    masks.*                              padding / causal mask helpers
    SentencePieceTokenizer (text)        a SentencePiece model in TF graphs
    load_corpus, make_dataset (data)     corpora and the tf.data pipeline
    TransformerSchedule, train (training) the paper's recipe with model.fit
    greedy_search, beam_search           cached search over a step function
    SearchSettings (contract)            beam size, length penalty, ...
    Translator                           tokenizers + model + search
    RunDirectory (run_directory)         the files of one run directory
    train_run, load_translator,          run directories (the CLI's API)
    evaluate_run (runs)

Shape glossary: B batch, S source length, T target length, D d_model,
H heads, K head size, F d_ff, V vocabulary.

Every name above is imported on first use (PEP 562), so
`import keras_transformer` imports neither TensorFlow nor Keras. The Keras
classes (layers, model, schedule, losses) are registered for
`keras.models.load_model` at `import keras_transformer` if Keras or
TensorFlow is already imported, otherwise right after either is first
imported (an import hook), so a `.keras` file loads in any import order.
"""

import importlib
import importlib.abc
import importlib.util
import sys

from keras_transformer import _logging

# TensorFlow's C++ start-up notes (oneDNN, CPU features) are noise for users
# of this package: TF_CPP_MIN_LOG_LEVEL defaults to 2; a value the user set
# is kept.
_logging.set_default_log_level()

__version__ = "0.1.0"

# Public name -> the module that defines it, relative to this package. A
# name equal to its module's last part ("data": ".data") is the module.
_LAZY_NAMES = {
    # Subpackages and modules.
    "data": ".data",
    "decoding": ".decoding",
    "layers": ".layers",
    "masks": ".masks",
    "text": ".text",
    "training": ".training",
    # Configuration and model.
    "PRESETS": ".config",
    "TransformerConfig": ".config",
    "Transformer": ".model",
    "build_transformer": ".model",
    # Layers.
    "Decoder": ".layers",
    "DecoderLayer": ".layers",
    "Encoder": ".layers",
    "EncoderLayer": ".layers",
    "MultiHeadAttention": ".layers",
    "PointerGenerator": ".layers",
    "PositionwiseFeedForward": ".layers",
    "ResidualNorm": ".layers",
    "SinusoidalPositionalEncoding": ".layers",
    "TokenEmbedding": ".layers",
    "scaled_dot_product_attention": ".layers",
    # Text and data.
    "SentencePieceTokenizer": ".text.sentencepiece_tokenizer",
    "load_corpus": ".data",
    "make_dataset": ".data",
    # Training.
    "TransformerSchedule": ".training",
    "train": ".training",
    # Search and translation.
    "beam_search": ".decoding",
    "greedy_search": ".decoding",
    "SearchSettings": ".contract",
    "Translator": ".translator",
    # Run directories.
    "RunDirectory": ".run_directory",
    "evaluate_run": ".runs",
    "load_translator": ".runs",
    "train_run": ".runs",
}

__all__ = list(_LAZY_NAMES)


def __getattr__(name):
    """Imports the module of a public name on first access (PEP 562)."""
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}")
    full_name = __name__ + module_name
    try:
        module = importlib.import_module(full_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if not (full_name == missing or full_name.startswith(missing + ".")):
            raise  # The module exists; something it imports is missing.
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r} (its module "
            f"{full_name!r} does not exist)") from None
    if module_name == "." + name:
        value = module
    else:
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(
                f"module {__name__!r} has no attribute {name!r} "
                f"({full_name!r} does not define it)") from None
    globals()[name] = value
    if sys.modules.get("keras") is not None:
        _register_keras_objects()
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES))


# The modules whose `register_keras_serializable` classes
# `keras.models.load_model` finds by name ("keras_transformer>...").
_KERAS_OBJECT_MODULES = (".layers", ".model", ".training")


def _importing(name):
    module = sys.modules.get(name)
    return getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_keras_objects():
    """Imports the modules of our Keras classes, unless one is importing.

    When `keras` was imported from inside one of our modules (or from
    TensorFlow's own import), that import chain is still running: the
    registration then happens once it is done (after TensorFlow's import,
    or at the next public name accessed).
    """
    if _importing("tensorflow") or _importing("keras") or any(
            _importing(key) for key in list(sys.modules)
            if key.startswith(__name__ + ".")):
        return False
    for module in _KERAS_OBJECT_MODULES:
        importlib.import_module(__name__ + module)
    return True


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Registers our Keras classes once `keras` (or TensorFlow) is imported.

    So `import keras_transformer` stays free of TensorFlow (the CLI answers
    `--help` at once), yet a `.keras` file of ours loads in any import
    order. Removes itself once the classes are registered.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ("keras", "tensorflow"):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader, self)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        # Mark the module as imported before registering (importlib clears
        # the flag only after this method returns).
        module.__spec__._initializing = False
        if _register_keras_objects() and self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)


if sys.modules.get("keras") is not None:
    _register_keras_objects()
elif "keras" not in sys.modules:
    sys.meta_path.insert(0, _AfterKerasImport())
