"""Learning-rate schedules and the optimizer (the paper's section 5.3).

`TransformerSchedule` is the paper's eq. 3. Its inverse square-root decay
is made for 100,000 steps: a run of a few thousand ends near its peak.
`LinearDecaySchedule` plans the decay over the steps a run will take: a
linear warm-up, then a linear decay to zero at the last planned step.
`make_optimizer(config, total_steps)` picks one by `config.schedule`.
"""

import keras

from keras_transformer.checks import check_positive_int
from keras_transformer.config import TransformerConfig

# Adam hyperparameters of section 5.3.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.98
ADAM_EPSILON = 1e-9


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then inverse square-root decay (section 5.3, eq. 3).

    `lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)`

    The rate grows linearly for the first `warmup_steps` steps and then
    decays as `1 / sqrt(step)`; its peak, reached at `step == warmup_steps`,
    is `(d_model * warmup_steps)^-0.5`.

    The paper counts steps from 1, while a Keras optimizer calls its
    schedule with `optimizer.iterations`, which counts from 0. The schedule
    therefore evaluates eq. 3 at `step = iterations + 1`: `schedule(0)` is
    the rate of the paper's first step, and the rate is never zero.

    Args:
        d_model: int, the model width of eq. 3.
        warmup_steps: int, the number of warm-up steps. Defaults to 4000
            (the paper's value).

    Call arguments:
        iterations: int scalar tensor, the optimizer's 0-based step count.

    Returns:
        A float32 scalar, the learning rate for step `iterations + 1`.

    Example:
    >>> schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    >>> float(schedule(3999))  # the peak, at paper step 4000
    0.000698...

    References:
        Vaswani et al., 2017, "Attention Is All You Need", section 5.3.
    """

    def __init__(self, d_model: int, warmup_steps: int = 4000):
        check_positive_int("d_model", d_model)
        check_positive_int("warmup_steps", warmup_steps)
        self.d_model = d_model
        self.warmup_steps = warmup_steps

    def __call__(self, iterations):
        # The paper's step counts from 1; `iterations` counts from 0.
        step = keras.ops.cast(iterations, "float32") + 1.0
        decay = keras.ops.rsqrt(step)
        warmup = step * float(self.warmup_steps) ** -1.5
        return float(self.d_model) ** -0.5 * keras.ops.minimum(decay, warmup)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="keras_transformer")
class LinearDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then linear decay to zero at `total_steps`.

    With steps counted from 1 (`step = iterations + 1`, as in
    `TransformerSchedule`):

        rate = peak * step / warmup_steps                  step <= warmup
        rate = peak * (total_steps + 1 - step)
                    / (total_steps + 1 - warmup_steps)     warmup < step
        rate = 0                                           step > total

    so the last planned step still learns (at peak / (total_steps + 1 -
    warmup_steps)) and the weights it ends with are those of a rate that
    went to zero, which a short run needs more than averaging.

    `replan(total_steps)` moves the end of the decay while training runs:
    the plan is a variable that the traced train step reads at every step
    (tested on TensorFlow; a JAX train step is compiled with the value it
    saw when it was traced). `train()` re-plans a time budget's
    decay from the measured step time.

    Args:
        peak: float, the rate at step `warmup_steps`.
        warmup_steps: int, the steps of the linear warm-up.
        total_steps: int, the planned steps of the run; more than
            `warmup_steps`.

    Call arguments:
        iterations: int scalar tensor, the optimizer's 0-based step count.

    Returns:
        A float32 scalar, the learning rate for step `iterations + 1`.

    Example:
    >>> schedule = LinearDecaySchedule(1e-3, warmup_steps=10,
    ...                                total_steps=110)
    >>> [round(float(schedule(i)), 6) for i in (0, 9, 59, 109, 110)]
    [0.0001, 0.001, 0.000505, 1e-05, 0.0]
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int):
        if not isinstance(peak, (int, float)) or isinstance(peak, bool) \
                or not peak > 0:
            raise ValueError(
                f"`peak` must be a positive number. Received: peak={peak!r}")
        check_positive_int("warmup_steps", warmup_steps)
        check_positive_int("total_steps", total_steps)
        if total_steps <= warmup_steps:
            raise ValueError(
                "`total_steps` (the steps the run plans) must be more than "
                f"`warmup_steps`={warmup_steps}; lower `warmup_steps` or "
                f"train longer. Received: total_steps={total_steps}")
        self.peak = float(peak)
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self._planned = keras.Variable(
            float(total_steps), dtype="float32", trainable=False,
            name="planned_steps")

    def replan(self, total_steps: int) -> int:
        """Moves the last planned step to `total_steps` (at least
        `warmup_steps + 1`); returns the plan it set."""
        check_positive_int("total_steps", total_steps)
        self.total_steps = max(int(total_steps), self.warmup_steps + 1)
        self._planned.assign(float(self.total_steps))
        return self.total_steps

    def __call__(self, iterations):
        step = keras.ops.cast(iterations, "float32") + 1.0
        total = keras.ops.cast(self._planned, "float32")
        warmup = step / float(self.warmup_steps)
        decay = ((total + 1.0 - step)
                 / (total + 1.0 - float(self.warmup_steps)))
        fraction = keras.ops.clip(keras.ops.minimum(warmup, decay), 0.0, 1.0)
        return self.peak * fraction

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def peak_learning_rate(config: TransformerConfig) -> float:
    """`config.learning_rate`, or the paper's peak (d_model * warmup)^-0.5.
    """
    if config.learning_rate is not None:
        return config.learning_rate
    return float(config.d_model * config.warmup_steps) ** -0.5


def make_schedule(config: TransformerConfig, total_steps: int | None = None
                  ) -> keras.optimizers.schedules.LearningRateSchedule:
    """The learning-rate schedule `config.schedule` names.

    "paper": `TransformerSchedule(config.d_model, config.warmup_steps)`,
    scaled so that its peak is `config.learning_rate` when that is set.
    "linear": `LinearDecaySchedule(peak_learning_rate(config),
    config.warmup_steps, total_steps)`; `total_steps` is then required.
    """
    if config.schedule == "linear":
        if total_steps is None:
            raise ValueError(
                "`total_steps` is required by `schedule='linear'`, which "
                "decays to zero at the run's last planned step. "
                "Received: total_steps=None")
        return LinearDecaySchedule(peak_learning_rate(config),
                                   config.warmup_steps, total_steps)
    schedule = TransformerSchedule(config.d_model, config.warmup_steps)
    if config.learning_rate is not None:
        paper_peak = float(config.d_model * config.warmup_steps) ** -0.5
        schedule = ScaledSchedule(schedule, config.learning_rate / paper_peak)
    return schedule


@keras.saving.register_keras_serializable(package="keras_transformer")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Another schedule times a constant `scale`."""

    def __init__(self, schedule, scale: float):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.scale = float(scale)

    def __call__(self, iterations):
        return self.scale * self.schedule(iterations)

    def get_config(self) -> dict:
        return {"schedule": keras.optimizers.schedules.serialize(
            self.schedule), "scale": self.scale}


def make_optimizer(config: TransformerConfig,
                   total_steps: int | None = None) -> keras.optimizers.Adam:
    """Returns the optimizer for `config` (the paper's section 5.3).

    Adam with beta_1 = 0.9, beta_2 = 0.98, epsilon = 1e-9, and the
    learning rate of `make_schedule(config, total_steps)`: by default the
    paper's `TransformerSchedule(config.d_model, config.warmup_steps)`.

    Args:
        config: TransformerConfig, supplies `d_model`, `warmup_steps`,
            `schedule` and `learning_rate`.
        total_steps: int or None, the steps the run plans; required by
            `config.schedule == "linear"`, ignored by "paper".

    Returns:
        A new `keras.optimizers.Adam`.

    Example:
    >>> config = TransformerConfig.from_preset("tiny")
    >>> optimizer = make_optimizer(config)

    References:
        Vaswani et al., 2017, "Attention Is All You Need", section 5.3.
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(
            "`config` must be a TransformerConfig. "
            f"Received: config={config!r}")
    return keras.optimizers.Adam(
        learning_rate=make_schedule(config, total_steps),
        beta_1=ADAM_BETA_1,
        beta_2=ADAM_BETA_2,
        epsilon=ADAM_EPSILON,
    )
