"""The searches' one backend seam: the few tensor operations they use.

`greedy_search`, `beam_search` and their helpers are written once, against
the namespace `backend_ops()` returns:

- `TensorFlowOps` on Keras' TensorFlow backend: the very `tf` ops the
  searches emitted before they ran on other backends. The searches are
  exported from TensorFlow (SavedModel, and ONNX through tf2onnx, whose
  loop body is converted node by node) and benchmarked there, so their
  TensorFlow graph stays exactly as it was. `keras.ops` would add nodes
  to it: dtype casts and broadcasts around `take_along_axis` and `where`,
  four passes over the logits in `argmax` to order -0.0 before 0.0.
- `KerasOps` on JAX and PyTorch: `keras.ops` and `keras.tree`. A JAX
  search is one `jax.lax.while_loop`, whose buffers need static shapes:
  `max_length` must be a Python int there.

Both give the same ids: ties in `top_k` and `argmax` go to the lower index
on every backend (PyTorch's `topk` does not promise it, so a stable sort
stands in for it there).
"""

import keras
import numpy as np
import tensorflow as tf


def backend_ops():
    """The namespace of the running Keras backend."""
    if keras.backend.backend() == "tensorflow":
        return TensorFlowOps
    return KerasOps


def _dtype_for(value):
    return "int32" if isinstance(value, int) else "float32"


def top_k_by_argmax(x, k):
    """`tf.math.top_k` as k rounds of max and argmax over the last axis.

    The same values and indices as `top_k` (ties to the lower index; a
    position already taken is never taken again, even among -inf), for
    XLA on CPU, which compiles TopK into a sort of the whole row: for the
    beam's top 2K of K x V candidates, k rounds over the row are about 2x
    faster there (benchmarks/RESULTS.md). In a graph TopK is faster.
    """
    positions = tf.range(tf.shape(x)[-1])
    taken = tf.zeros_like(x, tf.bool)
    values, indices = [], []
    for _ in range(k):
        key = tf.where(taken, tf.constant(float("-inf"), x.dtype), x)
        best = tf.reduce_max(key, axis=-1, keepdims=True)
        first = tf.argmax(tf.cast(tf.logical_and(
            tf.equal(key, best), tf.logical_not(taken)), tf.int32),
            axis=-1, output_type=tf.int32)
        values.append(best[..., 0])
        indices.append(first)
        taken = tf.logical_or(taken, tf.equal(positions, first[..., None]))
    return tf.stack(values, axis=-1), tf.stack(indices, axis=-1)


class TensorFlowOps:
    """The searches' operations as the `tf` ops they have always been."""

    name = "tensorflow"
    convert = staticmethod(tf.convert_to_tensor)
    cast = staticmethod(tf.cast)
    constant = staticmethod(tf.constant)
    zeros = staticmethod(tf.zeros)
    ones = staticmethod(tf.ones)
    fill = staticmethod(tf.fill)
    range = staticmethod(tf.range)
    equal = staticmethod(tf.equal)
    logical_and = staticmethod(tf.logical_and)
    logical_or = staticmethod(tf.logical_or)
    logical_not = staticmethod(tf.logical_not)
    where = staticmethod(tf.where)
    maximum = staticmethod(tf.maximum)
    minimum = staticmethod(tf.minimum)
    pow = staticmethod(tf.pow)
    reshape = staticmethod(tf.reshape)
    stack = staticmethod(tf.stack)
    concat = staticmethod(tf.concat)
    tile = staticmethod(tf.tile)
    pad = staticmethod(tf.pad)
    broadcast_to = staticmethod(tf.broadcast_to)
    reduce_all = staticmethod(tf.reduce_all)
    reduce_sum = staticmethod(tf.reduce_sum)
    reduce_max = staticmethod(tf.reduce_max)
    gather = staticmethod(tf.gather)
    top_k = staticmethod(tf.math.top_k)
    top_k_by_argmax = staticmethod(top_k_by_argmax)
    log_softmax = staticmethod(tf.nn.log_softmax)
    scatter_update = staticmethod(tf.tensor_scatter_nd_update)
    while_loop = staticmethod(tf.while_loop)
    map_structure = staticmethod(tf.nest.map_structure)
    flatten = staticmethod(tf.nest.flatten)
    pack_sequence_as = staticmethod(tf.nest.pack_sequence_as)

    @staticmethod
    def assert_same_structure(a, b):
        tf.nest.assert_same_structure(a, b, check_types=False)

    @staticmethod
    def dim(x, axis):
        """The size of `axis`, as a scalar tensor."""
        return tf.shape(x)[axis]

    @staticmethod
    def static_shape(x):
        """The known shape as a tuple (None for unknown sizes), or None."""
        return None if x.shape.rank is None else tuple(x.shape.as_list())

    @staticmethod
    def static_value(x):
        return tf.get_static_value(x)

    @staticmethod
    def gather_rows(params, indices):
        """[B, N, ...] at [B, M] -> [B, M, ...]; [B, N] at [B] -> [B]."""
        return tf.gather(params, indices, batch_dims=1)

    @staticmethod
    def argmax(x):
        """int32 index of the largest entry of the last axis."""
        return tf.argmax(x, axis=-1, output_type=tf.int32)

    @staticmethod
    def keep_shape(new, old):
        """Gives `new` the static shape of `old`, as tf.while_loop needs."""
        new.set_shape(old.shape)
        return new

    @staticmethod
    def repeat_rows(x, times):
        """[B, ...] -> [B * times, ...], each row repeated `times` times."""
        shape = tf.shape(x)
        tiled = tf.tile(x[:, tf.newaxis],
                        [1, times] + [1] * (x.shape.rank - 1))
        static = x.shape[0] * times if x.shape[0] is not None else None
        tiled = tf.reshape(tiled, tf.concat([[shape[0] * times], shape[1:]],
                                            axis=0))
        tiled.set_shape([static] + x.shape[1:].as_list())
        return tiled


class KerasOps:
    """The searches' operations in `keras.ops`, for JAX and PyTorch."""

    name = "keras"
    convert = staticmethod(keras.ops.convert_to_tensor)
    cast = staticmethod(keras.ops.cast)
    zeros = staticmethod(keras.ops.zeros)
    ones = staticmethod(keras.ops.ones)
    equal = staticmethod(keras.ops.equal)
    logical_and = staticmethod(keras.ops.logical_and)
    logical_or = staticmethod(keras.ops.logical_or)
    logical_not = staticmethod(keras.ops.logical_not)
    where = staticmethod(keras.ops.where)
    maximum = staticmethod(keras.ops.maximum)
    minimum = staticmethod(keras.ops.minimum)
    pow = staticmethod(keras.ops.power)
    reshape = staticmethod(keras.ops.reshape)
    stack = staticmethod(keras.ops.stack)
    concat = staticmethod(keras.ops.concatenate)
    tile = staticmethod(keras.ops.tile)
    broadcast_to = staticmethod(keras.ops.broadcast_to)
    reduce_all = staticmethod(keras.ops.all)
    reduce_sum = staticmethod(keras.ops.sum)
    reduce_max = staticmethod(keras.ops.max)
    log_softmax = staticmethod(keras.ops.log_softmax)
    scatter_update = staticmethod(keras.ops.scatter_update)
    while_loop = staticmethod(keras.ops.while_loop)
    map_structure = staticmethod(keras.tree.map_structure)
    flatten = staticmethod(keras.tree.flatten)
    pack_sequence_as = staticmethod(keras.tree.pack_sequence_as)

    @staticmethod
    def assert_same_structure(a, b):
        keras.tree.assert_same_structure(a, b)

    @staticmethod
    def constant(value, dtype=None):
        return keras.ops.convert_to_tensor(value, dtype=dtype)

    @staticmethod
    def fill(shape, value):
        return keras.ops.full(shape, value, dtype=_dtype_for(value))

    @staticmethod
    def range(stop):
        return keras.ops.arange(stop, dtype="int32")

    @staticmethod
    def pad(x, paddings, constant_values=0):
        return keras.ops.pad(x, paddings, constant_values=constant_values)

    @staticmethod
    def gather(params, indices, axis=0):
        return keras.ops.take(params, indices, axis=axis)

    @staticmethod
    def dim(x, axis):
        """The size of `axis`: a Python int where the shape is known."""
        return keras.ops.shape(x)[axis]

    @staticmethod
    def static_shape(x):
        return tuple(x.shape)

    @staticmethod
    def static_value(x):
        """The value of a concrete (not traced) tensor, else None."""
        try:
            return np.asarray(keras.ops.convert_to_numpy(x))
        except (TypeError, ValueError, RuntimeError):  # a JAX tracer
            return None

    @staticmethod
    def gather_rows(params, indices):
        """[B, N, ...] at [B, M] -> [B, M, ...]; [B, N] at [B] -> [B]."""
        if len(indices.shape) == 1:
            return keras.ops.take_along_axis(
                params, indices[:, None], axis=1)[:, 0]
        extra = tuple(params.shape[2:])
        indices = keras.ops.reshape(
            indices, tuple(indices.shape) + (1,) * len(extra))
        indices = keras.ops.broadcast_to(indices,
                                         tuple(indices.shape[:2]) + extra)
        return keras.ops.take_along_axis(params, indices, axis=1)

    @staticmethod
    def top_k(x, k):
        """The k largest entries of the last axis, ties to the lower index."""
        if keras.backend.backend() == "torch":
            import torch

            values, indices = torch.sort(x, dim=-1, descending=True,
                                         stable=True)
            return values[..., :k], indices[..., :k].to(torch.int32)
        values, indices = keras.ops.top_k(x, k)
        return values, keras.ops.cast(indices, "int32")

    @staticmethod
    def argmax(x):
        return keras.ops.cast(keras.ops.argmax(x, axis=-1), "int32")

    @staticmethod
    def keep_shape(new, old):
        del old  # Shapes are static on these backends.
        return new

    @staticmethod
    def repeat_rows(x, times):
        return keras.ops.repeat(x, times, axis=0)
