"""`RunDirectory`: the one owner of a trained run directory's files.

A run directory holds everything needed to use a model again:

    config.json          the TransformerConfig (and the task)
    tokenizer.json       the tokenizer options and model files
    source.model, target.model   the SentencePiece models
    model.keras          the final (checkpoint-averaged) model
    checkpoints/         epoch checkpoints, the BackupAndRestore state
                         (checkpoints/backup/) and checkpoints/state.json
                         (the training precision; whether `fit` finished)
    logs/                TensorBoard
    history.json         per-epoch metrics
    metrics.json         data statistics and evaluations
    samples.txt          held-out sources to verify exports with

Every file name is defined in `keras_transformer.contract` and used here,
JSON is written atomically (a kill leaves the old file or the new one,
never half of one), and the config check runs once per training
(`claim`); the training precision is checked and recorded likewise
(`check_precision`, `claim_precision`). Pure Python: no TensorFlow import.
"""

import json
import os
from typing import Any

from keras_transformer.config import TransformerConfig
from keras_transformer.contract import (  # noqa: F401 (this module's names)
    CHECKPOINTS,
    CONFIG,
    HISTORY,
    LOGS,
    METRICS,
    MODEL,
    SAMPLES,
    SOURCE_MODEL,
    TARGET_MODEL,
    TOKENIZER,
)

BACKUP = os.path.join(CHECKPOINTS, "backup")
STATE = os.path.join(CHECKPOINTS, "state.json")

_MISSING = object()


def write_json(path: str, value: Any) -> None:
    """Writes JSON atomically: a kill leaves the old file or the new one."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2, sort_keys=True, ensure_ascii=False)
    os.replace(temporary, path)


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


class RunDirectory:
    """Paths and atomic reads/writes of one run directory.

    Args:
        path: str or os.PathLike, the directory (created on first write).

    Example:
    >>> run = RunDirectory("runs/quickstart")
    >>> run.path(MODEL)
    'runs/quickstart/model.keras'
    """

    def __init__(self, path: "str | os.PathLike | RunDirectory"):
        if isinstance(path, RunDirectory):
            path = path.root
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"`run_dir` must be a path. Received: run_dir={path!r}")
        self.root = os.fspath(path)
        self._claimed = None

    def __repr__(self):
        return f"RunDirectory({self.root!r})"

    def path(self, name: str) -> str:
        """The path of `name` (one of this module's file names)."""
        return os.path.join(self.root, name)

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def require(self, name: str, what: str = "a trained run directory") -> str:
        """The path of `name`; FileNotFoundError naming `run_dir` if absent.
        """
        path = self.path(name)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"`run_dir` is not {what}: {name} is missing. "
                f"Received: run_dir={self.root!r}")
        return path

    def read_json(self, name: str, default: Any = _MISSING) -> Any:
        """Reads a JSON file; `default` when it is absent (else an error)."""
        if default is not _MISSING and not self.exists(name):
            return default
        return read_json(self.require(name))

    def write_json(self, name: str, value: Any) -> None:
        write_json(self.path(name), value)

    # -- the config --------------------------------------------------------

    def read_config(self) -> TransformerConfig:
        return TransformerConfig.from_dict(self.read_json(CONFIG))

    def check_config(self, config: TransformerConfig) -> None:
        """Raises `ValueError` if the saved config differs from `config`.

        A missing config.json passes. The error names every differing field
        with its saved and given values.
        """
        if not isinstance(config, TransformerConfig):
            raise TypeError(
                "`config` must be a TransformerConfig. "
                f"Received: config={config!r}")
        if self._claimed == config or not self.exists(CONFIG):
            return
        saved = self.read_json(CONFIG)
        if not isinstance(saved, dict):
            raise ValueError(
                f"`run_dir` holds a {CONFIG} that is not a JSON object. "
                f"Received: run_dir={self.root!r}")
        given = config.to_dict()
        differences = [
            f"{key} (saved {saved.get(key, _MISSING)!r}, given "
            f"{given.get(key, _MISSING)!r})".replace(repr(_MISSING),
                                                     "nothing")
            for key in sorted(set(saved) | set(given))
            if saved.get(key, _MISSING) != given.get(key, _MISSING)]
        if differences:
            raise ValueError(
                f"`config` differs from the run's {CONFIG} in: "
                f"{', '.join(differences)}. Use a new `run_dir`, or the "
                f"saved config to resume. Received: run_dir={self.root!r}")

    def claim(self, config: TransformerConfig) -> None:
        """Checks `config` against the saved one, then writes it if absent.

        Later checks of the same config on this object pass at once, so a
        training checks its config once however many layers ask.
        """
        self.check_config(config)
        if not self.exists(CONFIG):
            self.write_json(CONFIG, config.to_dict())
        self._claimed = config

    # -- the training precision ------------------------------------------

    def read_precision(self) -> str | None:
        """The precision the run trains in (state.json); None if unknown."""
        state = self.read_json(STATE, default={})
        return state.get("precision") if isinstance(state, dict) else None

    def check_precision(self, precision: str) -> None:
        """Raises `ValueError` if the run records another precision.

        A run that records none (not started, or older than the record)
        passes. The error names `precision` with its saved and given
        values.
        """
        saved = self.read_precision()
        if saved is not None and saved != precision:
            raise ValueError(
                f"`precision` differs from the run's: saved {saved!r}, "
                f"given {precision!r}. Use a new `run_dir`, or "
                f"precision={saved!r} to resume. "
                f"Received: run_dir={self.root!r}, precision={precision!r}")

    def claim_precision(self, precision: str) -> None:
        """Checks `precision` against the saved one, then records it.

        A finished run that records none (older than the record) is left
        as it is: its precision is unknown.
        """
        self.check_precision(precision)
        state = self.read_json(STATE, default={})
        if "precision" not in state and not state.get("finished"):
            self.write_json(STATE, dict(state, precision=precision))

    # -- metrics and samples -----------------------------------------------

    def update_metrics(self, values: dict) -> None:
        """Merges `values` into metrics.json (created if missing)."""
        metrics = self.read_json(METRICS, default={})
        metrics.update(values)
        self.write_json(METRICS, metrics)

    def write_samples(self, sources: list[str], count: int = 64) -> None:
        """Keeps a few held-out sources to verify exports with."""
        os.makedirs(self.root, exist_ok=True)
        with open(self.path(SAMPLES), "w", encoding="utf-8") as file:
            file.writelines(" ".join(s.split()) + "\n"
                            for s in sources[:count])

    def read_samples(self, limit: int = 64) -> list[str]:
        path = self.require(SAMPLES, "a run directory with held-out samples")
        with open(path, encoding="utf-8") as file:
            return [line.rstrip("\n") for line in file][:limit]

    def save_model(self, model, name: str = MODEL) -> str:
        """Saves a Keras model atomically (a temporary file, then rename)."""
        path = self.path(name)
        temporary = f"{path[:-len('.keras')]}.tmp.keras"
        model.save(temporary)
        os.replace(temporary, path)
        return path
