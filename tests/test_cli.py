"""The `keras-transformer` command end to end, and its error messages."""

import json
import os

import pytest

from keras_transformer.cli import main

pytestmark = pytest.mark.slow


def test_train_on_a_tiny_corpus(tmp_path, corpus_files, capsys):
    run = str(tmp_path / "run")
    argv = ["train", "--data", str(corpus_files["train"]), "--valid-data",
            str(corpus_files["validation"]), "--run", run, "--preset",
            "tiny", "--epochs", "1000", "--vocab-size", "400",
            "--batch-tokens", "2048", "--average-last", "2",
            "--time-budget", "25s", "--schedule", "linear",
            "--warmup-steps", "1", "--learning-rate", "0.002",
            "--set", "d_model=32", "--set", "max_length=40"]
    assert main(argv) == 0
    for name in ("config.json", "tokenizer.json", "source.model",
                 "target.model", "model.keras", "history.json",
                 "metrics.json", "samples.txt"):
        assert os.path.exists(os.path.join(run, name)), name
    assert os.listdir(os.path.join(run, "checkpoints"))
    assert os.listdir(os.path.join(run, "logs"))
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["d_model"] == 32 and config["max_length"] == 40
    assert (config["schedule"], config["learning_rate"],
            config["warmup_steps"]) == ("linear", 0.002, 1)
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert "700 of 700 pairs kept" in metrics["data"]["length"]
    assert "trained run written" in capsys.readouterr().out
    # 1,000 epochs do not fit in 25 seconds (the probe's compilation
    # counts in the budget: 15 s was too little on a loaded machine): the
    # decay was planned over the steps the budget allows (fewer than the
    # epochs'), and training
    # stopped at the budget, within a step, or when the plan was done.
    training = metrics["training"]
    assert training["stopped"] == "time_budget"
    assert training["time_budget"] == 25.0
    assert training["seconds_trained"] < 90.0
    assert (training["seconds_trained"] >= 25.0
            or training["steps"] == training["planned_steps"])
    assert training["steps"] <= training["planned_steps"]
    history = json.load(open(os.path.join(run, "history.json")))
    epochs = len(history["loss"])
    state = json.load(open(os.path.join(run, "checkpoints", "state.json")))
    steps_per_epoch = -(-700 // (2048 // 40))  # at most
    assert 1 < training["planned_steps"] < 1000 * steps_per_epoch
    assert 0 < training["steps"] and state["probe_step_seconds"] > 0
    assert epochs < 1000 and history["learning_rate"][-1] < 0.002
    # A finished run is not trained again: the same command returns it.
    assert main(argv) == 0
    capsys.readouterr()
    assert len(json.load(open(os.path.join(run, "history.json")))[
        "loss"]) == epochs

    # The same directory with another config is refused, naming the field.
    argv[argv.index("d_model=32")] = "d_model=64"
    assert main(argv) == 2
    assert "d_model" in capsys.readouterr().err


def test_translate_evaluate_export(trained_run, corpus_files, tmp_path,
                                  capsys):
    assert main(["translate", "--run", trained_run, "--greedy",
                 "twelve", "four hundred and five"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # one line a text, empty translations too
    assert main(["translate", "--run", trained_run, "--greedy",
                 "--jit-compile", "twelve", "four hundred and five"]) == 0
    assert capsys.readouterr().out.splitlines() == lines

    assert main(["translate", "--run", trained_run, "--nbest", "3",
                 "twelve"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert float(rows[0][1]) >= float(rows[1][1]) >= float(rows[2][1])

    text_file = tmp_path / "in.txt"
    text_file.write_text("twelve\n\nnine hundred\n", encoding="utf-8")
    plot = tmp_path / "attention.png"
    assert main(["translate", "--run", trained_run, "--file",
                 str(text_file), "--plot-attention", str(plot)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1] == ""
    assert plot.stat().st_size > 1000

    assert main(["evaluate", "--run", trained_run, "--data",
                 str(corpus_files["test"]), "--greedy"]) == 0
    assert "exact match" in capsys.readouterr().out
    metrics = json.load(open(os.path.join(trained_run, "metrics.json")))
    evaluation = metrics["evaluation"]
    assert evaluation["sentences"] == 100 and evaluation["beam_size"] == 1
    assert 0 <= evaluation["exact_match"] <= 1

    out_dir = tmp_path / "exported"
    assert main(["export", "--run", trained_run, "--format", "all",
                 "--out", str(out_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["saved_model"]["identical"] == \
        report["saved_model"]["comparisons"] > 0
    assert (out_dir / "saved_model" / "1" / "saved_model.pb").exists()
    check = report["onnx"]["verification"]
    assert check["sentences"] >= 50
    for mode in ("beam", "greedy"):
        assert check["identical"][mode] == check["sentences"]
        assert check["saved_model_identical"][mode] == check["sentences"]
        assert (out_dir / "onnx" / f"{mode}.onnx").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/no/such.tsv", "--run", "x"], "/no/such.tsv"),
    # The run's config (its task's search settings) is read first.
    (["translate", "--run", "/no/such/run", "hi"], "trained run directory"),
    (["evaluate", "--run", "/no/such/run", "--data", "bundled"],
     "trained run directory"),
    (["export", "--run", "/no/such/run", "--out", "x"],
     "trained run directory"),
    (["translate", "--run", ".", "--file", "/no/file.txt"],
     "trained run directory"),
    (["train", "--data", "bundled", "--run", "x", "--set", "layers=3"],
     "layers"),
    (["train", "--data", "bundled", "--run", "x", "--set", "d_model"],
     "FIELD=VALUE"),
])
def test_errors_are_one_line(argv, message, capsys, tmp_path,
                             monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative run directories land here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_export_beam_op_flag_reaches_the_export(trained_run, capsys,
                                               tmp_path):
    # The BeamSearch-op file is ONNX only: refused before any export.
    assert main(["export", "--run", trained_run, "--out", str(tmp_path),
                 "--format", "saved_model", "--ort-beam-search"]) == 2
    assert "`beam_op` applies to ONNX" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_unknown_preset_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "bundled", "--run", "x", "--preset",
              "huge"])
    assert exit_info.value.code == 2
    assert "huge" in capsys.readouterr().err


def test_translate_prints_no_tensorflow_start_up_lines(trained_run):
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items()
           if key != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run(
        [sys.executable, "-m", "keras_transformer.cli", "translate", "--run",
         trained_run, "--greedy", "twelve"], capture_output=True, text=True,
        env=env, check=True)
    assert run.stdout.count("\n") == 1  # one translation
    for line in ("absl::InitializeLog", "oneDNN", "cuda", "cpu_feature_guard",
                 "I0000", "E0000", "W0000"):
        assert line not in run.stderr, run.stderr
    # --verbose shows them.
    verbose = subprocess.run(
        [sys.executable, "-m", "keras_transformer.cli", "--verbose",
         "translate", "--run", trained_run, "--greedy", "twelve"],
        capture_output=True, text=True, env=env, check=True)
    assert "oneDNN" in verbose.stderr
    assert verbose.stdout == run.stdout
