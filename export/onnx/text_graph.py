"""One ONNX graph from text to text: SentencePiece ops around a search.

`build_text_model` wraps a token-level search graph (`source_ids` int32
[batch, source_length] -> `target_ids` int32 [batch, target_length],
`score` float32 [batch]) between onnxruntime-extensions' SentencePiece
ops, so that it runs with only `onnxruntime` and `onnxruntime-extensions`:

    so = onnxruntime.SessionOptions()
    so.register_custom_ops_library(onnxruntime_extensions.get_library_path())

The graph cleans its input as the TensorFlow `Translator` does: each text
is tokenized without BOS/EOS, truncated to `max_source_tokens` tokens, then
[END]; a text with no token translates to "" with score 0.0; an empty
batch gives empty outputs. Invalid UTF-8 bytes become U+FFFD (SentencePiece's
normalizer; byte fallback then encodes U+FFFD). onnxruntime's string tensors
end at the first NUL byte, so text after a NUL is not seen.

The graph: `SentencepieceTokenizer` (flat ids and row splits) and default
ONNX ops (Slice, Min, Range, Gather, Where) make `source_ids`; the search's
nodes follow, every name prefixed with `search/` (Loop bodies included,
weights held once); then a mask (before the first [END], not [PAD] nor
[START]) and a `Loop` over the rows around `SentencepieceDecoder` (one
sequence per call). An empty batch runs the search on one [END] row and
slices it away. `onnx.checker.check_model` (and `full_check=True`) accepts
the result: it checks the default-domain nodes, skips the custom ones.
"""

import collections

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from keras_transformer.checks import check_int
from keras_transformer.export.onnx.graph import graphs
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

CONTRIB = "ai.onnx.contrib"
SEARCH_PREFIX = "search/"
_P = "text/"  # Names of the pre- and post-processing.
_MIN_OPSET = 15
_UNKNOWN_PIECE = 2  # sentencepiece.ModelProto.SentencePiece.Type.UNKNOWN


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        value |= (data[pos] & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if data[pos - 1] < 0x80:
            return value, pos
    raise ValueError("truncated varint")


def _fields(data: bytes):
    """Yields (field number, value) of a serialized protobuf message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire in (1, 2, 5):
            size = {1: 8, 5: 4}.get(wire)
            if size is None:
                size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
            if pos > len(data):
                raise ValueError("truncated field")
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, value


def _pieces(model: bytes, arg: str) -> tuple[int, int]:
    """(number of pieces, unknown id) of a serialized SentencePiece model."""
    if not isinstance(model, (bytes, bytearray)):
        raise TypeError(f"`{arg}` must be the bytes of a SentencePiece model. "
                        f"Received: {arg}={type(model).__name__}")
    try:
        types = [dict(_fields(piece)).get(3, 1)
                 for number, piece in _fields(bytes(model)) if number == 1]
    except (ValueError, TypeError):
        types = []
    if _UNKNOWN_PIECE not in types:
        raise ValueError(
            f"`{arg}` must be a serialized SentencePiece ModelProto with an "
            f"unknown piece. Received: {arg}=<{len(model)} bytes>")
    return len(types), types.index(_UNKNOWN_PIECE)


def _check_search(search) -> int:
    """Validates the search's interface; returns its default opset."""
    if not isinstance(search, onnx.ModelProto):
        raise TypeError(f"`search` must be an onnx.ModelProto. "
                        f"Received: search={type(search).__name__}")
    graph = search.graph
    weights = {t.name for t in graph.initializer}
    found = ({i.name: i.type.tensor_type.elem_type for i in graph.input
              if i.name not in weights},
             {o.name: o.type.tensor_type.elem_type for o in graph.output})
    wanted = ({"source_ids": TensorProto.INT32},
              {"target_ids": TensorProto.INT32, "score": TensorProto.FLOAT})
    if found != wanted:
        raise ValueError(
            "`search` must have the input source_ids int32 and the outputs "
            "target_ids int32 and score float32, nothing else. Received: "
            f"search with inputs {found[0]} and outputs {found[1]} "
            "(onnx.TensorProto element types)")
    opsets = {o.domain or "ai.onnx": o.version for o in search.opset_import}
    if opsets.get("ai.onnx", 0) < _MIN_OPSET or opsets.get(CONTRIB, 1) != 1:
        raise ValueError(
            f"`search` must import the default domain at opset >= "
            f"{_MIN_OPSET} (and {CONTRIB} at 1 if at all). Received: "
            f"search with opsets {opsets}")
    return opsets["ai.onnx"]


def _prefix_search(graph: onnx.GraphProto, dims: dict) -> None:
    """Prefixes every name of the search (subgraphs too), renames dims."""
    def name(text: str) -> str:
        return SEARCH_PREFIX + text if text else text

    for g, _ in graphs(graph):
        for node in g.node:
            node.name = name(node.name)
            node.input[:] = [name(i) for i in node.input]
            node.output[:] = [name(o) for o in node.output]
        for value in [*g.input, *g.output, *g.value_info]:
            value.name = name(value.name)
            for dim in value.type.tensor_type.shape.dim:
                if dims.get(dim.dim_param):
                    dim.dim_param = dims[dim.dim_param]
                elif dim.dim_param in dims:
                    dim.ClearField("dim_param")
        for tensor in g.initializer:
            tensor.name = name(tensor.name)
        for sparse in g.sparse_initializer:
            sparse.values.name = name(sparse.values.name)
            sparse.indices.name = name(sparse.indices.name)


def _dim_names(graph: onnx.GraphProto) -> dict:
    """Readable names for the dims of the search's io, "" for dim names
    used once in the search (they say nothing: unknown dims)."""
    names = {"source_ids": ("search_batch", "source_length"),
             "target_ids": ("search_batch", "target_length"),
             "score": ("search_batch",)}
    counts = collections.Counter(
        dim.dim_param for g, _ in graphs(graph)
        for value in [*g.input, *g.output, *g.value_info]
        for dim in value.type.tensor_type.shape.dim if dim.dim_param)
    dims = {name: "" for name, count in counts.items() if count == 1}
    for value in [*graph.input, *graph.output]:
        shape = value.type.tensor_type.shape
        for dim, readable in zip(shape.dim, names.get(value.name, ())):
            if dim.dim_param:
                dims[dim.dim_param] = dims.get(dim.dim_param) or readable
            elif not dim.HasField("dim_value"):
                dim.dim_param = readable
    return dims


def _node(op: str, inputs: list, output: str, **kwargs) -> onnx.NodeProto:
    """A node named after its output; names get `text/` but the search's."""
    names = [i if i.startswith(SEARCH_PREFIX) or i == "text" else _P + i
             for i in inputs]
    return helper.make_node(op, names, [_P + output], name=_P + output,
                            **kwargs)


def _tokenize(source_model: bytes) -> list:
    """text [batch] -> text/source_ids int32 [batch, source_length] and
    search/source_ids (one [END] row when the batch is empty)."""
    n = _node
    return [
        helper.make_node(
            "SentencepieceTokenizer", ["text"] + [_P + i for i in (
                "nbest_size", "alpha", "false", "false", "false")],
            [_P + "tokens", _P + "splits"], name=_P + "tokenize",
            domain=CONTRIB, model=source_model),
        # Ids at or above source_vocab_size -> the source unknown id
        # (contract.known_token_ids: a rewritten Marian model's pieces
        # beyond the model's ids).
        n("Less", ["tokens", "source_size"], "known"),
        n("Where", ["known", "tokens", "source_unk"], "known_tokens"),
        # One [PAD] after the tokens: the index every non-token reads.
        n("Concat", ["known_tokens", "pad"], "flat", axis=0),
        n("Shape", ["tokens"], "pad_index"),
        n("Slice", ["splits", "zeros", "minus_ones"], "starts"),
        n("Slice", ["splits", "ones", "last"], "ends"),
        n("Sub", ["ends", "starts"], "lengths"),
        n("Equal", ["lengths", "zero"], "empty"),
        n("Min", ["lengths", "max_tokens"], "kept"),
        n("Concat", ["kept", "zeros"], "kept_or_0", axis=0),
        n("ReduceMax", ["kept_or_0"], "longest", keepdims=0),
        n("Add", ["longest", "one"], "source_length"),
        n("Range", ["zero", "source_length", "one"], "positions"),
        n("Unsqueeze", ["positions", "zeros"], "columns"),
        n("Unsqueeze", ["starts", "ones"], "row_starts"),
        n("Unsqueeze", ["kept", "ones"], "row_kept"),
        n("Less", ["columns", "row_kept"], "is_token"),
        n("Add", ["row_starts", "columns"], "token_index"),
        n("Where", ["is_token", "token_index", "pad_index"], "index"),
        n("Gather", ["flat", "index"], "gathered", axis=0),
        n("Equal", ["columns", "row_kept"], "is_end"),
        n("Where", ["is_end", "end", "gathered"], "source_ids"),
        # An empty batch searches one [END] row, sliced away after.
        n("Shape", ["text"], "batch"),
        n("Min", ["batch", "ones"], "batch_or_1"),
        n("Sub", ["ones", "batch_or_1"], "dummy_rows"),
        n("Unsqueeze", ["source_length", "zeros"], "source_length_1"),
        n("Concat", ["dummy_rows", "source_length_1"], "dummy_shape", axis=0),
        n("Expand", ["end", "dummy_shape"], "dummy"),
        helper.make_node("Concat", [_P + "source_ids", _P + "dummy"],
                         [SEARCH_PREFIX + "source_ids"],
                         name=_P + "search_input", axis=0),
    ]


def _detokenize(target_model: bytes) -> list:
    """search/target_ids, search/score -> translation, score [batch]."""
    n = _node
    ids, score = SEARCH_PREFIX + "target_ids", SEARCH_PREFIX + "score"
    body = helper.make_graph(
        [n("Gather", ["target_64", "row"], "row_ids", axis=0),
         n("Gather", ["keep", "row"], "row_keep", axis=0),
         n("Compress", ["row_ids", "row_keep"], "kept_ids", axis=0),
         helper.make_node("SentencepieceDecoder", [_P + "kept_ids"],
                          [_P + "row_text"], name=_P + "detokenize",
                          domain=CONTRIB, model=target_model),
         n("Identity", ["cond"], "cond_out")],
        _P + "detokenize_row",
        [helper.make_tensor_value_info(_P + "row", TensorProto.INT64, []),
         helper.make_tensor_value_info(_P + "cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(_P + "cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(_P + "row_text", TensorProto.STRING,
                                       [1])])
    return [
        # Keep the ids before the first [END], without [PAD] and [START].
        n("Equal", [ids, "end"], "ended"),
        n("Cast", ["ended"], "ended_32", to=TensorProto.INT32),
        n("CumSum", ["ended_32", "one"], "ends_seen"),
        n("Equal", ["ends_seen", "zero_32"], "before_end"),
        n("Equal", [ids, "pad"], "is_pad"),
        n("Equal", [ids, "start"], "is_start"),
        n("Or", ["is_pad", "is_start"], "is_skipped"),
        n("Not", ["is_skipped"], "not_skipped"),
        n("And", ["before_end", "not_skipped"], "keep"),
        # Ids outside the target vocabulary -> the target unknown id.
        n("GreaterOrEqual", [ids, "zero_32"], "not_negative"),
        n("Less", [ids, "target_size"], "below_size"),
        n("And", ["not_negative", "below_size"], "in_vocabulary"),
        n("Where", ["in_vocabulary", ids, "target_unk"], "target_known"),
        n("Cast", ["target_known"], "target_64", to=TensorProto.INT64),
        # SentencepieceDecoder takes one sequence: a Loop over the rows.
        n("Shape", [ids], "rows_1", start=0, end=1),
        n("Squeeze", ["rows_1", "zeros"], "rows"),
        helper.make_node("Loop", [_P + "rows", ""], [_P + "texts"],
                         name=_P + "detokenize_rows", body=body),
        n("Reshape", ["texts", "minus_ones"], "search_texts"),
        n("Slice", ["search_texts", "zeros", "batch"], "texts_batch"),
        n("Slice", [score, "zeros", "batch"], "score_batch"),
        helper.make_node("Where", [_P + "empty", _P + "no_text",
                                   _P + "texts_batch"], ["translation"],
                         name=_P + "translation"),
        helper.make_node("Where", [_P + "empty", _P + "no_score",
                                   _P + "score_batch"], ["score"],
                         name=_P + "score"),
    ]


def build_text_model(search: onnx.ModelProto, source_model: bytes,
                     target_model: bytes, *, max_source_tokens: int,
                     source_vocab_size: int, end_id: int = END_ID,
                     pad_id: int = PAD_ID, start_id: int = START_ID,
                     name: str = "text_search") -> onnx.ModelProto:
    """Wraps a token search between SentencePiece tokenizer and decoder.

    Args:
        search: the token-level search: input `source_ids` int32 [batch,
            source_length], outputs `target_ids` int32 [batch,
            target_length] and `score` float32 [batch]. Not modified.
        source_model: a serialized SentencePiece ModelProto for the source.
        target_model: a serialized SentencePiece ModelProto for the target.
        max_source_tokens: int >= 1, the tokens kept per text before [END].
        source_vocab_size: int, the search's source vocabulary size (above
            the source unknown id); larger tokenizer ids become that id
            (`contract.known_token_ids`).
        end_id: the [END] id, appended to every source row.
        pad_id: the padding id of `source_ids` and `target_ids`.
        start_id: the [START] id, skipped in `target_ids` like `pad_id`.
        name: the name of the graph.

    Returns:
        An `onnx.ModelProto`: input `text` string [batch], outputs
        `translation` string [batch] and `score` float32 [batch].
    """
    opset = _check_search(search)
    _, source_unk = _pieces(source_model, "source_model")
    target_pieces, target_unk = _pieces(target_model, "target_model")
    check_int("max_source_tokens", max_source_tokens, 1)
    check_int("source_vocab_size", source_vocab_size, source_unk + 1)
    for arg, value in (("end_id", end_id), ("pad_id", pad_id),
                       ("start_id", start_id)):
        check_int(arg, value, 0)
        if value >= source_vocab_size:
            raise ValueError(f"`{arg}` must be < source_vocab_size "
                             f"({source_vocab_size}). Received: {arg}={value}")
    if end_id == pad_id:
        raise ValueError(f"`end_id` must differ from pad_id ({pad_id}). "
                         f"Received: end_id={end_id}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str. Received: "
                         f"name={name!r}")

    searched = onnx.GraphProto()
    searched.CopyFrom(search.graph)
    _prefix_search(searched, _dim_names(searched))
    i32, i64 = np.int32, np.int64
    consts = [numpy_helper.from_array(np.array(value, dtype), _P + key)
              for key, value, dtype in (
        ("nbest_size", 0, i64), ("alpha", 0.0, np.float32),
        ("false", False, np.bool_), ("zero", 0, i64), ("one", 1, i64),
        ("zeros", [0], i64), ("ones", [1], i64), ("minus_ones", [-1], i64),
        ("last", [np.iinfo(i64).max], i64),
        ("max_tokens", max_source_tokens, i64),
        ("source_size", source_vocab_size, i32),
        ("source_unk", source_unk, i32), ("end", end_id, i32),
        ("pad", [pad_id], i32), ("start", start_id, i32),
        ("zero_32", 0, i32), ("target_size", target_pieces, i32),
        ("target_unk", target_unk, i32), ("no_score", 0.0, np.float32))]
    consts.append(helper.make_tensor(_P + "no_text", TensorProto.STRING, [],
                                     [b""]))
    io_names = {v.name for v in [*searched.input, *searched.output]}
    value_info = [
        helper.make_tensor_value_info(_P + "source_ids", TensorProto.INT32,
                                      ["batch", "source_length"]),
        *searched.input, *searched.output,
        *[v for v in searched.value_info if v.name not in io_names]]
    graph = helper.make_graph(
        _tokenize(bytes(source_model)) + list(searched.node)
        + _detokenize(bytes(target_model)), name,
        [helper.make_tensor_value_info("text", TensorProto.STRING,
                                       ["batch"])],
        [helper.make_tensor_value_info("translation", TensorProto.STRING,
                                       ["batch"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT,
                                       ["batch"])],
        consts + list(searched.initializer), value_info=value_info,
        sparse_initializer=searched.sparse_initializer)
    return helper.make_model(
        graph, opset_imports=[o for o in search.opset_import
                              if o.domain != CONTRIB]
        + [helper.make_opsetid(CONTRIB, 1)],
        ir_version=search.ir_version or onnx.IR_VERSION,
        functions=search.functions,
        producer_name="keras_transformer.export.onnx.text_graph",
        doc_string=f"Text to text: SentencePiece tokenizer, search "
                   f"(opset {opset}), SentencePiece decoder.")


def text_model_summary(model: onnx.ModelProto) -> dict:
    """Op counts by domain (subgraphs included) and io dims of a model.

    Args:
        model: an `onnx.ModelProto`, e.g. from `build_text_model`.

    Returns:
        A dict: `ops` (domain -> op type -> count, "ai.onnx" for the
        default domain), `nodes` (the total), `inputs` and `outputs`
        (name -> list of dims: names, sizes or None when unknown).
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"`model` must be an onnx.ModelProto. "
                        f"Received: model={type(model).__name__}")
    ops = collections.defaultdict(collections.Counter)
    for graph, _ in graphs(model.graph):
        for node in graph.node:
            ops[node.domain or "ai.onnx"][node.op_type] += 1

    def dims(values):
        return {v.name: [d.dim_param or (d.dim_value if d.HasField(
            "dim_value") else None) for d in v.type.tensor_type.shape.dim]
            for v in values}

    return {"ops": {domain: dict(counts.most_common())
                    for domain, counts in sorted(ops.items())},
            "nodes": sum(sum(c.values()) for c in ops.values()),
            "inputs": dims(model.graph.input),
            "outputs": dims(model.graph.output)}
