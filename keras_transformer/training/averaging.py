"""Checkpoint averaging (section 6.1 of the paper).

The paper's base models use "a single model obtained by averaging the last
5 checkpoints, which were written at 10-minute intervals" (big models: the
last 20). `train()` writes a checkpoint at the end of every epoch, or every
K steps, under the names below, and averages the last N when it finishes.
"""

import os
import re
from contextlib import nullcontext

import keras
import numpy as np

from keras_transformer.checks import check_positive_int

# Names of the checkpoint files `train()` writes (Keras `ModelCheckpoint`
# placeholders; epochs and batches count from 1).
EPOCH_CHECKPOINT = "epoch-{epoch:04d}.weights.h5"
STEP_CHECKPOINT = "epoch-{epoch:04d}-batch-{batch:06d}.weights.h5"
_CHECKPOINT_RE = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?\.weights\.h5$")


def checkpoint_paths(directory: str) -> list[str]:
    """Returns the checkpoint files in `directory`, oldest first.

    Only files named like `EPOCH_CHECKPOINT` or `STEP_CHECKPOINT` count; the
    order is by epoch, then by batch, an end-of-epoch file last in its
    epoch. A missing directory has no checkpoints.
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            "`directory` must be a path. "
            f"Received: directory={directory!r}")
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _CHECKPOINT_RE.match(name)
        if match:
            epoch = int(match.group(1))
            batch = float("inf") if match.group(2) is None else int(
                match.group(2))
            found.append(((epoch, batch), os.path.join(directory, name)))
    return [path for _, path in sorted(found)]


def average_checkpoints(model: keras.Model, paths: list[str]) -> keras.Model:
    """Sets `model`'s weights to the mean of the weights in `paths`.

    Every file is loaded into `model` in turn (`model.load_weights`), and
    each floating-point variable of `model.weights` is averaged in float64.
    Integer variables, and the optimizer state of a compiled model (its
    step count included), keep the values of the last file in `paths`.

    Args:
        model: keras.Model, built, with the architecture of the checkpoints.
        paths: list of str, `.weights.h5` files saved from such a model.

    Returns:
        `model`, now holding the averaged weights.

    Example:
    >>> paths = checkpoint_paths("runs/demo/checkpoints")[-5:]
    >>> average_checkpoints(model, paths)

    References:
        Vaswani et al., 2017, "Attention Is All You Need", section 6.1.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}")
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise ValueError(
            "`paths` must be a non-empty list of checkpoint files. "
            f"Received: paths={paths!r}")
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise ValueError(
            f"`paths` lists files that do not exist: {missing}. "
            f"Received: paths={paths!r}")
    build_optimizer(model)
    sums = None
    for path in paths:
        model.load_weights(path)
        values = [keras.ops.convert_to_numpy(v) for v in model.weights]
        if sums is None:
            sums = [v.astype(np.float64) for v in values]
        else:
            sums = [s + v for s, v in zip(sums, values)]
    averaged = [
        (s / len(paths)).astype(v.dtype)
        if np.issubdtype(v.dtype, np.floating) else v
        for s, v in zip(sums, values)
    ]
    model.set_weights(averaged)
    return model


def build_optimizer(model: keras.Model) -> None:
    """Creates the optimizer variables of a compiled model, if still missing.

    Loading a checkpoint restores the optimizer state only into an optimizer
    whose variables exist; this creates them in the model's strategy scope.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or optimizer.built:
        return
    strategy = getattr(model, "distribute_strategy", None)
    with strategy.scope() if strategy is not None else nullcontext():
        optimizer.build(model.trainable_variables)


def average_last_checkpoints(
    model: keras.Model, directory: str, num_checkpoints: int = 5
) -> list[str]:
    """Averages the last `num_checkpoints` checkpoints of `directory`.

    Fewer are averaged when fewer exist.

    Args:
        model: keras.Model, built, with the architecture of the checkpoints.
        directory: str, a directory of checkpoint files (see
            `checkpoint_paths`).
        num_checkpoints: int, how many of the newest files to average.
            Defaults to 5, the paper's value for base models.

    Returns:
        The files averaged, oldest first.
    """
    check_positive_int("num_checkpoints", num_checkpoints)
    paths = checkpoint_paths(directory)[-num_checkpoints:]
    if not paths:
        raise ValueError(
            "`directory` holds no checkpoint files. "
            f"Received: directory={directory!r}")
    average_checkpoints(model, paths)
    return paths
