"""Runs ONNX text graphs with onnxruntime-extensions, for the Marian tests.

onnxruntime-extensions has crashed a process that had imported
TensorFlow, so `tests/test_marian_tokenizers.py` runs the text graphs
here, in a subprocess that imports only numpy, onnx, onnxruntime and
onnxruntime_extensions:

    python marian_tokenizer_worker.py JOB.json RESULT.json

JOB.json: {"runs": [{"model": path of a text graph, "texts": [str]}]}.
RESULT.json: {"runs": [{"ids": [[id, ...]], "translation": [str]}],
"modules": [heavy modules imported]}. "ids" are the graph's own
`search/source_ids` (the tokens before the first [END]), made an output
of the graph here.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_extensions
from onnx import TensorProto, helper

SOURCE_IDS = "search/source_ids"
END_ID = 3


def run(path: str, texts: list[str]) -> dict:
    model = onnx.load(path)
    model.graph.output.append(helper.make_tensor_value_info(
        SOURCE_IDS, TensorProto.INT32, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.register_custom_ops_library(
        onnxruntime_extensions.get_library_path())
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    translation, ids = session.run(
        ["translation", SOURCE_IDS],
        {"text": np.array(texts, dtype=object)})
    rows = [row.tolist()[:row.tolist().index(END_ID)] for row in ids]
    return {"ids": rows[:len(texts)],
            "translation": [str(t) for t in translation.tolist()]}


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as file:
        job = json.load(file)
    result = {"runs": [run(r["model"], r["texts"]) for r in job["runs"]],
              "modules": sorted(name for name in (
                  "tensorflow", "tensorflow_text", "keras")
                  if name in sys.modules)}
    with open(argv[1], "w", encoding="utf-8") as file:
        json.dump(result, file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
