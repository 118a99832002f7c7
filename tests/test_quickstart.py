"""The quickstart's control flow: what it reports and stores.

Training, evaluation and export are replaced by fakes (each has tests of
its own); this checks that the figures reach metrics.json, where the
benchmark report reads them
(`keras_transformer.benchmarks.harness.read_quality`).
"""

import json
from types import SimpleNamespace

import pytest

from keras_transformer import export
from keras_transformer import quickstart as quickstart_module
from keras_transformer.benchmarks import harness
from keras_transformer.export.parity import compare


def _parity(identical, rows):
    """A parity report with `identical` of `rows` rows identical."""
    return compare(["a"] * rows, ["a"] * identical + ["b"] * (
        rows - identical), [0.0] * rows, [0.0] * rows)


def test_quickstart_stores_its_figures(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    calls = []

    def fake_train(data, run, **settings):
        calls.append(("train", data, settings["epochs"]))
        return SimpleNamespace(precision="float32")

    def fake_evaluate(run, data, beam_size=None):
        calls.append(("evaluate", beam_size))
        exact = 0.9 if beam_size == 1 else 0.95
        return {"bleu": 90.0 + beam_size, "chrf": 97.0,
                "exact_match": exact, "sentences": 500,
                "examples": [("twelve", "douze", "douze")]}

    def fake_export(run, out, fmt):
        calls.append(("export", fmt))
        return {"saved_model": {"path": out, "parity": _parity(3, 3)},
                "onnx": {"verification": {
                    "parity": {"beam": {"translator": _parity(2, 2),
                                        "saved_model": _parity(2, 2)}},
                    "text": {"parity": {"beam": {
                        "translator": _parity(2, 2),
                        "saved_model": _parity(1, 2)}}}},
                    "files": {"beam.onnx": 1e6, "beam_text.onnx": 1.2e6},
                    "nodes": {"beam": 10}}}

    monkeypatch.setattr(quickstart_module, "train_run", fake_train)
    monkeypatch.setattr(quickstart_module, "evaluate_run", fake_evaluate)
    monkeypatch.setattr(export, "export_run", fake_export)
    lines = []
    results = quickstart_module.quickstart(str(run_dir), epochs=2,
                                           report=lines.append)

    assert calls == [("train", "bundled:fr", 2), ("evaluate", 1),
                     ("evaluate", 4), ("export", "all")]
    stored = json.loads((run_dir / "metrics.json").read_text())["quickstart"]
    assert stored["greedy"]["exact_match"] == 0.9
    assert stored["beam"]["bleu"] == 94.0
    assert "examples" not in stored["beam"]
    assert stored["total_seconds"] >= stored["train_seconds"] >= 0
    assert stored["train_seconds"] == results["train_seconds"]
    assert any("exact match  90.0%" in line for line in lines)
    assert any("(float32)" in line for line in lines)
    assert any("beam_text" in line and "SavedModel 1/2" in line
               for line in lines)
    assert any(line.endswith("3/3 outputs identical in a fresh process "
                             "(max score difference 0.0e+00)")
               for line in lines)

    quality = harness.read_quality(str(run_dir))
    assert set(quality["results"]) == {"greedy", "beam"}
    assert quality["total_seconds"] == stored["total_seconds"]


def test_summarization_quickstart_scores_the_baselines(tmp_path,
                                                       monkeypatch):
    from keras_transformer.data import debian_corpus
    from keras_transformer.evaluation import evaluate_summaries

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    calls = []

    def fake_train(data, run, **settings):
        calls.append(("train", data, settings["preset"], settings["epochs"]))
        return SimpleNamespace(precision="mixed_bfloat16")

    def fake_evaluate(run, data):
        calls.append(("evaluate", data))
        return {"rouge1": 40.0, "rouge2": 20.0, "rougeL": 39.0,
                "summary_words": 6.0, "reference_words": 6.6,
                "sentences": 3, "beam_size": 4, "task": "summarization",
                "examples": [("a b c", "a b", "a c")]}

    def fake_export(run, out, fmt):
        calls.append(("export", fmt))
        return {"saved_model": {"path": out, "parity": _parity(1, 1)},
                "onnx": {"verification": {
                    "parity": {}, "text": {"parity": {}}},
                    "files": {}, "nodes": {}}}

    monkeypatch.setattr(quickstart_module, "train_run", fake_train)
    monkeypatch.setattr(quickstart_module, "evaluate_run", fake_evaluate)
    monkeypatch.setattr(export, "export_run", fake_export)
    lines = []
    results = quickstart_module.summarization_quickstart(
        str(run_dir), epochs=1, report=lines.append)
    assert calls == [("train", "bundled:debian", "summarization", 1),
                     ("evaluate", "bundled:debian"), ("export", "all")]
    test = debian_corpus("test")
    # The baselines score the real test split: Lead-1, and the first 7
    # words (the mean training synopsis length, rounded).
    lead = [text.split(". ")[0] + "." for text in test.sources]
    assert results["first_sentence"]["num_documents"] == len(test)
    assert results["first_sentence"]["rouge1"] == pytest.approx(
        evaluate_summaries(lead, test.targets)["rouge1"], abs=0.5)
    assert results["first_words"]["rouge1"] == pytest.approx(
        evaluate_summaries([" ".join(t.split()[:7]) for t in test.sources],
                           test.targets)["rouge1"])
    stored = json.loads((run_dir / "metrics.json").read_text())["quickstart"]
    assert stored["model"]["rouge1"] == 40.0
    assert stored["first_words"]["rouge1"] == results["first_words"][
        "rouge1"] > 0
    assert 5 <= stored["first_words"]["summary_words"] <= 8
    assert any("first sentence" in line for line in lines)
    assert any("(mixed_bfloat16)" in line for line in lines)
