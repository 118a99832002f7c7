"""`tf.distribute` helpers: choose a strategy, find the chief, sum replicas.

Training code here uses TensorFlow directly only for what Keras 3 does not
wrap: the distribution strategy and a cross-replica sum.

Multi-worker training (`"multi_worker"`) reads the cluster from the
`TF_CONFIG` environment variable, for example on worker 0 of two:

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}'

Every worker runs the same command; the strategy must be created before
TensorFlow runs any other operation.

The strategies distribute only Keras' TensorFlow backend. Under JAX or
PyTorch, `"default"` (one device) still works; the others raise.
"""

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def get_strategy(
    name: str = "default", devices: list[str] | None = None
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: str, one of:
            - `"default"`: no distribution; one device (the first GPU if any).
            - `"mirrored"`: `tf.distribute.MirroredStrategy` over every
              local GPU (or the CPU when there is none); synchronous
              data parallelism on one machine.
            - `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy`,
              synchronous data parallelism over the machines listed in the
              `TF_CONFIG` environment variable, which must be set.
        devices: list of str or None, the devices of `"mirrored"` (e.g.
            `["/gpu:0", "/gpu:1"]`); None takes every local GPU. Only for
            `"mirrored"`.

    Returns:
        The strategy. Build and compile the model inside `strategy.scope()`.

    Example:
    >>> strategy = get_strategy("mirrored")
    >>> with strategy.scope():
    ...     model = build_transformer(config)
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"`name` must be one of {STRATEGIES}. Received: name={name!r}")
    if devices is not None:
        if name != "mirrored":
            raise ValueError(
                "`devices` applies only to `name='mirrored'`. "
                f"Received: devices={devices!r}, name={name!r}")
        if isinstance(devices, str) or not devices or not all(
                isinstance(device, str) for device in devices):
            raise TypeError(
                "`devices` must be a non-empty list of device names. "
                f"Received: devices={devices!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"`name` {name!r} is a tf.distribute strategy, which needs "
            "Keras' TensorFlow backend; this process runs Keras on "
            f"{keras.backend.backend()!r} (KERAS_BACKEND). Use 'default', "
            f"or keras.distribution on JAX. Received: name={name!r}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    _read_tf_config(required=True)
    return tf.distribute.MultiWorkerMirroredStrategy()


def _read_tf_config(required: bool = False) -> dict:
    """Returns the parsed `TF_CONFIG`, or `{}` when unset and not required."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        if required:
            raise ValueError(
                "`name='multi_worker'` needs the `TF_CONFIG` environment "
                "variable (cluster and task of this worker); use "
                "`name='mirrored'` for a single machine. "
                "Received: TF_CONFIG=None")
        return {}
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            "`TF_CONFIG` must be JSON with `cluster` and `task`. "
            f"Received: TF_CONFIG={text!r}") from error
    if not isinstance(tf_config, dict) or "cluster" not in tf_config:
        raise ValueError(
            "`TF_CONFIG` must be a JSON object with a `cluster` key. "
            f"Received: TF_CONFIG={text!r}")
    return tf_config


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the shared outputs of a run.

    True except on the workers of a multi-worker strategy other than the
    chief (task type "chief", or "worker" 0 when no chief is listed).
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in cluster)


def worker_run_dir(
    run_dir: str, strategy: tf.distribute.Strategy | None = None
) -> str:
    """Returns where this process writes: `run_dir` on the chief.

    Other workers of a multi-worker run write their own copies (which they
    need for their own backups) under `run_dir/workers/<task_id>`, so that
    they never overwrite the chief's files.
    """
    if is_chief(strategy):
        return run_dir
    resolver = strategy.cluster_resolver
    return os.path.join(
        run_dir, "workers", f"{resolver.task_type}-{resolver.task_id}")


def global_sum(value):
    """Sums `value` over the replicas in sync; identity outside a replica.

    Called inside `strategy.run` (as `model.fit` does), this is an
    all-reduce; in cross-replica or default context it returns `value`.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def prepare_for_multi_worker_fit(model, strategy) -> None:
    """Lets `model.fit` run under a multi-worker strategy (Keras 3.15 bugs).

    Keras 3.15's TensorFlow trainer fails at once under a multi-worker
    `MultiWorkerMirroredStrategy` (keras-team/keras#20329, #20585):
    1. Before the first step it builds the compiled loss and metrics from
       one batch, obtained by averaging the replicas' batches with
       `strategy.reduce`, which cannot reduce a nested `(inputs, labels)`
       batch across workers. The build needs only shapes and dtypes, so
       this worker's first replica's batch is used instead.
    2. After each step it averages the scalar metric results over the
       workers with `strategy.reduce("MEAN", value, axis=0)`, which fails
       on a scalar. The train and test steps here return each scalar as a
       vector of one element, whose mean along axis 0 over all replicas is
       the intended scalar.
    Both changes are made on this model instance only, and only under a
    multi-worker strategy; nothing changes otherwise.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    extended = strategy.extended

    def first_replica(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(first_replica,
                                                   next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def as_vectors(step):
        def step_with_vector_logs(data):
            return tf.nest.map_structure(
                lambda value: tf.reshape(value, [1])
                if value.shape.rank == 0 else value, step(data))

        return step_with_vector_logs

    if not extended._in_multi_worker_mode() or getattr(
            model, "_multi_worker_ready", False):
        return
    model._multi_worker_ready = True
    model._maybe_symbolic_build = maybe_symbolic_build
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)
