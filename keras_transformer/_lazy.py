"""PEP 562 lazy attributes: a package's public names, imported on first use.

Packages whose modules import TensorFlow (or ONNX tooling) use it so that
importing the package itself stays light: `import keras_transformer.text`
or `import keras_transformer.export.onnx.runtime` imports no TensorFlow.
"""

import importlib
import sys
from collections.abc import Callable


def lazy_attributes(package: str, names: dict[str, str]
                    ) -> tuple[Callable, Callable]:
    """Returns the `__getattr__` and `__dir__` of `package`.

    Args:
        package: the package's `__name__`.
        names: public name -> the module defining it, relative to
            `package` (".runtime"); imported at first access, then cached
            in the package.
    """
    def __getattr__(name):
        if name not in names:
            raise AttributeError(
                f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
