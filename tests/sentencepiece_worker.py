"""Runs SentencePiece models with onnxruntime-extensions, for parity tests.

Run as `python sentencepiece_worker.py < request.json > answer.json`. It
imports only numpy, onnx, onnxruntime and onnxruntime_extensions: loading
onnxruntime-extensions into a process that has imported TensorFlow crashed.

Request: {"models": {name: base64 model proto}, "strings": [base64 bytes],
"decode": {name: [[id, ...], ...]}, "vocab": {name: vocab size}}.
Answer: {"ids": {name: [[id, ...],
...]}, "decoded": {name: [base64 UTF-8 or null on error]}, "probes":
{...}, "modules": [names of the heavy modules loaded]}.

The `SentencepieceTokenizer` op (domain "ai.onnx.contrib") has the
attribute `model` (bytes, the serialized proto), the inputs `inputs`
(string [N]), `nbest_size` (int64 [1]), `alpha` (float [1]), `add_bos`,
`add_eos`, `reverse` (bool [1]) and an optional `fairseq` (bool [1]), and
the outputs `tokens` (int32 [M], all ids), `instance_indices` (int64
[N + 1], the row splits) and an optional `token_indices` (int32 [M]).
`SentencepieceDecoder` has the attribute `model`, the input `ids` (int64
[n] or [1, n]; an optional `fairseq` bool) and the output `str` (string
[1]).
"""

import base64
import json
import sys

import numpy as np
import onnxruntime
import onnxruntime_extensions
from onnx import TensorProto, helper

_DOMAIN = "ai.onnx.contrib"
_TOKENIZER_INPUTS = (
    ("inputs", TensorProto.STRING),
    ("nbest_size", TensorProto.INT64),
    ("alpha", TensorProto.FLOAT),
    ("add_bos", TensorProto.BOOL),
    ("add_eos", TensorProto.BOOL),
    ("reverse", TensorProto.BOOL),
)


def _session(op_type, inputs, outputs, model_proto):
    node = helper.make_node(
        op_type, [name for name, _ in inputs],
        [name for name, _ in outputs], domain=_DOMAIN, model=model_proto)
    graph = helper.make_graph(
        [node], op_type,
        [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid(_DOMAIN, 1)])
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(
        onnxruntime_extensions.get_library_path())
    options.log_severity_level = 4  # Failed probes would log errors.
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options,
        providers=["CPUExecutionProvider"])


def tokenize(model_proto: bytes, strings: list) -> list:
    """The ids of each byte string, one batch through the op."""
    session = _session(
        "SentencepieceTokenizer", _TOKENIZER_INPUTS,
        [("tokens", TensorProto.INT32),
         ("instance_indices", TensorProto.INT64)], model_proto)
    # onnxruntime reads a NumPy bytes ("S") array item as a NUL-terminated
    # C string and runs past an item that fills its slot: one spare byte.
    width = max(len(s) for s in strings) + 1
    tokens, splits = session.run(None, {
        "inputs": np.array(strings, dtype=f"S{width}"),
        "nbest_size": np.array([0], np.int64),
        "alpha": np.array([0.0], np.float32),
        "add_bos": np.array([False]),
        "add_eos": np.array([False]),
        "reverse": np.array([False]),
    })
    return [tokens[start:end].tolist()
            for start, end in zip(splits[:-1], splits[1:])]


def decode(model_proto: bytes, sequences: list) -> list:
    """The decoded text of each id sequence (one run per sequence)."""
    session = _decoder(model_proto)
    return [_encode_text(_try_decode(session, np.array(ids, np.int64)))
            for ids in sequences]


def probe(model_proto: bytes, vocab_size: int, row: list) -> dict:
    """How the decoder handles a batch, unknown and out-of-range ids."""
    session = _decoder(model_proto)
    cases = {
        "one_row_2d": np.array([row], np.int64),
        "batch_2d": np.array([row, row], np.int64),
        "unk_id": np.array([1], np.int64),
        "control_ids": np.array([0, 2, *row, 3, *row], np.int64),
        "out_of_range": np.array([vocab_size], np.int64),
        "negative": np.array([-1], np.int64),
        "lone_byte": np.array([4 + 0xC3], np.int64),
    }
    return {name: _try_decode(session, ids) for name, ids in cases.items()}


def _decoder(model_proto: bytes):
    return _session("SentencepieceDecoder", [("ids", TensorProto.INT64)],
                    [("str", TensorProto.STRING)], model_proto)


def _try_decode(session, ids):
    try:
        (text,) = session.run(None, {"ids": ids})
    except Exception as error:  # The op's errors: recorded, not raised.
        return {"error": str(error).splitlines()[0][:200]}
    return {"shape": list(text.shape), "text": [str(t) for t in text.flat]}


def _encode_text(result):
    if "error" in result:
        return None
    (text,) = result["text"]
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def main() -> None:
    request = json.load(sys.stdin)
    strings = [base64.b64decode(s) for s in request["strings"]]
    answer = {"ids": {}, "decoded": {}, "probes": {}}
    for name, encoded in request["models"].items():
        model_proto = base64.b64decode(encoded)
        answer["ids"][name] = tokenize(model_proto, strings)
        answer["decoded"][name] = decode(
            model_proto, request["decode"][name])
        row = next(ids for ids in request["decode"][name] if ids)
        answer["probes"][name] = probe(
            model_proto, request["vocab"][name], row)
    answer["modules"] = sorted(
        name for name in ("tensorflow", "tensorflow_text", "keras",
                          "sentencepiece", "keras_transformer")
        if name in sys.modules)
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
