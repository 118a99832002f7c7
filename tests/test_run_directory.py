"""RunDirectory: the one owner of a run directory's files."""

import dataclasses
import json
import os

import pytest

from keras_transformer import run_directory as files
from keras_transformer.config import TransformerConfig
from keras_transformer.run_directory import RunDirectory


def tiny_config():
    return TransformerConfig.from_preset(
        "tiny", source_vocab_size=20, target_vocab_size=20, d_model=32,
        dropout_rate=0.0)


def test_check_config(tmp_path):
    config = tiny_config()
    RunDirectory(tmp_path).check_config(config)  # no config.json: passes
    (tmp_path / "config.json").write_text(config.to_json())
    RunDirectory(tmp_path).check_config(config)
    other = dataclasses.replace(config, d_model=64, dropout_rate=0.2)
    with pytest.raises(ValueError, match="`config`") as error:
        RunDirectory(tmp_path).check_config(other)
    message = str(error.value)
    assert "d_model (saved 32, given 64)" in message
    assert "dropout_rate (saved 0.0, given 0.2)" in message
    assert "num_heads" not in message
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="`run_dir`"):
        RunDirectory(tmp_path).check_config(config)
    with pytest.raises(TypeError, match="`config`"):
        RunDirectory(tmp_path).check_config(config.to_dict())


def test_claim_writes_once_and_checks_once(tmp_path, monkeypatch):
    config = tiny_config()
    run = RunDirectory(tmp_path / "run")
    run.claim(config)
    assert run.read_config() == config
    reads = []
    monkeypatch.setattr(files, "read_json",
                        lambda path: reads.append(path) or {})
    run.check_config(config)  # claimed: no second read of config.json
    run.claim(config)
    assert reads == []
    with pytest.raises(ValueError, match="d_model"):
        RunDirectory(run).check_config(
            dataclasses.replace(config, d_model=64))


def test_atomic_json_and_metrics(tmp_path):
    run = RunDirectory(tmp_path)
    run.update_metrics({"a": 1})
    run.update_metrics({"b": "ü"})
    assert run.read_json(files.METRICS) == {"a": 1, "b": "ü"}
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    assert json.loads((tmp_path / files.METRICS).read_text("utf-8"))["b"] \
        == "ü"
    assert run.read_json(files.HISTORY, default=None) is None


def test_missing_files_name_the_run_dir(tmp_path):
    run = RunDirectory(tmp_path)
    with pytest.raises(FileNotFoundError, match="`run_dir`.*model.keras"):
        run.require(files.MODEL)
    with pytest.raises(FileNotFoundError, match="samples.txt"):
        run.read_samples()
    run.write_samples(["a  b", "c\td"])
    assert run.read_samples() == ["a b", "c d"]
    with pytest.raises(TypeError, match="`run_dir`"):
        RunDirectory(3)
