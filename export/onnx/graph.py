"""Clean-up passes on a converted ONNX search graph, subgraphs included.

After tf2onnx: fold the shapes of constants, drop unused initializers and
keep one copy of equal constants (hoisted to the main graph when Loop
bodies share them), so a file holds every weight once; and give the
graph's inputs and outputs readable dimension names.
"""

import collections
import hashlib

import numpy as np
import onnx
from onnx import numpy_helper

# Readable names of the token graphs' dimensions (tf2onnx writes unk__N).
DIM_NAMES = {"source_ids": ("batch", "source_length"),
             "target_ids": ("batch", "target_length"), "score": ("batch",)}


def graphs(graph, parents=()):
    """Yields (graph, parents) for `graph` and every subgraph inside it."""
    yield graph, parents
    for node in graph.node:
        for subgraph in node_subgraphs(node):
            yield from graphs(subgraph, parents + (graph,))


def node_subgraphs(node):
    """The graphs held by `node`'s attributes (a Loop's or If's bodies)."""
    for attribute in node.attribute:
        yield from attribute.graphs
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g


class ValueIndex:
    """The producer and the use count of each value of one graph; names
    read by nested subgraphs count as uses."""

    def __init__(self, graph):
        self.producers = {out: node for node in graph.node
                          for out in node.output}
        self.uses = collections.Counter(
            name for node in graph.node for name in node.input)
        self.uses.update(output.name for output in graph.output)
        for node in graph.node:
            for sub in node_subgraphs(node):
                for inner, _ in graphs(sub):
                    self.uses.update(n for x in inner.node for n in x.input)

    def node(self, name, op_type):
        """The node of `op_type` that produces `name`, or None."""
        node = self.producers.get(name)
        return node if node is not None and node.op_type == op_type else None


def constant_values(graph, outer=None) -> dict:
    """Name -> array of the initializers and Constant nodes of `graph`,
    over the names of `outer` (those of its enclosing graphs)."""
    values = dict(outer or {})
    values.update((t.name, numpy_helper.to_array(t))
                  for t in graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(
                node.attribute[0].t)
    return values


def scoped_constants(graph, parents) -> dict:
    """`constant_values` of `graph` and of every graph enclosing it."""
    values = {}
    for scope in (*parents, graph):
        values = constant_values(scope, values)
    return values


def fold_constant_shapes(main):
    """Replaces Shape(initializer) by a constant: the weight stays once."""
    shapes = {}
    for graph, _ in graphs(main):
        for tensor in graph.initializer:
            shapes[tensor.name] = list(tensor.dims)
    for graph, _ in graphs(main):
        for node in graph.node:
            if node.op_type != "Shape" or node.input[0] not in shapes:
                continue
            attributes = {a.name: a.i for a in node.attribute}
            shape = shapes[node.input[0]]
            value = np.array(shape, np.int64)[
                attributes.get("start", 0):attributes.get("end", len(shape))]
            node.op_type = "Constant"
            del node.input[:]
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute(
                "value", numpy_helper.from_array(value)))


def drop_unused_initializers(main):
    used = set()
    for graph, _ in graphs(main):
        used.update(name for node in graph.node for name in node.input)
        used.update(output.name for output in graph.output)
    for graph, _ in graphs(main):
        keep = [t for t in graph.initializer if t.name in used]
        if len(keep) != len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(keep)


def deduplicate_initializers(main):
    """Keeps one copy of equal constants, in the main graph if shared."""
    outputs = {output.name for graph, _ in graphs(main)
               for output in graph.output}
    groups = collections.defaultdict(list)
    for graph, parents in graphs(main):
        for tensor in graph.initializer:
            if tensor.name in outputs:  # Its name must stay.
                continue
            value = numpy_helper.to_array(tensor)
            key = (value.dtype.str, value.shape,
                   hashlib.sha256(value.tobytes()).hexdigest())
            groups[key].append((len(parents), tensor.name, graph))
    renames = {}
    for copies in groups.values():
        if len(copies) < 2:
            continue
        copies.sort(key=lambda copy: copy[0])
        _, name, owner = copies[0]
        if owner is not main and any(g is not owner for _, _, g in copies):
            # Outer names are visible in every subgraph: hoist the copy.
            main.initializer.append(pop_initializer(owner, name))
        for _, duplicate, graph in copies[1:]:
            renames[duplicate] = name
            pop_initializer(graph, duplicate)
    for graph, _ in graphs(main):
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renames:
                    node.input[i] = renames[name]


def pop_initializer(graph, name):
    """Removes the initializer `name` from `graph` and returns a copy."""
    index = [tensor.name for tensor in graph.initializer].index(name)
    tensor = onnx.TensorProto()
    tensor.CopyFrom(graph.initializer[index])
    del graph.initializer[index]
    return tensor


def compact(main):
    fold_constant_shapes(main)
    drop_unused_initializers(main)
    deduplicate_initializers(main)


def name_dims(main, names=None):
    """Gives the inputs' and outputs' dims readable names (`DIM_NAMES`).

    A dim name tf2onnx made up for one of them is replaced wherever it
    occurs (inputs, outputs and value_info of every graph); a dim without
    a name nor a size gets its readable name.
    """
    names = DIM_NAMES if names is None else names
    renames = {}
    for value in [*main.input, *main.output]:
        for dim, name in zip(value.type.tensor_type.shape.dim,
                             names.get(value.name, ())):
            if dim.HasField("dim_value"):
                continue
            if dim.dim_param:
                renames.setdefault(dim.dim_param, name)
            dim.dim_param = name
    for graph, _ in graphs(main):
        for value in [*graph.input, *graph.output, *graph.value_info]:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param in renames:
                    dim.dim_param = renames[dim.dim_param]
