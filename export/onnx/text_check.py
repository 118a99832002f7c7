"""Translate with an export's text graphs in a process without TensorFlow.

onnxruntime-extensions (the text graphs' SentencePiece ops) crashes a
process that has imported TensorFlow, so `export.onnx.verify` runs the
text graphs here, in a subprocess that imports only `numpy`, `onnxruntime`
and `onnxruntime_extensions` (through `export.onnx.runtime`):

    python -m keras_transformer.export.onnx.text_check REQUEST ANSWER

REQUEST, a JSON file: {"onnx_dir": str, "modes": ["beam", ...],
"batch_size": int, "texts": [str, or {"base64": bytes of any kind}]}.
ANSWER, a JSON file written on success: {"results": {mode:
{"translation": [str], "score": [float], "seconds": float}},
"modules": [the heavy modules imported: none]}. Texts go through
`OnnxTranslator.__call__` by batches, bytes as bytes (invalid UTF-8
included); an error ends the process with a non-zero status.
"""

import base64
import json
import sys
import time

from keras_transformer.export.onnx.runtime import OnnxTranslator

HEAVY_MODULES = ("tensorflow", "tensorflow_text", "keras", "tf2onnx")


def _text(entry):
    return base64.b64decode(entry["base64"]) if isinstance(entry,
                                                          dict) else entry


def translate(request: dict) -> dict:
    """Runs the request's texts through each mode's text graph."""
    translator = OnnxTranslator(request["onnx_dir"])
    texts = [_text(entry) for entry in request["texts"]]
    size = int(request.get("batch_size", 32))
    results = {}
    for mode in request["modes"]:
        start = time.perf_counter()
        pairs = []
        for first in range(0, len(texts), size):
            pairs += translator(texts[first:first + size],
                                greedy=mode == "greedy")
        results[mode] = {"translation": [t for t, _ in pairs],
                         "score": [s for _, s in pairs],
                         "seconds": time.perf_counter() - start}
    heavy = sorted(name for name in HEAVY_MODULES if name in sys.modules)
    assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    return {"results": results, "modules": heavy}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m keras_transformer.export.onnx.text_check "
              "REQUEST.json ANSWER.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as file:
        request = json.load(file)
    answer = translate(request)
    with open(argv[1], "w", encoding="utf-8") as file:
        json.dump(answer, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
