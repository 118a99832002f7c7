"""Row-by-row parity of two runtimes' outputs: one checker, one report.

Every export verification (the SavedModel, the ONNX token and text graphs,
int8 ONNX, the BeamSearch-op graph, CTranslate2 ids and texts) runs a
runtime and a reference (the TensorFlow `Translator`, or the SavedModel)
on the same sentences, compares their outputs with `compare` and holds the
result to its thresholds with `check`. Pure Python and NumPy: runtimes
without TensorFlow use it too.

Two rows are identical when their outputs are equal and, where scores are
given, their scores are within `score_tolerance` (equal scores, -inf of an
empty beam included, are 0 apart). Outputs are strings (compared as they
are) or token-id rows, compared in the form `token_row` gives: trailing
`[PAD]` dropped, since runtimes pad a batch to different widths and
every runtime writes `[PAD]` after `[END]`.

The report, a JSON-ready dict (`compare` returns it, every verifier keeps
it under `parity`):

- `rows`: int, the rows compared;
- `identical`: int, the identical rows;
- `share`: float, `identical / rows` (1.0 for no rows);
- `min_agreement`: float in [0, 1], the share `check` requires (1: every
  row; 0: report only);
- `score_tolerance`: float, or None where scores are reported but not
  checked;
- `max_score_difference`: float, the largest score difference of the
  identical rows (0.0 for none), or None without scores;
- `mismatches`: the first `keep` rows that are not identical, each
  {"row", "input" (None unless `inputs` were given), "got", "expected",
  "got_score", "expected_score"} (scores None without scores).

Example:
>>> report = compare([[5, 3, 0]], [[5, 3]])
>>> report["identical"], report["share"]
(1, 1.0)
"""

import math

import numpy as np

from keras_transformer.checks import check_float, check_int
from keras_transformer.contract import SCORE_TOLERANCE
from keras_transformer.text.special_tokens import PAD_ID

MISMATCHES_KEPT = 5
_KEYS = ("rows", "identical", "share", "min_agreement", "score_tolerance",
         "max_score_difference", "mismatches")


def token_row(row) -> list[int]:
    """A token-id row as compared: a list of ints, trailing `[PAD]` dropped.

    Example:
    >>> token_row(np.array([7, 3, 0, 0]))
    [7, 3]
    """
    ids = [int(token) for token in np.asarray(row).reshape(-1)]
    while ids and ids[-1] == PAD_ID:
        ids.pop()
    return ids


def _output(value):
    """A row's output as compared: str or bytes as is, else a token row."""
    return value if isinstance(value, (str, bytes)) else token_row(value)


def _plain(value):
    """`value` as JSON can hold it (bytes as text, NumPy as Python)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _elided(value):
    return "None" if value is None else "[...]"


def _scores(name, scores, rows):
    if scores is None:
        return None
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) != rows:
        raise ValueError(
            f"`{name}` must hold one score per row ({rows}). Received: "
            f"{name} of {len(scores)} scores")
    return scores


def _settings(min_agreement, score_tolerance, keep):
    min_agreement = check_float("min_agreement", min_agreement, 0.0)
    if min_agreement > 1.0:
        raise ValueError(
            "`min_agreement` must be a share in [0, 1]. Received: "
            f"min_agreement={min_agreement}")
    if score_tolerance is not None:
        score_tolerance = check_float("score_tolerance", score_tolerance,
                                      0.0)
    return min_agreement, score_tolerance, check_int("keep", keep, 0,
                                                     optional=True)


def compare(got, expected, got_scores=None, expected_scores=None, *,
            inputs=None, min_agreement: float = 1.0,
            score_tolerance: float | None = SCORE_TOLERANCE,
            keep: int | None = MISMATCHES_KEPT) -> dict:
    """Compares two runtimes' outputs row by row; returns the report.

    Args:
        got: sequence of rows of the runtime checked: strings, or token-id
            rows (lists or arrays, padded or not).
        expected: the reference's rows, as many.
        got_scores: optional float per row of `got`; with
            `expected_scores`, or neither.
        expected_scores: optional float per row of `expected`.
        inputs: optional sequence, what each row translated (a text, or
            its source ids), kept with the mismatches.
        min_agreement: float in [0, 1], the share of identical rows
            `check` requires. Defaults to 1 (every row).
        score_tolerance: float >= 0, the largest score difference of an
            identical row, or None (scores reported, not checked).
            Defaults to `contract.SCORE_TOLERANCE`.
        keep: int >= 0, mismatches kept, or None for all. Defaults to 5.

    Returns:
        The report (the module docstring has its keys).

    Raises:
        ValueError: the arguments differ in length, or a threshold is
            out of range, naming the argument.
    """
    got, expected = list(got), list(expected)
    min_agreement, score_tolerance, keep = _settings(
        min_agreement, score_tolerance, keep)
    if len(expected) != len(got):
        raise ValueError(
            f"`expected` must hold one row per row of `got` ({len(got)}). "
            f"Received: expected of {len(expected)} rows")
    if (got_scores is None) != (expected_scores is None):
        raise ValueError(
            "Pass both `got_scores` and `expected_scores`, or neither. "
            f"Received: got_scores={_elided(got_scores)}, "
            f"expected_scores={_elided(expected_scores)}")
    got_scores = _scores("got_scores", got_scores, len(got))
    expected_scores = _scores("expected_scores", expected_scores,
                              len(expected))
    if inputs is not None and len(inputs) != len(got):
        raise ValueError(
            f"`inputs` must hold one input per row ({len(got)}). "
            f"Received: inputs of {len(inputs)}")
    identical, worst, mismatches = 0, 0.0, []
    for row, (a, b) in enumerate(zip(got, expected)):
        a, b = _output(a), _output(b)
        same = a == b
        difference = None
        if got_scores is not None:
            x, y = got_scores[row], expected_scores[row]
            difference = 0.0 if x == y else float(abs(x - y))
            if math.isnan(difference):
                difference = math.inf
            same = same and (score_tolerance is None
                             or difference <= score_tolerance)
        if same:
            identical += 1
            worst = max(worst, difference or 0.0)
        elif keep is None or len(mismatches) < keep:
            mismatches.append({
                "row": row,
                "input": None if inputs is None else _plain(inputs[row]),
                "got": _plain(a), "expected": _plain(b),
                "got_score": None if got_scores is None
                else float(got_scores[row]),
                "expected_score": None if expected_scores is None
                else float(expected_scores[row])})
    return {"rows": len(got), "identical": identical,
            "share": identical / len(got) if got else 1.0,
            "min_agreement": min_agreement,
            "score_tolerance": score_tolerance,
            "max_score_difference": None if got_scores is None else worst,
            "mismatches": mismatches}


def describe(mismatch: dict, subject: str = "the runtime",
             reference: str = "the reference") -> str:
    """One line for a mismatch of a report: the row and both outputs."""
    def output(name, value, score):
        text = f"{name} gives {value!r:.300}"
        return text if score is None else f"{text} with score {score:.6f}"

    source = mismatch.get("input")
    source = "" if source is None else f" ({source!r:.200})"
    got = output(subject, mismatch["got"], mismatch["got_score"])
    expected = output(reference, mismatch["expected"],
                      mismatch["expected_score"])
    return f"row {mismatch['row']}{source}: {got}, {expected}"


def check(report: dict, subject: str = "the runtime",
          reference: str = "the reference") -> dict:
    """Returns `report` if enough rows are identical, else raises.

    Args:
        report: a report of `compare`.
        subject: what was checked, for the message ("ONNX graph
            'beam.onnx'").
        reference: what it was checked against ("the Translator's
            translate").

    Raises:
        ValueError: `share` is below `min_agreement`, naming the argument
            (`score_tolerance` where the first difference is a score
            alone) and describing the first difference.
    """
    missing = [key for key in _KEYS if key not in report]
    if missing:
        raise ValueError(
            f"`report` must be a report of `compare`, lacking {missing}. "
            f"Received: report={report!r:.200}")
    if report["share"] >= report["min_agreement"]:
        return report
    argument = "min_agreement"
    first = "(not kept)"
    if report["mismatches"]:
        mismatch = report["mismatches"][0]
        first = describe(mismatch, subject, reference)
        if mismatch["got"] == mismatch["expected"]:
            argument = "score_tolerance"
            apart = abs(mismatch["got_score"] - mismatch["expected_score"])
            first += f", {apart:.2e} apart"
    rows, identical = report["rows"], report["identical"]
    raise ValueError(
        f"{subject[:1].upper()}{subject[1:]} differs from {reference} on "
        f"{rows - identical} of {rows} rows ({report['share']:.1%} "
        f"identical, fewer than min_agreement={report['min_agreement']}, "
        f"score_tolerance={report['score_tolerance']}); first difference, "
        f"{first}. Received: {argument}={report[argument]}")
