"""Each contract has one home: token ids, search settings, run files.

Every other module uses the same objects (imported, not redefined), and no
source file spells the values again.
"""

import pathlib
import re

import pytest

from keras_transformer import run_directory
from keras_transformer.text import special_tokens

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("keras_transformer", "export", "benchmarks")
                 for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("module_name", [
    "keras_transformer.masks", "keras_transformer.data",
    "keras_transformer.decoding", "keras_transformer.text",
])
def test_token_ids_are_the_one_definition(module_name):
    import importlib

    module = importlib.import_module(module_name)
    for name in ("PAD_ID", "START_ID", "END_ID", "UNK_ID"):
        if hasattr(module, name):
            assert getattr(module, name) is getattr(special_tokens, name)
    assert (special_tokens.PAD_ID, special_tokens.UNK_ID,
            special_tokens.START_ID, special_tokens.END_ID) == (0, 1, 2, 3)


def test_search_defaults_are_the_one_definition():
    from keras_transformer import decoding

    settings = inference.SearchSettings()
    assert (settings.beam_size, settings.length_penalty,
            settings.extra_length) == (4, 0.6, 50)  # paper, section 6.1
    assert decoding.DEFAULT_BEAM_SIZE is inference.DEFAULT_BEAM_SIZE
    assert decoding.DEFAULT_LENGTH_PENALTY is inference.DEFAULT_LENGTH_PENALTY
    assert decoding.DEFAULT_EXTRA_LENGTH is inference.DEFAULT_EXTRA_LENGTH


def _definitions(pattern):
    """(file, line) of every line of package code matching `pattern`."""
    found = []
    for path in SOURCES:
        for number, line in enumerate(path.read_text("utf-8").splitlines(),
                                      1):
            if re.search(pattern, line):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    return found


def test_no_other_module_defines_token_ids():
    assert _definitions(r"^\s*(PAD|UNK|START|END)_ID\b[\w, ]*=") == [
        "keras_transformer/text/special_tokens.py:2"]


def test_no_other_module_defines_search_defaults():
    found = _definitions(r"^DEFAULT_(BEAM_SIZE|LENGTH_PENALTY|EXTRA_LENGTH)"
                         r"\s*=")
    assert {place.split(":")[0] for place in found} == {
        "keras_transformer/inference.py"}


def test_run_file_names_are_spelled_in_one_module():
    names = [run_directory.CONFIG, run_directory.TOKENIZER,
             run_directory.MODEL, run_directory.HISTORY,
             run_directory.METRICS, run_directory.SAMPLES]
    pattern = "|".join(re.escape(f'"{name}"') for name in names)
    places = {place.split(":")[0] for place in _definitions(pattern)}
    assert places == {"keras_transformer/run_directory.py"}


def test_no_layer_is_looked_up_by_name():
    assert _definitions(r"get_layer\(") == []


def test_argument_checks_are_not_copied():
    # The pattern of a hand-written int check; keras_transformer.checks
    # holds the one implementation (modules that must stay free of the
    # package's imports may keep their own).
    found = _definitions(
        r"isinstance\(\w+, bool\) or not isinstance\(\w+, int\)")
    # Two checks of several values at once keep their own loop.
    allowed = {"keras_transformer/data/pipeline.py",
               "keras_transformer/training/trainer.py"}
    assert {place.split(":")[0] for place in found} <= allowed
