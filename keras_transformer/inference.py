"""Kept for imports written before 0.2: see `keras_transformer.contract`."""

from keras_transformer.contract import SearchSettings  # noqa: F401
