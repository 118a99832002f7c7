"""onnxruntime's fused operators in a search graph's decoder step.

At batch 1 a search graph runs its Loop body's nodes once per output
token, and for a small model their dispatch is much of its time
(`lean.py`; a larger model's step is bound by reading its weights). These
rewrites replace groups of standard nodes by one node each:

- `where_selects` (standard ONNX): tf2onnx writes TensorFlow's
  `SelectV2` as arithmetic, `Cast(c) * a + Cast(Not(c)) * b` (six nodes);
  it becomes one `Where(c, a, b)`, the same values for finite a and b;
- `fuse_attention` (onnxruntime's `com.microsoft` domain): the attention
  of one decoder step over its cache or over the fixed cross keys (query
  heads, scale, scores, bias, softmax, weighted sum, heads merged: about
  twelve nodes) becomes one `MultiHeadAttention`, its query the
  projection with its bias as a (batch, 1, d_model) tensor and its keys
  and values the (batch, heads, length, head size) tensors they already
  are;
- `fuse_skip_layer_norms` (`com.microsoft`, measured, not applied by
  `fuse_search`): a residual `Add` and its `LayerNormalization` (with the
  sublayer's output bias) become one `SkipLayerNormalization`. It saved
  up to 5% at batch 1 and cost 5% at batch 32 (onnxruntime 1.32's
  kernel is slower than its LayerNormalization there;
  benchmarks/RESULTS.md, "ONNX Runtime: onnxruntime's fused operators").

The fused attention computes in another order (the scale after the
product): outputs move by float rounding, and the export's verification
checks the ids against the Keras model as for every graph. Engines
without onnxruntime's contrib operators (onnxruntime-web, other runtimes)
take the graph without the `com.microsoft` rewrite
(`fuse_search(model, contrib=False)`).
"""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from keras_transformer.export.onnx.graph import (
    ValueIndex,
    drop_unused_initializers,
    graphs,
    scoped_constants,
)

CONTRIB_DOMAIN = "com.microsoft"


def fuse_search(model: onnx.ModelProto, contrib: bool = True) -> dict:
    """Applies the module's rewrites to a search graph, in place.

    Args:
        model: a search graph after `lean.lean_search`.
        contrib: bool, whether to use onnxruntime's `com.microsoft`
            `MultiHeadAttention` (`fuse_attention`) besides the standard
            `where_selects`.

    Returns:
        A dict of how many groups each rewrite replaced.
    """
    counts = {"where": 0, "attention": 0}
    ranks = value_ranks(model) if contrib else {}
    for graph, parents in graphs(model.graph):
        values = scoped_constants(graph, parents)
        counts["where"] += where_selects(graph)
        if contrib:
            counts["attention"] += fuse_attention(graph, values, ranks)
        drop_dead_nodes(graph)
    if counts["attention"]:
        if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    drop_unused_initializers(model.graph)
    return counts


def value_ranks(model) -> dict:
    """Name -> rank of every value ONNX shape inference can rank."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for graph, _ in graphs(inferred.graph):
        for value in (*graph.input, *graph.output, *graph.value_info):
            tensor = value.type.tensor_type
            if tensor.HasField("shape"):
                ranks[value.name] = len(tensor.shape.dim)
    return ranks


def _attribute(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _rebuild(graph, edits):
    """Applies `edits`, {first output of a node: (nodes before it, the
    node's replacement or None to keep it)}, in one pass: protobuf copies
    nodes on `extend`, so a graph is rebuilt once per rewrite."""
    nodes = []
    for node in graph.node:
        before, replacement = edits.get(node.output[0], ((), None))
        nodes.extend(before)
        nodes.append(node if replacement is None else replacement)
    del graph.node[:]
    graph.node.extend(nodes)


def where_selects(graph) -> int:
    """`Cast(c) * a + Cast(Not(c)) * b` -> `Where(c, a, b)` (c boolean)."""
    index = ValueIndex(graph)
    edits = {}
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        picked = {}
        for name in add.input:
            mul = index.node(name, "Mul")
            if mul is None:
                break
            for i, factor in enumerate(mul.input):
                cast = index.node(factor, "Cast")
                if cast is None:
                    continue
                negated = index.node(cast.input[0], "Not")
                key = ("not", negated.input[0]) if negated else (
                    "is", cast.input[0])
                picked.setdefault(key, mul.input[1 - i])
        condition = {c for kind, c in picked if kind == "is"} & {
            c for kind, c in picked if kind == "not"}
        if len(picked) != 2 or len(condition) != 1:
            continue
        c = condition.pop()
        edits[add.output[0]] = ((), helper.make_node(
            "Where", [c, picked[("is", c)], picked[("not", c)]],
            [add.output[0]], name=f"{add.name or add.output[0]}/where"))
    _rebuild(graph, edits)
    return len(edits)


def fuse_attention(graph, values, ranks) -> int:
    """One decoder step's attention -> `com.microsoft.MultiHeadAttention`.

    The pattern (as tf2onnx writes `MultiHeadAttention` of the cached
    step): q = Transpose(Add(Reshape(MatMul(x, Wq), [-1, 1, H, K]), bq),
    [0, 2, 1, 3]); s = Softmax(Add(MatMul(Mul(q, scale), Transpose(k,
    [0, 1, 3, 2])), bias)); out = Reshape(Transpose(MatMul(s, v),
    [0, 2, 1, 3]), shape), with k and v (batch, H, length, K), bias of
    rank 4 in `ranks` (onnxruntime's `attention_bias` must be) and shape
    [-1, 1, H * K]. `out` is then computed by one node from
    Add(MatMul(x, Wq), bq flattened) (the query, (batch, 1, H * K)), k, v
    and bias. The fused node's output gets a value_info (float, rank 3):
    ONNX's type inference does not know the contrib operator, and
    onnxruntime's quantizer needs the types of MatMul inputs.
    """
    index = ValueIndex(graph)
    edits = {}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        match = _match_attention(softmax, graph, index, values)
        if match is None or ranks.get(match[5]) != 4:
            continue
        reshape, projection, q_bias, k, v, bias, scale, heads = match
        base = reshape.name or reshape.output[0]
        bias_name = f"{base}/query_bias"
        graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(q_bias.reshape(-1)), bias_name))
        query = f"{base}/query"
        attention = f"{base}/attention"
        new = [
            helper.make_node("Add", [projection, bias_name], [query],
                             name=query),
            helper.make_node(
                "MultiHeadAttention", [query, k, v, "", "", bias],
                [attention], name=attention, domain=CONTRIB_DOMAIN,
                num_heads=heads, scale=scale),
        ]
        graph.value_info.append(helper.make_tensor_value_info(
            attention, onnx.TensorProto.FLOAT, [None, None, None]))
        merged = onnx.NodeProto()
        merged.CopyFrom(reshape)
        merged.input[0] = attention
        edits[reshape.output[0]] = (new, merged)
    _rebuild(graph, edits)
    return len(edits)


def _match_attention(softmax, graph, index, values):
    add = index.node(softmax.input[0], "Add")
    if add is None:
        return None
    scores = next((index.node(n, "MatMul") for n in add.input
                   if index.node(n, "MatMul") is not None), None)
    if scores is None:
        return None
    bias = add.input[1] if add.input[0] == scores.output[0] else add.input[0]
    scaled = index.node(scores.input[0], "Mul")
    keys_t = index.node(scores.input[1], "Transpose")
    if scaled is None or keys_t is None or _attribute(
            keys_t, "perm") != [0, 1, 3, 2]:
        return None
    scale_name = next((n for n in scaled.input if n in values), None)
    if scale_name is None or np.asarray(values[scale_name]).size != 1:
        return None
    q_t = index.node(next(n for n in scaled.input if n != scale_name),
                     "Transpose")
    if q_t is None or _attribute(q_t, "perm") != [0, 2, 1, 3]:
        return None
    q_add = index.node(q_t.input[0], "Add")
    if q_add is None:
        return None
    q_bias_name = next((n for n in q_add.input if n in values), None)
    if q_bias_name is None:
        return None
    q_reshape = index.node(
        next(n for n in q_add.input if n != q_bias_name), "Reshape")
    if q_reshape is None or q_reshape.input[1] not in values:
        return None
    q_bias = np.asarray(values[q_bias_name])
    head_shape = [int(d) for d in np.asarray(values[q_reshape.input[1]])]
    if (len(head_shape) != 4 or head_shape[1] != 1 or q_bias.ndim != 2
            or list(q_bias.shape) != head_shape[2:]):
        return None
    heads, head_size = head_shape[2:]
    # The weighted sum, its heads merged, is the one use of the softmax.
    users = [n for n in graph.node if softmax.output[0] in n.input]
    if len(users) != 1 or users[0].op_type != "MatMul" or (
            users[0].input[0] != softmax.output[0]):
        return None
    context = users[0]
    merge = [n for n in graph.node if context.output[0] in n.input]
    if len(merge) != 1 or merge[0].op_type != "Transpose" or _attribute(
            merge[0], "perm") != [0, 2, 1, 3]:
        return None
    reshape = [n for n in graph.node if merge[0].output[0] in n.input]
    if len(reshape) != 1 or reshape[0].op_type != "Reshape" or (
            reshape[0].input[1] not in values):
        return None
    reshape = reshape[0]
    if [int(d) for d in np.asarray(values[reshape.input[1]])] != [
            -1, 1, heads * head_size]:
        return None
    if any(index.uses[n] != 1 for n in (
            add.output[0], scores.output[0], scaled.output[0],
            q_t.output[0], q_add.output[0], context.output[0],
            merge[0].output[0])):
        return None
    scale = float(np.asarray(values[scale_name]).reshape(()))
    return (reshape, q_reshape.input[0], q_bias, keys_t.input[0],
            context.input[1], bias, scale, heads)


def fuse_skip_layer_norms(graph, values) -> int:
    """`LayerNormalization(a + (b + bias))` -> `SkipLayerNormalization`.

    Only where the normalization is over the last axis (a 1-D gamma), and
    the Add's
    result has no other use. A bias Add on one side of the residual (the
    sublayer's output bias, a constant vector) goes into the fused node.
    """
    index = ValueIndex(graph)
    edits = {}
    for norm in [n for n in graph.node if n.op_type == "LayerNormalization"]:
        # A 1-D gamma only fits a normalization over the last axis alone.
        if len(norm.input) != 3 or norm.input[1] not in values or np.asarray(
                values[norm.input[1]]).ndim != 1:
            continue
        residual = index.node(norm.input[0], "Add")
        if residual is None or index.uses[residual.output[0]] != 1:
            continue
        a, b = residual.input
        bias = ""
        for first, second in ((a, b), (b, a)):
            biased = index.node(second, "Add")
            if biased is None or index.uses[second] != 1:
                continue
            constant = [n for n in biased.input if n in values
                        and np.asarray(values[n]).ndim == 1]
            if len(constant) == 1:
                bias = constant[0]
                a = first
                b = next(n for n in biased.input if n != bias)
                break
        fused = helper.make_node(
            "SkipLayerNormalization", [a, b, *norm.input[1:], bias],
            [norm.output[0]], name=f"{norm.name or norm.output[0]}/skip",
            domain=CONTRIB_DOMAIN,
            epsilon=float(_attribute(norm, "epsilon", 1e-5)))
        edits[norm.output[0]] = ((), fused)
    _rebuild(graph, edits)
    return len(edits)


def drop_dead_nodes(graph):
    """Removes nodes none of whose outputs is used, until none is left."""
    while True:
        index = ValueIndex(graph)
        keep = [n for n in graph.node
                if any(index.uses[o] for o in n.output if o)]
        if len(keep) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(keep)
