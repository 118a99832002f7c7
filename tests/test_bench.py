"""The benchmark harness: a quick run end to end, and its arithmetic."""

import json

import keras
import numpy as np
import pytest

from keras_transformer.benchmarks import harness, ours, report, timing
from keras_transformer.config import TransformerConfig
from keras_transformer.model import build_transformer


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    metrics = {"quickstart": {
        "train_seconds": 321.0,
        "greedy": {"bleu": 88.5, "chrf": 95.1, "exact_match": 0.91,
                   "sentences": 200},
        "beam": {"bleu": 90.0, "chrf": 96.0, "exact_match": 0.95,
                 "sentences": 200}}}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return str(path)


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path, run_dir):
    pytest.importorskip("keras_hub")
    pytest.importorskip("ctranslate2")
    output = tmp_path / "out" / "RESULTS.md"
    lines = []
    results = harness.main(quick=True, output=str(output), run_dir=run_dir,
                           progress=lines.append)
    text = output.read_text()
    for section in report.SECTIONS + ("## Quality",):
        assert section in text, section
    assert "91.0%" in text  # the greedy exact match of metrics.json
    saved = json.loads((tmp_path / "out" / "RESULTS.json").read_text())
    assert saved["matmul"]["gflops_per_second"] > 0
    assert {r["peer"] for r in saved["training"]} == {
        "ours", "tutorial", "keras_hub"}
    for run in saved["training"]:
        assert "error" not in run, run
        assert run["target_tokens_per_second"] > 0
        assert run["peak_rss_bytes"] > 0
    expected = {(runtime, part["beam"], batch, length)
                for part in results["settings"]["decode_plan"]
                for runtime in part["runtimes"]
                for batch, length in part["points"]}
    measured = {(c["runtime"], c["beam"], c["batch"], c["length"])
                for c in saved["decoding"]}
    assert measured == expected, saved["unavailable"]
    for cell in saved["decoding"]:
        assert cell["seconds"]["median"] > 0
        assert cell["seconds"]["minimum"] <= cell["seconds"]["median"]
        # Forced length: no runtime stopped early.
        assert cell["output_length"] == cell["length"], cell
    assert saved["targets"] and all(
        t["ratio"] is None or t["ratio"] > 0 for t in saved["targets"])
    assert lines[-1].startswith("wrote ")


def test_matmul_parameter_count_matches_the_model():
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=40, target_vocab_size=50, num_layers=2,
        d_model=16, num_heads=2, d_ff=24, max_length=16)
    model = build_transformer(config)
    kernels = sum(int(np.prod(w.shape)) for w in model.weights
                  if w.path.endswith("kernel"))
    counts = ours.count_matmul_parameters(config)
    # The tied output projection is the 50 x 16 target embedding.
    assert counts["output_projection"] == 50 * 16
    assert counts["encoder"] + counts["decoder"] == kernels
    assert counts["encoder"] == 2 * (4 * 16 * 16 + 2 * 16 * 24)


def test_training_flops_formula():
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=10, target_vocab_size=10, num_layers=1,
        d_model=2, num_heads=1, d_ff=4, max_length=8)
    # P_enc = 4*4 + 2*2*4 = 32, P_dec = 8*4 + 16 = 48, P_out = 20;
    # B=3, S=5, T=7: 6 * (32*15 + 68*21) = 11448;
    # attention 12 * 3 * 2 * 1 * (25 + 49 + 35) = 7848.
    assert ours.training_flops(config, 3, 5, 7) == 11448 + 7848


def test_measure_repeats_disturbed_and_outlier_repeats(monkeypatch):
    # Scripted wall times and verdicts: no dependence on the real clock of
    # a busy machine.
    verdicts = iter([True, True] + [False] * 20)
    walls = iter([0.002] * 3 + [0.03] + [0.002] * 20)
    original = timing.DisturbanceProbe.stop

    def stop(self):
        original(self)
        return next(walls), next(verdicts)

    monkeypatch.setattr(timing.DisturbanceProbe, "stop", stop)
    result = timing.measure(lambda: None, repeats=4, warmup=1,
                            min_repeat_seconds=0.0)
    # Two disturbed repeats and the slow one (> 1.5x the median) redone.
    assert result.discarded == 3
    assert result.repeats == 4 and not result.noisy
    assert result.maximum < 0.02


def test_measure_flags_noise_when_every_repeat_is_disturbed(monkeypatch):
    monkeypatch.setattr(timing.DisturbanceProbe, "stop",
                        lambda self: (0.01, True))
    result = timing.measure(lambda: None, repeats=3, warmup=1,
                            min_repeat_seconds=0.0, max_attempts=5)
    assert result.noisy and result.repeats == 3 and result.discarded == 5


def _cell(runtime, mode, batch, length, seconds):
    return {"runtime": runtime, "mode": mode, "batch": batch,
            "length": length, "output_length": length,
            "seconds": {"median": seconds, "minimum": seconds,
                        "maximum": seconds, "noisy": False},
            "tokens_per_second": batch * length / seconds}


def test_targets_are_ratios_of_the_measured_figures():
    cells = [_cell("ours", "greedy", 1, 64, 0.2),
             _cell("ours_xla", "greedy", 1, 64, 0.1),
             _cell("hub_xla", "greedy", 1, 64, 0.15),
             _cell("ct2_float32", "greedy", 1, 64, 0.05),
             _cell("tutorial", "greedy", 1, 64, 0.6),
             _cell("ours", "greedy", 1, 128, 0.5),
             _cell("ours_xla", "greedy", 1, 128, 0.3),
             _cell("saved_model", "greedy", 1, 64, 0.3),
             _cell("onnx", "greedy", 1, 64, 0.25),
             _cell("onnx_int8", "greedy", 1, 64, 0.03),
             _cell("onnx_standard", "greedy", 1, 64, 0.04)]
    results = {
        "settings": {"decode_plan": [{"points": [(1, 64)]}],
                     "length_pair": [64, 128]},
        "decoding": cells, "matmul": {"gflops_per_second": 100.0},
        "training": [
            {"peer": "ours", "target_tokens_per_second": 3000.0,
             "gflops_per_second": 80.0},
            {"peer": "tutorial", "target_tokens_per_second": 2000.0},
            {"peer": "keras_hub", "target_tokens_per_second": 4000.0}]}
    targets = {t["target"]: t for t in report.evaluate_targets(results)}
    # Our fastest runtime at 64 tokens is the XLA Translator (0.1 s).
    hub = targets["greedy, batch 1: our fastest runtime faster than "
                  "keras-hub cached XLA"]
    assert hub["ratio"] == pytest.approx(1.5) and hub["met"] is True
    assert hub["detail"].startswith("ours, XLA")
    ct2 = targets["greedy, batch 1: our fastest runtime faster than "
                  "CTranslate2 float32"]
    assert ct2["ratio"] == pytest.approx(0.5) and ct2["met"] is False
    cache = targets["cached greedy >= 5x the no-cache loop, 64 tokens, "
                    "batch 1"]
    assert cache["ratio"] == pytest.approx(6.0) and cache["met"] is True
    # The 128/64 ratio is that of the runtime fastest at 128 tokens.
    length = targets["128-token decode <= 2.3x a 64-token decode, batch 1"]
    assert length["ratio"] == pytest.approx(3.0) and length["met"] is False
    onnx = targets["ONNX Runtime at least as fast as the SavedModel, "
                   "greedy, batch 1"]
    assert onnx["ratio"] == pytest.approx(1.2) and onnx["met"]
    assert targets["ONNX Runtime at least as fast as the SavedModel, beam, "
                   "batch 1"]["met"] is None
    assert targets["training >= 1.2x tutorial-style reference"][
        "ratio"] == pytest.approx(1.5)
    # The float32 portable runtimes against CTranslate2 (int8 apart).
    portable = targets["greedy, batch 1: our fastest float32 portable "
                       "runtime >= 1.2x CTranslate2 float32"]
    assert portable["ratio"] == pytest.approx(1.25) and portable["met"]
    assert portable["detail"].startswith(
        "ours, ONNX Runtime, standard operators")
    assert targets["beam 4, batch 1: our fastest float32 portable runtime "
                   ">= 1.2x CTranslate2 float32"]["met"] is None
    assert targets["training >= 1.2x keras-hub layers"]["met"] is False
    assert targets["training at >= 75% of the matmul ceiling"][
        "ratio"] == pytest.approx(0.8)


def test_read_quality(run_dir, tmp_path):
    quality = harness.read_quality(run_dir)
    assert quality["results"]["beam"]["exact_match"] == 0.95
    assert quality["train_seconds"] == 321.0
    assert harness.read_quality(str(tmp_path / "missing")) is None
    assert harness.read_quality(None) is None


def test_suppressed_end_token_never_wins():
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=300, target_vocab_size=300, num_layers=1,
        d_model=16, num_heads=2, d_ff=32, max_length=16)
    model = ours.build_model(config)
    ours.suppress_token(model, 3)
    ids = keras.ops.convert_to_tensor(
        np.random.default_rng(0).integers(4, 300, (8, 10)), "int32")
    logits = keras.ops.convert_to_numpy(
        model({"encoder_inputs": ids, "decoder_inputs": ids}))
    np.testing.assert_array_equal(logits[..., 3], 0.0)
    assert (logits.max(axis=-1) > 0).all()


def test_quality_section_rounds_and_states_the_time():
    results = {"quality": {
        "run_dir": "runs/quickstart", "train_seconds": 144.4,
        "total_seconds": 190.2,
        "results": {"greedy": {"bleu": 100.00000000000004, "chrf": 99.987,
                               "exact_match": 0.996, "sentences": 500}}}}
    text = "\n".join(report._quality(results))
    assert "| greedy | 99.6% | 100.00 | 99.99 | 500 |" in text
    assert "training 144 s" in text and "190 s" in text


def test_training_batches_follow_the_token_budget_and_real_lengths():
    from keras_transformer.benchmarks import train_speed

    settings = harness.quick_settings()
    settings.update(train_batch_tokens=256, train_batches=3)
    config = TransformerConfig.from_dict(settings["config"])
    batches = train_speed.training_batches(config, settings)
    assert len(batches) == 3
    for source, decoder_inputs, labels in batches:
        assert source.shape[0] * max(source.shape[1], labels.shape[1]) <= 256
        # Full: one more pair would not fit in the budget at its bucket's
        # length (the first bucket is 8 long; the longest pair of a later
        # one is at most 10% under its length).
        width = max(source.shape[1], labels.shape[1], 8)
        assert (source.shape[0] + 1) * width * 1.1 > 256
        assert decoder_inputs.shape == labels.shape
        assert (decoder_inputs[:, 0] == 2).all()  # [START]
    figures = train_speed.batch_figures(config, batches)
    assert 0 < figures["real_target_tokens"] <= figures[
        "padded_target_tokens"]
    # Reversed targets: the learnable task of the loss-agreement run.
    source, _, labels = train_speed.training_batches(
        config, settings, reverse=True, count=1)[0]
    row = source[0][source[0] > 3]
    np.testing.assert_array_equal(labels[0][:len(row)], row[::-1])


def test_sampled_lengths_follow_the_po_corpus():
    from keras_transformer.benchmarks import train_speed

    source, target = train_speed.sample_lengths(
        np.random.default_rng(0), 20000, max_length=256)
    assert 6 < source.mean() < 9 and np.median(source) <= 5
    assert (source >= 1).all() and (target >= 1).all()
    assert 0.9 < target.mean() / source.mean() < 1.3


@pytest.mark.slow
def test_training_rows_in_float32_and_bfloat16_and_loss_agreement():
    from keras_transformer.benchmarks import train_speed

    settings = harness.quick_settings()
    for precision in train_speed.PRECISIONS:
        result = train_speed.run_training("ours", False, settings, precision)
        assert result["precision"] == precision
        assert result["target_tokens_per_second"] > 0
        assert (result["padded_target_tokens_per_second"]
                >= result["target_tokens_per_second"])
    assert keras.config.dtype_policy().name == "float32"
    check = train_speed.loss_agreement(settings)
    assert set(check["losses"]) == set(train_speed.PRECISIONS)
    assert all(len(c) == settings["loss_steps"]
               for c in check["losses"].values())
    # Same weights, same first batch: the first losses nearly agree.
    first = check["first_loss"]
    assert abs(first["float32"] - first["mixed_bfloat16"]) < 0.1
    with pytest.raises(ValueError, match="`precision` must be one of"):
        train_speed.run_training("ours", False, settings, "float16")
