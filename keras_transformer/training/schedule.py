"""The learning-rate schedule and optimizer of the paper (section 5.3)."""

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


def make_optimizer(config: TransformerConfig) -> keras.optimizers.Adam:
    """Returns the paper's optimizer for `config` (section 5.3).

    Adam with beta_1 = 0.9, beta_2 = 0.98, epsilon = 1e-9, and the
    `TransformerSchedule(config.d_model, config.warmup_steps)` learning rate.

    Args:
        config: TransformerConfig, supplies `d_model` and `warmup_steps`.

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
        learning_rate=TransformerSchedule(config.d_model, config.warmup_steps),
        beta_1=ADAM_BETA_1,
        beta_2=ADAM_BETA_2,
        epsilon=ADAM_EPSILON,
    )
