"""`train()`: `model.fit` with the paper's recipe and a resumable run directory.

What `train()` writes under `run_dir` (the rest of a run directory,
vocabularies included, belongs to the CLI):

    config.json           the TransformerConfig (written if absent, when
                          `train()` is given a config; checked if present)
    checkpoints/          epoch-0001.weights.h5, ... (or per K steps), the
                          files that are averaged at the end
    checkpoints/backup/   `keras.callbacks.BackupAndRestore` state, removed
                          once model.keras is written
    checkpoints/state.json  {"precision": ...} from the start, and
                          {"finished": true, ...} once `fit` has ended
    logs/                 TensorBoard
    history.json          per-epoch metrics (and the precision of each
                          epoch), rewritten after every epoch
    model.keras           the final model, with averaged weights, float32
                          whatever the training precision

Resuming. Run the same call again after an interruption (even SIGKILL):
`BackupAndRestore` restores the weights and the optimizer state (so the
step count of the learning-rate schedule too) saved every `backup_every`
steps and at the end of each epoch, and `fit` goes on from the epoch that
was interrupted. Keras 3.15 restores the epoch number, not the position
inside the epoch: the interrupted epoch runs again from its first batch
(the dataset restarts), starting from the weights of the last backup. So
after a kill, the batches between the start of that epoch and its last
backup are trained on twice, and the run takes that many more steps.
A run whose `fit` has finished (all epochs, stopped early, or out of its
time budget) is never
trained again: a repeated call only completes what is missing (averaging,
model.keras) and returns the saved result. To train longer, use a new
`run_dir`.

A different config. If `run_dir/config.json` exists and differs from the
given config, `train()` raises a `ValueError` naming the differing fields
(see `RunDirectory.check_config`) before it touches anything: the
checkpoints of one model cannot resume another.

Time budget. With `time_budget` (seconds), training stops after the
first step that ends past the budget; that partial epoch is checkpointed
and validated like a whole one, the checkpoints are averaged as usual, and
the reason ("time_budget", "epochs" or "early_stopping") is stored in
checkpoints/state.json and under "training" in metrics.json. The seconds
already trained are saved with every backup, so a killed run resumes with
the rest of its budget. A config whose `schedule` is "linear" plans its
decay over the steps the budget allows: before training, a throwaway copy
of the model times `BUDGET_PROBE_STEPS` steps on the first batches, and
the plan is the fewer of the epochs' steps and 90% of the budget over that
step time. The probe misjudges the real step (other batch shapes, the
input pipeline, validation), so once the first epoch has ended the plan
is re-planned as training goes, from the step time measured since then
(see `_TimeBudget`; not on JAX). The plan is saved in
state.json and reused on resume, and training stops when the plan is done
(its rate is then zero), even with budget left.

Precision. `precision` ("float32", "mixed_bfloat16" or "mixed_float16";
see `training.precision`) is the Keras dtype policy the model is built and
compiled under; the global policy is restored afterwards. It is recorded
in checkpoints/state.json before `fit` starts, and a resumed run must ask
for the same one (else a `ValueError` naming `precision` and both values).
model.keras holds a float32 copy of the trained variables.
"""

import dataclasses
import importlib.util
import os
import shutil
import statistics
import time

import keras

from keras_transformer import run_directory as files
from keras_transformer.checks import check_float, is_int
from keras_transformer.config import TransformerConfig
from keras_transformer.model import build_transformer
from keras_transformer.run_directory import RunDirectory
from keras_transformer.training import averaging
from keras_transformer.training.distribute import (
    get_strategy,
    prepare_for_multi_worker_fit,
    worker_run_dir,
)
from keras_transformer.training.losses import (
    MaskedAccuracy,
    MaskedSparseCategoricalCrossentropy,
)
from keras_transformer.training.precision import (
    check_runnable,
    dtype_policy,
    float32_model,
    model_precision,
    resolve_precision,
)
from keras_transformer.training.schedule import (
    LinearDecaySchedule,
    make_optimizer,
)

# The batches a time budget's probe times (after an untimed pass over
# them), and the share of the budget the linear schedule plans for
# (validation passes and checkpoints take the rest).
BUDGET_PROBE_STEPS = 10
BUDGET_PLAN_SHARE = 0.9


def compile_transformer(model: keras.Model, config: TransformerConfig,
                        total_steps: int | None = None) -> keras.Model:
    """Compiles `model` with the paper's training recipe (sections 5.3, 5.4).

    Adam with the schedule `config.schedule` names (`make_optimizer(config,
    total_steps)`; "linear" needs the run's planned `total_steps`), the masked
    cross-entropy with `config.label_smoothing`, and `MaskedAccuracy`.
    Call it inside the strategy scope the model was built in. Under a
    "mixed_float16" model Keras wraps the optimizer in a
    `LossScaleOptimizer` (dynamic loss scaling); the loss is computed from
    the model's float32 logits in float32 under every policy.
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(
            "`config` must be a TransformerConfig. "
            f"Received: config={config!r}")
    model.compile(
        optimizer=make_optimizer(config, total_steps),
        loss=MaskedSparseCategoricalCrossentropy(
            label_smoothing=config.label_smoothing),
        metrics=[MaskedAccuracy()],
    )
    return model


def train(
    model_or_config: keras.Model | TransformerConfig,
    train_ds,
    valid_ds,
    run_dir: "str | RunDirectory",
    *,
    epochs: int,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    average_last: int | None = 5,
    checkpoint_every: int | str = "epoch",
    backup_every: int = 100,
    early_stopping_patience: int | None = None,
    strategy=None,
    callbacks: list | None = None,
    verbose: int | str = 0,
    precision: str | None = None,
    time_budget: float | None = None,
    initial_weights: str | None = None,
) -> tuple[keras.Model, dict[str, list]]:
    """Trains a Transformer with `model.fit`, resumably, into `run_dir`.

    Given a config, builds `build_transformer(config)` and compiles it with
    `compile_transformer` inside `strategy.scope()`, under the dtype policy
    `precision`; a given model must be compiled already (in the scope of
    the strategy it is to use, under its policy). Then
    fits with ModelCheckpoint, BackupAndRestore, TensorBoard, a
    history.json writer and optional EarlyStopping, averages the last
    `average_last` checkpoints (section 6.1 of the paper) and saves
    `run_dir/model.keras` (float32 whatever the precision). See the module
    docstring for the files, for resuming, for precision, and for what
    happens when `run_dir` holds another config or precision.

    Args:
        model_or_config: keras.Model (compiled) or TransformerConfig.
        train_ds: tf.data.Dataset of `({"encoder_inputs": (B, S),
            "decoder_inputs": (B, T)}, labels (B, T))`, pad id 0. With
            `steps_per_epoch`, make it repeat.
        valid_ds: the same for validation, or None.
        run_dir: str or `RunDirectory`, the run directory.
        epochs: int, the number of epochs.
        steps_per_epoch: int or None, batches per epoch; None runs through
            `train_ds` once per epoch.
        validation_steps: int or None, batches of `valid_ds` per
            validation.
        average_last: int or None, how many of the newest checkpoints to
            average into the final model (the paper: 5); None keeps the
            weights of the last step. Defaults to 5.
        checkpoint_every: "epoch" or int, write a checkpoint at the end of
            every epoch, or every that many steps. Defaults to "epoch".
        backup_every: int, steps between `BackupAndRestore` backups (also
            written at each epoch end). Defaults to 100.
        early_stopping_patience: int or None, stop after this many epochs
            without improvement of `val_loss` (`loss` without `valid_ds`).
            Defaults to None (never stop early).
        strategy: tf.distribute.Strategy or None (the default strategy,
            or the given model's). Non-chief workers of a multi-worker
            strategy write to `run_dir/workers/<task>` instead.
        callbacks: list of extra `keras.callbacks.Callback`, or None.
        verbose: the `verbose` of `model.fit`. Defaults to 0 (silent).
        precision: "float32", "mixed_bfloat16" or "mixed_float16", the
            Keras dtype policy to train in; "auto" (see
            `precision.resolve_precision`); or None: "float32" for a
            config, the given model's own policy for a model (an explicit
            one must match it). A resumed run must ask for the precision
            it was started with.
        time_budget: float or None, seconds of training (the probe of a
            linear schedule included) after which training stops; see the
            module docstring. None (the default) trains all `epochs`.
        initial_weights: str or None, a `.keras` model of the same config
            whose weights the model built from `model_or_config` (a
            config) starts from: fine-tuning, e.g. of an imported Marian
            model. A resumed run restores its backup over them. None (the
            default) starts from the initializers.

    Returns:
        `(model, history)`: the trained model (in its training precision)
        with its final (averaged) weights, and the per-epoch metrics of
        the whole run, as saved in history.json (a dict of lists, one
        entry per epoch; "precision" holds each epoch's precision).

    Example:
    >>> config = TransformerConfig.from_preset("tiny")
    >>> model, history = train(config, train_ds, valid_ds, "runs/tiny",
    ...                        epochs=10)
    """
    _check_train_args(run_dir, epochs, steps_per_epoch, validation_steps,
                      average_last, checkpoint_every, backup_every,
                      early_stopping_patience)
    if time_budget is not None and check_float("time_budget",
                                               time_budget) <= 0:
        raise ValueError(
            "`time_budget` must be a positive number of seconds or None. "
            f"Received: time_budget={time_budget!r}")
    if importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError(
            "`train()` writes TensorBoard logs and needs the `tensorboard` "
            "package: pip install tensorboard")
    run = RunDirectory(run_dir)
    if precision == "auto":
        precision = resolve_precision(precision, run)
    total_steps = max_steps = planned_steps(train_ds, epochs,
                                            steps_per_epoch)
    state = run.read_json(files.STATE, default={})
    spent = state.get("seconds_trained", 0.0)
    if (time_budget is not None and not state.get("finished")
            and isinstance(model_or_config, TransformerConfig)
            and model_or_config.schedule == "linear"):
        if "planned_steps" not in state:
            start = time.perf_counter()
            step_seconds = _probe_step_seconds(
                model_or_config, train_ds, strategy,
                check_runnable(precision or "float32"))
            spent += time.perf_counter() - start
            budget_steps = int(BUDGET_PLAN_SHARE * (time_budget - spent)
                               / step_seconds)
            if budget_steps <= model_or_config.warmup_steps:
                raise ValueError(
                    f"`time_budget` allows about {max(budget_steps, 0)} "
                    f"steps of {step_seconds:.3g} s, no more than "
                    f"`warmup_steps`={model_or_config.warmup_steps}: lower "
                    "`warmup_steps` or give more time. Received: "
                    f"time_budget={time_budget}")
            state.update(planned_steps=min(total_steps or budget_steps,
                                           budget_steps),
                         probe_step_seconds=round(step_seconds, 4),
                         seconds_trained=spent)
            run.write_json(files.STATE, state)
        total_steps = state["planned_steps"]
    if initial_weights is not None and not isinstance(model_or_config,
                                                      TransformerConfig):
        raise ValueError(
            "`initial_weights` applies to a model built from a config; load"
            " the weights into a given model yourself. Received: "
            f"initial_weights={initial_weights!r} with a keras.Model")
    model, strategy, precision = _prepare_model(
        model_or_config, run, strategy, precision, total_steps,
        initial_weights)
    out = RunDirectory(worker_run_dir(run.root, strategy))
    if out.root == run.root:
        run.claim_precision(precision)
    checkpoint_dir = out.path(files.CHECKPOINTS)
    os.makedirs(checkpoint_dir, exist_ok=True)
    history_path = out.path(files.HISTORY)
    model_path = out.path(files.MODEL)
    backup_dir = out.path(files.BACKUP)

    state = out.read_json(files.STATE, default={})
    averaging.build_optimizer(model)
    if state.get("finished") and os.path.exists(model_path):
        model.load_weights(model_path)
        return model, _read_history(history_path)
    if not state.get("finished"):
        early_stopping = None
        if early_stopping_patience is not None:
            early_stopping = keras.callbacks.EarlyStopping(
                monitor="val_loss" if valid_ds is not None else "loss",
                patience=early_stopping_patience)
        budget = (_TimeBudget(time_budget, spent, out, backup_every,
                              state.get("planned_steps"), max_steps)
                  if time_budget is not None else _RunClock(spent, out))
        checkpoint_name = (averaging.EPOCH_CHECKPOINT
                           if checkpoint_every == "epoch"
                           else averaging.STEP_CHECKPOINT)
        run_callbacks = [
            keras.callbacks.ModelCheckpoint(
                os.path.join(checkpoint_dir, checkpoint_name),
                save_weights_only=True, save_freq=checkpoint_every),
            _HistoryWriter(history_path, precision),
            keras.callbacks.TensorBoard(
                out.path(files.LOGS), write_graph=False,
                profile_batch=0),
            *([early_stopping] if early_stopping else []),
            budget,
            *(callbacks or []),
            _EpochEndBackup(backup_dir, save_freq=backup_every,
                            double_checkpoint=True, delete_checkpoint=False),
        ]
        prepare_for_multi_worker_fit(model, strategy)
        model.fit(train_ds, validation_data=valid_ds, epochs=epochs,
                  steps_per_epoch=steps_per_epoch,
                  validation_steps=validation_steps,
                  callbacks=run_callbacks, verbose=verbose, shuffle=False)
        stopped_early = bool(early_stopping
                             and early_stopping.stopped_epoch > 0)
        state = dict(out.read_json(files.STATE, default={}), **{
            "finished": True,
            "epochs_completed": len(_read_history(history_path).get(
                "loss", [])),
            "stopped_early": stopped_early,
            "stopped": ("time_budget" if budget.stopped
                        else "early_stopping" if stopped_early
                        else "epochs"),
            "steps": int(keras.ops.convert_to_numpy(
                model.optimizer.iterations)),
            "seconds_trained": round(budget.seconds(), 1),
            "precision": precision,
        })
        out.write_json(files.STATE, state)
        if out.root == run.root:
            run.update_metrics({"training": {
                key: state.get(key) for key in (
                    "stopped", "steps", "seconds_trained",
                    "epochs_completed", "planned_steps")}
                | {"time_budget": time_budget}})
    elif average_last is None:
        # Killed between the end of fit and model.keras: the backup holds
        # the weights of the last step.
        model.load_weights(os.path.join(backup_dir, "latest.weights.h5"))
    if average_last is not None:
        averaging.average_last_checkpoints(model, checkpoint_dir,
                                           average_last)
    out.save_model(float32_model(model))
    shutil.rmtree(backup_dir, ignore_errors=True)
    return model, _read_history(history_path)


def planned_steps(train_ds, epochs: int, steps_per_epoch: int | None
                  ) -> int | None:
    """The optimizer steps a run of `epochs` plans: `epochs` times
    `steps_per_epoch`, or times the batches of `train_ds` (its
    cardinality); None when that is unknown or infinite."""
    if steps_per_epoch is None:
        cardinality = getattr(train_ds, "cardinality", None)
        if cardinality is None:
            return None
        steps_per_epoch = int(cardinality())
        if steps_per_epoch < 1:  # tf.data's INFINITE (-1) or UNKNOWN (-2)
            return None
    return epochs * steps_per_epoch


def _probe_step_seconds(config, train_ds, strategy, precision,
                        steps=BUDGET_PROBE_STEPS):
    """The mean seconds of a training step of a throwaway copy of the
    model, on the first batches of `train_ds` (its weights are dropped)."""
    strategy = strategy or get_strategy("default")
    with strategy.scope(), dtype_policy(precision):
        model = build_transformer(config)
        compile_transformer(model, dataclasses.replace(config,
                                                       schedule="paper"))
    # The first `steps` batches twice: the first pass traces their shapes
    # (untimed), the second is timed; their mean step is the estimate
    # (batches of one token budget differ in shape, and in cost).
    batches = list(train_ds.take(steps))
    for inputs, labels in batches:
        model.train_on_batch(inputs, labels)
    times = []
    for inputs, labels in batches:
        start = time.perf_counter()
        model.train_on_batch(inputs, labels)
        times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def _prepare_model(model_or_config, run, strategy, precision, total_steps,
                   initial_weights=None):
    """Returns the compiled model, its strategy and its precision."""
    if isinstance(model_or_config, TransformerConfig):
        if model_or_config.schedule == "linear" and total_steps is None:
            raise ValueError(
                "`schedule='linear'` plans its decay over the run's steps, "
                "but `train_ds` has no known length: pass `steps_per_epoch`."
                " Received: steps_per_epoch=None")
        precision = check_runnable(precision or "float32")
        run.check_config(model_or_config)
        run.check_precision(precision)
        strategy = strategy or get_strategy("default")
        with strategy.scope(), dtype_policy(precision):
            model = build_transformer(model_or_config)
            if initial_weights is not None:
                model.load_weights(initial_weights)
            compile_transformer(model, model_or_config, total_steps)
        if worker_run_dir(run.root, strategy) == run.root:
            run.claim(model_or_config)
        return model, strategy, precision
    if not isinstance(model_or_config, keras.Model):
        raise TypeError(
            "`model_or_config` must be a keras.Model or a "
            f"TransformerConfig. Received: model_or_config={model_or_config!r}")
    if getattr(model_or_config, "optimizer", None) is None:
        raise ValueError(
            "`model_or_config` is a model that is not compiled; compile it "
            "(e.g. `compile_transformer(model, config)`) or pass the "
            f"TransformerConfig. Received: model_or_config={model_or_config}")
    built = model_precision(model_or_config)
    if precision is not None and check_runnable(precision) != built:
        raise ValueError(
            f"`precision` differs from the given model's dtype policy "
            f"{built!r}; build the model under the policy to train in, or "
            f"pass the config. Received: precision={precision!r}")
    run.check_precision(built)
    return (model_or_config,
            strategy or model_or_config.distribute_strategy, built)


def _check_train_args(run_dir, epochs, steps_per_epoch, validation_steps,
                      average_last, checkpoint_every, backup_every,
                      early_stopping_patience):
    if not isinstance(run_dir, (str, os.PathLike, RunDirectory)):
        raise TypeError(
            f"`run_dir` must be a path. Received: run_dir={run_dir!r}")
    checks = [("epochs", epochs, False), ("backup_every", backup_every, False),
              ("steps_per_epoch", steps_per_epoch, True),
              ("validation_steps", validation_steps, True),
              ("average_last", average_last, True),
              ("early_stopping_patience", early_stopping_patience, True)]
    if checkpoint_every != "epoch":
        checks.append(("checkpoint_every", checkpoint_every, False))
    for name, value, optional in checks:
        if optional and value is None:
            continue
        if not is_int(value):
            expected = "None or an int" if optional else "an int"
            if name == "checkpoint_every":
                expected = '"epoch" or an int'
            raise TypeError(
                f"`{name}` must be {expected}. Received: {name}={value!r}")
        minimum = 0 if name == "early_stopping_patience" else 1
        if value < minimum:
            raise ValueError(
                f"`{name}` must be at least {minimum}. "
                f"Received: {name}={value}")


class _RunClock(keras.callbacks.Callback):
    """Counts the seconds trained (`spent` of earlier attempts included)
    and saves them into state.json at each epoch end. Epoch hooks only: a
    batch hook would make Keras wait for every step's results."""

    def __init__(self, spent, run):
        super().__init__()
        self.spent, self.run = spent, run
        self.stopped = False
        self.start = time.perf_counter()

    def seconds(self):
        return self.spent + time.perf_counter() - self.start

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._save()

    def _save(self):
        state = self.run.read_json(files.STATE, default={})
        state["seconds_trained"] = round(self.seconds(), 1)
        self.run.write_json(files.STATE, state)


class _TimeBudget(_RunClock):
    """Stops `fit` after the first step that ends past `budget` seconds,
    or once the `planned_steps` of a budget's linear schedule are done;
    also saves the seconds trained every `save_every` steps, so that a
    resumed run knows what is left.

    With a plan, it re-plans the linear decay every `save_every` steps and
    at each epoch end once this attempt's first epoch has ended: the steps
    left are `BUDGET_PLAN_SHARE` of the budget left over the seconds per
    step measured since that first epoch end (validation and checkpoints
    included; the first epoch, which traces the batch shapes, is not),
    capped by `max_steps` (the epochs' steps) when known. The plan is
    saved in state.json. Not on JAX, whose compiled step keeps the plan it
    was traced with.
    """

    def __init__(self, budget, spent, run, save_every, planned_steps=None,
                 max_steps=None):
        super().__init__(spent, run)
        self.budget, self.save_every = budget, save_every
        self.planned_steps = planned_steps
        self.max_steps = max_steps
        self.window = None  # (seconds, step) at the first epoch end

    def on_train_batch_end(self, batch, logs=None):
        if (batch + 1) % self.save_every == 0:
            self._replan()
            self._save()
        done = self.seconds() >= self.budget
        if self.planned_steps is not None and not done:
            # The linear schedule planned for the budget is at zero.
            done = self._step() >= self.planned_steps
        if done:
            self.stopped = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.planned_steps is not None and self.window is None:
            self.window = (self.seconds(), self._step())
        self._replan()
        super().on_epoch_end(epoch, logs)

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _replan(self):
        schedule = _linear_schedule(self.model.optimizer)
        if (self.window is None or schedule is None or self.stopped
                or keras.backend.backend() == "jax"):
            return
        step, now = self._step(), self.seconds()
        if step - self.window[1] < 1:
            return
        step_seconds = (now - self.window[0]) / (step - self.window[1])
        plan = step + int(BUDGET_PLAN_SHARE * max(self.budget - now, 0.0)
                          / step_seconds)
        if self.max_steps is not None:
            plan = min(plan, self.max_steps)
        self.planned_steps = schedule.replan(max(plan, step + 1))

    def _save(self):
        state = self.run.read_json(files.STATE, default={})
        state["seconds_trained"] = round(self.seconds(), 1)
        if self.planned_steps is not None:
            state["planned_steps"] = self.planned_steps
        self.run.write_json(files.STATE, state)


def _linear_schedule(optimizer):
    """The optimizer's `LinearDecaySchedule` (inside a loss-scale
    wrapper too), or None."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, LinearDecaySchedule) else None


class _EpochEndBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that saves every `save_freq` steps and at epoch end.

    Keras' callback saves at either granularity, not both; saving at each
    epoch end as well means a kill between epochs loses no work.
    """

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.save_freq != "epoch":
            self._save_model()


class _HistoryWriter(keras.callbacks.Callback):
    """Rewrites history.json after every epoch, keeping earlier epochs.

    Also adds the learning rate reached at the end of the epoch to the logs
    (so TensorBoard and history.json show it), and the training precision
    to history.json's row (not to the logs: TensorBoard takes numbers).
    """

    def __init__(self, path, precision):
        super().__init__()
        self.path = path
        self.precision = precision

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        optimizer = self.model.optimizer
        if optimizer is not None and "learning_rate" not in logs:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                optimizer.learning_rate))
        # Entries from `epoch` on belong to an interrupted earlier attempt.
        rows = _history_rows(_read_history(self.path))[:epoch]
        rows.append({key: float(value) for key, value in logs.items()})
        rows[-1]["precision"] = self.precision
        keys = sorted({key for row in rows for key in row})
        files.write_json(self.path, {key: [row.get(key) for row in rows]
                                     for key in keys})


def _history_rows(history):
    length = max((len(values) for values in history.values()), default=0)
    return [{key: values[i] for key, values in history.items()
             if i < len(values) and values[i] is not None}
            for i in range(length)]


def _read_history(path):
    return files.read_json(path) if os.path.exists(path) else {}
