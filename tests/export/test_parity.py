"""Tests for export/parity.py: the one row-by-row checker (no model)."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from keras_transformer.contract import SCORE_TOLERANCE
from keras_transformer.export.parity import (
    MISMATCHES_KEPT,
    check,
    compare,
    describe,
    token_row,
)
from keras_transformer.text.special_tokens import END_ID, PAD_ID

KEYS = {"rows", "identical", "share", "min_agreement", "score_tolerance",
        "max_score_difference", "mismatches"}


def test_identical_rows_give_the_whole_report():
    ids = np.array([[5, 6, END_ID], [7, END_ID, PAD_ID]])
    report = compare(ids, ids.copy(), [-1.0, -2.0], [-1.0, -2.0])
    assert set(report) == KEYS
    assert report == {"rows": 2, "identical": 2, "share": 1.0,
                      "min_agreement": 1.0,
                      "score_tolerance": SCORE_TOLERANCE,
                      "max_score_difference": 0.0, "mismatches": []}
    assert check(report) is report
    json.dumps(report)


def test_trailing_padding_is_not_a_difference():
    assert token_row(np.array([5, END_ID, PAD_ID, PAD_ID])) == [5, END_ID]
    assert token_row([PAD_ID, PAD_ID]) == []
    got = np.array([[5, END_ID, PAD_ID, PAD_ID], [PAD_ID] * 4])
    expected = [[5, END_ID], []]
    assert compare(got, expected)["identical"] == 2
    # Padding inside a row, or a token after [END], is a difference.
    assert compare([[5, PAD_ID, END_ID]], [[5, END_ID]])["identical"] == 0
    assert compare([[5, END_ID, 9]], [[5, END_ID]])["identical"] == 0


def test_strings_are_compared_as_they_are():
    report = compare(["ein Haus", "", b"\xff"], ["ein Haus", " ", b"\xff"],
                     inputs=["a house", "", b"\xfe"])
    assert report["identical"] == 2 and report["share"] == 2 / 3
    assert report["max_score_difference"] is None
    assert report["mismatches"] == [{
        "row": 1, "input": "", "got": "", "expected": " ",
        "got_score": None, "expected_score": None}]
    json.dumps(compare([b"\xff"], [b"\xfe"], inputs=[b"\xfd"]))


def test_a_share_below_min_agreement_raises_and_above_passes():
    got = [[4, END_ID]] * 19 + [[5, END_ID]]
    expected = [[4, END_ID]] * 20
    above = compare(got, expected, min_agreement=0.95)
    assert above["share"] == 0.95 and check(above) is above
    below = compare(got, expected, min_agreement=0.96)
    with pytest.raises(ValueError, match=r"ONNX graph 'beam.onnx' differs "
                       r"from the Translator on 1 of 20 rows \(95.0% "
                       r"identical, fewer than min_agreement=0.96.*first "
                       r"difference, row 19: .*\[5, 3\].*\[4, 3\]. "
                       r"Received: min_agreement=0.96$"):
        check(below, "ONNX graph 'beam.onnx'", "the Translator")
    assert check(compare(got, expected, min_agreement=0.0))["share"] == 0.95


def test_scores_within_the_tolerance_are_identical():
    ids = [[4, END_ID]] * 3
    report = compare(ids, ids, [-1.0, -2.0, -math.inf],
                     [-1.0 - SCORE_TOLERANCE / 2, -2.0, -math.inf])
    assert report["identical"] == 3
    assert report["max_score_difference"] == pytest.approx(
        SCORE_TOLERANCE / 2)
    far = compare(ids, ids, [-1.0, -2.0, -3.0], [-1.0, -2.5, np.nan])
    assert far["identical"] == 1 and far["max_score_difference"] == 0.0
    assert [m["row"] for m in far["mismatches"]] == [1, 2]
    unchecked = compare(ids, ids, [-1.0, -2.0, -3.0], [-1.0, -2.5, -3.0],
                        score_tolerance=None)
    assert unchecked["identical"] == 3
    assert unchecked["max_score_difference"] == 0.5


def test_the_error_names_the_argument_and_the_first_difference():
    ids = [[4, END_ID], [6, END_ID]]
    score_only = compare(ids, ids, [-1.0, -2.0], [-1.5, -2.0],
                         inputs=["four", "six"])
    with pytest.raises(ValueError, match=r"(?s)row 0 \('four'\): the "
                       r"SavedModel gives \[4, 3\] with score -1.000000, "
                       r"the Translator gives \[4, 3\] with score "
                       r"-1.500000, 5.00e-01 apart. Received: "
                       r"score_tolerance=0.001$") as error:
        check(score_only, "the SavedModel", "the Translator")
    assert str(error.value).startswith("The SavedModel differs from")
    outputs = compare(ids, [[4, END_ID], [7, END_ID]], [-1.0, -2.0],
                      [-1.0, -2.0], min_agreement=0.5)
    with pytest.raises(ValueError, match="row 1: .*Received: min_agreement"):
        check(dict(outputs, min_agreement=1.0))
    assert describe(outputs["mismatches"][0], "a", "b") == (
        "row 1: a gives [6, 3] with score -2.000000, b gives [7, 3] with "
        "score -2.000000")


def test_mismatches_kept():
    got, expected = ["a"] * 9, ["b"] * 9
    assert len(compare(got, expected)["mismatches"]) == MISMATCHES_KEPT
    assert len(compare(got, expected, keep=None)["mismatches"]) == 9
    report = compare(got, expected, keep=0)
    assert report["mismatches"] == []
    with pytest.raises(ValueError, match=r"first difference, \(not kept\)"):
        check(report)


def test_empty_input_is_all_identical():
    report = compare([], [], [], [])
    assert report["rows"] == report["identical"] == 0
    assert report["share"] == 1.0 and report["max_score_difference"] == 0.0
    assert check(report) is report


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(expected=[[4]] * 2), ValueError, "`expected`.*expected of 2"),
    (dict(got_scores=[0.0]), ValueError,
     r"`got_scores` and `expected_scores`.*expected_scores=None"),
    (dict(got_scores=[0.0], expected_scores=[0.0, 1.0]), ValueError,
     "`expected_scores`.*of 2 scores"),
    (dict(inputs=["a", "b"]), ValueError, "`inputs`.*inputs of 2"),
    (dict(min_agreement=1.5), ValueError, "min_agreement=1.5"),
    (dict(min_agreement=-0.1), ValueError, "`min_agreement`"),
    (dict(min_agreement="all"), TypeError, "`min_agreement`"),
    (dict(score_tolerance=-1.0), ValueError, "`score_tolerance`"),
    (dict(keep=-1), ValueError, "`keep`")])
def test_bad_arguments_are_named(kwargs, error, match):
    arguments = {"got": [[4]], "expected": [[4]], **kwargs}
    with pytest.raises(error, match=match):
        compare(**arguments)


def test_check_rejects_another_dict():
    with pytest.raises(ValueError, match="`report`.*lacking"):
        check({"rows": 1})


def test_imports_no_tensorflow():
    code = ("import sys\nfrom keras_transformer.export import parity\n"
            "parity.check(parity.compare([[4, 3]], [[4, 3, 0]]))\n"
            "assert 'tensorflow' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
