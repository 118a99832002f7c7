"""A leaner decoder step: rewrites of a converted search graph's Loop body.

At batch 1 a search graph's time is the dispatch of its Loop body's nodes
(one pass per output token), not arithmetic. tf2onnx leaves the body
with nodes that recompute the same value at every step; `lean_search`
removes them, each rewrite exact in float32 except the LayerNorm fusion:

- `hoist_loop_invariants`: TensorFlow's `while_loop` passes every weight
  the body reads as a loop-carried value. A carried value that the body
  passes through unchanged and that starts as an initializer is read from
  the outer scope instead, and its slot leaves the Loop;
- `fold_weight_views`: a Reshape of a weight (the attention kernels
  (D, H, K) -> (D, H*K), redone at every step) becomes a weight of its
  own, reshaped once at export;
- `fuse_layer_norms`: the nine nodes of `ResidualNorm`'s LayerNorm
  (mean, subtract, square, mean, add epsilon, sqrt, divide, scale, shift)
  become one ONNX `LayerNormalization` (opset 17), which onnxruntime runs
  as one kernel. That kernel computes the variance in one pass
  (E[x^2] - E[x]^2), not from the centered values: outputs move by about
  1e-7 relative, which `export_onnx`'s verification checks on ids.

The attention bias (computed once per step and shared by the layers) and
the cache write coordinates (likewise) are done in the model itself
(`DecoderLayer.step_inputs`), so TensorFlow graphs gain as well.

`quantize_search` builds on the same first two rewrites: a MatMul only
quantizes with a constant weight.
"""

import collections

import numpy as np
import onnx
from onnx import helper, numpy_helper

from keras_transformer.export.onnx.graph import (
    ValueIndex,
    compact,
    drop_unused_initializers,
    graphs,
    scoped_constants,
)


def lean_search(model: onnx.ModelProto) -> onnx.ModelProto:
    """Applies the module's rewrites to a search graph, in place.

    Args:
        model: an `onnx.ModelProto` converted by tf2onnx (opset >= 17).

    Returns:
        `model`, with the same inputs and outputs.
    """
    hoist_loop_invariants(model.graph)
    fold_weight_views(model.graph)
    fuse_layer_norms(model.graph)
    drop_unused_initializers(model.graph)
    compact(model.graph)
    return model


def hoist_loop_invariants(main):
    """Reads carried values that never change from the outer scope."""
    initializers = {t.name for t in main.initializer}
    used_outside = collections.Counter(
        name for node in main.node for name in node.input)
    used_outside.update(output.name for output in main.output)
    for loop in [n for n in main.node if n.op_type == "Loop"]:
        body = next(a.g for a in loop.attribute if a.name == "body")
        # Loop inputs: M, cond, carried...; body inputs: i, cond,
        # carried...; body outputs: cond, carried..., scanned...
        drop = []
        for slot in range(2, len(loop.input)):
            outer, inner = loop.input[slot], body.input[slot].name
            if (outer not in initializers
                    or body.output[slot - 1].name != inner
                    or used_outside[loop.output[slot - 2]]):
                continue
            for graph, _ in graphs(body):
                for node in graph.node:
                    node.input[:] = [outer if name == inner else name
                                     for name in node.input]
            drop.append(slot)
        for slot in reversed(drop):
            del loop.input[slot]
            del body.input[slot]
            del body.output[slot - 1]
            del loop.output[slot - 2]


def fold_weight_views(main):
    """Turns a Reshape of a weight, in any graph, into a weight."""
    weights = {t.name for t in main.initializer}
    folded = {}
    for graph, parents in graphs(main):
        values = scoped_constants(graph, parents)
        keep = []
        for node in graph.node:
            value = None
            if (node.op_type == "Reshape" and node.input[0] in weights
                    and all(name in values for name in node.input)):
                data = values[node.input[0]]
                # A 0 in an ONNX shape keeps that dimension.
                shape = [data.shape[i] if size == 0 else int(size)
                         for i, size in enumerate(values[node.input[1]])]
                value = data.reshape(shape)
            if value is None or value.ndim != 2:
                keep.append(node)
                continue
            folded[node.output[0]] = value
        if len(keep) != len(graph.node):
            del graph.node[:]
            graph.node.extend(keep)
    for name, value in folded.items():
        main.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(value), name))


def fuse_layer_norms(main) -> int:
    """Replaces each nine-node LayerNorm by one `LayerNormalization`.

    The pattern (as tf2onnx writes `ResidualNorm._normalize`):
    m = ReduceMean(x); c = Sub(x, m); v = ReduceMean(Mul(c, c));
    y = Add(Mul(Div(c, Sqrt(Add(v, eps))), gamma), beta), both means over
    the last axis only, eps a scalar constant and gamma, beta constants
    of the main graph. Intermediate values used elsewhere stop a match.

    Returns:
        The number of LayerNorms fused, over all graphs.
    """
    fused = 0
    for graph, parents in graphs(main):
        fused += _fuse_in(graph, scoped_constants(graph, parents))
    return fused


def _fuse_in(graph, values) -> int:
    index = ValueIndex(graph)
    uses, producer = index.uses, index.node

    def other(node, name):
        """The input of a two-input node that is not `name`."""
        a, b = node.input
        return b if a == name else a if b == name else None

    remove, added = set(), []
    for shift in list(graph.node):
        if shift.op_type != "Add":
            continue
        for scaled_name in shift.input:
            scale = producer(scaled_name, "Mul")
            if scale is None:
                continue
            beta = other(shift, scaled_name)
            divide = next((producer(n, "Div") for n in scale.input
                           if producer(n, "Div") is not None), None)
            if divide is None or beta not in values:
                continue
            gamma = other(scale, divide.output[0])
            centered_name, root_name = divide.input
            root = producer(root_name, "Sqrt")
            centered = producer(centered_name, "Sub")
            if root is None or centered is None or gamma not in values:
                continue
            add_eps = producer(root.input[0], "Add")
            if add_eps is None:
                continue
            variance_name = next((n for n in add_eps.input
                                  if producer(n, "ReduceMean") is not None),
                                 None)
            if variance_name is None:
                continue
            eps_name = other(add_eps, variance_name)
            variance = producer(variance_name, "ReduceMean")
            square = producer(variance.input[0], "Mul")
            x, mean_name = centered.input
            mean = producer(mean_name, "ReduceMean")
            if (square is None or mean is None or eps_name not in values
                    or list(square.input) != [centered_name] * 2
                    or mean.input[0] != x
                    or _mean_axis(mean, values) is None):
                continue
            epsilon = np.asarray(values[eps_name])
            axis = _mean_axis(mean, values)
            if (epsilon.size != 1 or axis != _mean_axis(variance, values)
                    or np.asarray(values[gamma]).ndim != 1):
                continue
            inner = (mean, centered, square, variance, add_eps, root, divide,
                     scale)
            single = {mean_name: 1, centered_name: 3,
                      square.output[0]: 1, variance_name: 1,
                      add_eps.output[0]: 1, root_name: 1,
                      divide.output[0]: 1, scale.output[0]: 1}
            if any(uses[name] != count for name, count in single.items()):
                continue
            remove.update(id(n) for n in (*inner, shift))
            name = f"{shift.name or shift.output[0]}/layer_norm"
            added.append((shift, helper.make_node(
                "LayerNormalization", [x, gamma, beta], [shift.output[0]],
                name=name, axis=axis,
                epsilon=float(epsilon.reshape(())))))
            break
    if not added:
        return 0
    replacement = {id(old): new for old, new in added}
    nodes = []
    for node in graph.node:
        if id(node) in replacement:
            nodes.append(replacement[id(node)])
        elif id(node) not in remove:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(added)


def _mean_axis(node, values) -> int | None:
    """The one axis a ReduceMean averages, keeping dims; else None.

    tf2onnx writes the last axis as a positive number where it knows the
    rank. The fused node normalizes from that axis to the last: a 1-D
    gamma then only fits when it is the last one (onnxruntime rejects the
    graph otherwise, so a wrong match cannot pass unnoticed).
    """
    attributes = {a.name: a for a in node.attribute}
    keepdims = attributes["keepdims"].i if "keepdims" in attributes else 1
    if "axes" in attributes:
        axes = list(attributes["axes"].ints)
    elif len(node.input) > 1 and node.input[1] in values:
        axes = np.asarray(values[node.input[1]]).reshape(-1).tolist()
    else:
        return None
    return int(axes[0]) if keepdims == 1 and len(axes) == 1 else None
