"""Mixed-precision training: the dtype policy of a run, and float32 saving.

`train(..., precision=...)` builds and compiles the model under one of
`checks.TRAINING_PRECISIONS`, Keras dtype policies:

    float32          everything in float32 (the default)
    mixed_bfloat16   float32 variables, bfloat16 computation: 1.65x faster
                     training than float32 on a CPU with AMX, the same loss
                     curve (benchmarks/RESULTS.md)
    mixed_float16    float32 variables, float16 computation; Keras'
                     `compile` wraps the optimizer in a `LossScaleOptimizer`
                     (dynamic loss scaling) because the model's policy is
                     "mixed_float16"

"auto" (`resolve_precision`; the default of `train_run` and the CLI) is
mixed_bfloat16 where bfloat16 is native (a GPU, or on TensorFlow a CPU
with AVX512-BF16 or AMX: `native_bfloat16`) and float32 elsewhere; a run
records the policy it resolved to, and resuming a run with "auto" takes
the recorded one.

The global policy is set only while the model is built and compiled
(`dtype_policy`), then restored: every layer keeps the policy it was built
with. Under either mixed policy the variables stay float32, so checkpoints
average as in float32 and `float32_model` copies the trained variables into
a float32 model: run_dir/model.keras, and every export made from it, is a
float32 model whatever the training precision.
"""

import contextlib
import logging

import keras

from keras_transformer.checks import check_training_precision

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags of native bfloat16 arithmetic (AVX512-BF16, AMX).
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Sets Keras' global dtype policy to `precision`, restores it after."""
    check_training_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_runnable(precision: str) -> str:
    """Checks that this machine can compute in `precision`; returns it.

    Unknown values are a ValueError naming `precision` and the choices. A
    tiny product in the policy's compute dtype runs on the default device;
    if it fails, a ValueError names `precision`. bfloat16 runs anywhere but
    is fast only with native support: without a GPU, a CPU that lacks
    AVX512-BF16 and AMX gets a logged note (float16 likewise is a GPU
    format; on a CPU it gets a note).
    """
    check_training_precision(precision)
    if precision == "float32":
        return precision
    compute = keras.dtype_policies.get(precision).compute_dtype
    try:
        x = keras.ops.ones((2, 2), dtype=compute)
        keras.ops.convert_to_numpy(
            keras.ops.softmax(keras.ops.matmul(x, x)))
    except Exception as error:  # noqa: BLE001 (any backend's failure)
        raise ValueError(
            f"`precision` {precision!r} cannot run on this machine: "
            f"{compute} computation failed under the "
            f"{keras.backend.backend()} backend ({error}). Use "
            f"precision='float32'. Received: precision={precision!r}"
        ) from error
    if _has_gpu():
        return precision
    flags = cpu_flags()
    if precision == "mixed_bfloat16" and flags is not None and not (
            set(BFLOAT16_CPU_FLAGS) & flags):
        logger.warning(
            "precision='mixed_bfloat16': this CPU has no native bfloat16 "
            "(no %s flag in /proc/cpuinfo), so bfloat16 is emulated and "
            "training may be slower than in float32.",
            " or ".join(BFLOAT16_CPU_FLAGS))
    elif precision == "mixed_float16":
        logger.warning(
            "precision='mixed_float16' on a CPU: float16 is meant for "
            "GPUs; on CPUs mixed_bfloat16 is usually the faster choice.")
    return precision


def resolve_precision(precision: str, run=None) -> str:
    """`precision`, with "auto" resolved: the precision `run` (a
    `RunDirectory`, or None) records, else mixed_bfloat16 on a GPU or, on
    the TensorFlow backend (where it was measured faster), a CPU with
    native bfloat16 (`native_bfloat16()`), else float32. Others are
    checked and returned."""
    if precision == "auto":
        recorded = run.read_precision() if run is not None else None
        if recorded is not None:
            return recorded
        fast = _has_gpu() or (native_bfloat16()
                              and keras.backend.backend() == "tensorflow")
        return "mixed_bfloat16" if fast else "float32"
    return check_training_precision(precision)


def native_bfloat16() -> bool:
    """Whether bfloat16 is computed natively here: on a GPU, or on a CPU
    with AVX512-BF16 or AMX (`BFLOAT16_CPU_FLAGS`)."""
    if _has_gpu():
        return True
    flags = cpu_flags()
    return bool(flags and set(BFLOAT16_CPU_FLAGS) & flags)


def cpu_flags() -> set[str] | None:
    """The CPU's flags from /proc/cpuinfo; None where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def _has_gpu() -> bool:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def model_precision(model: keras.Model) -> str:
    """The name of the dtype policy `model` was built with."""
    return keras.dtype_policies.get(model.dtype_policy).name


def float32_model(model: keras.Model) -> keras.Model:
    """`model` itself if float32, else a float32 copy of it.

    The copy is built from `model.get_config()` with the float32 policy
    (a `Transformer`'s config carries its policy) or, for a functional
    model, cloned layer by layer with the float32 policy; the (float32)
    variables are copied over. It is not compiled: it is what
    run_dir/model.keras holds.
    """
    if model_precision(model) == "float32":
        return model
    config = model.get_config()
    if (isinstance(config, dict) and "dtype" in config
            and "layers" not in config):
        copy = type(model).from_config(dict(config, dtype="float32"))
    else:
        copy = keras.models.clone_model(model, clone_function=_float32_layer)
    copy.set_weights(model.get_weights())
    return copy


def _float32_layer(layer):
    config = layer.get_config()
    if "dtype" in config:
        config = dict(config, dtype="float32")
    return layer.__class__.from_config(config)
