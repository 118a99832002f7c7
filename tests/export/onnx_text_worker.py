"""Runs text ONNX models with onnxruntime-extensions, outside pytest.

onnxruntime-extensions has crashed a process that had imported TensorFlow,
so `tests/export/test_onnx_text_graph.py` runs every onnxruntime session
here, in a subprocess:

    python onnx_text_worker.py JOB.json RESULT.json

JOB.json: {"runs": [{"model": path, "texts": [base64 of UTF-8 or raw
bytes, ...]}]}. Texts that are not valid UTF-8 (the Python binding of
onnxruntime cannot feed them) are fed as a string initializer that
replaces the `text` input. RESULT.json: {"runs": [{"translation": [...],
"score": [...]} or {"error": message}], "tensorflow_loaded": false}.
"""

import base64
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_extensions
from onnx import TensorProto, helper


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.register_custom_ops_library(
        onnxruntime_extensions.get_library_path())
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def run(model_path: str, texts: list[bytes], sessions: dict) -> dict:
    """Translates `texts` with the model at `model_path`."""
    try:
        strings = [t.decode("utf-8") for t in texts]
        feeds = {"text": np.array(strings, dtype=object).reshape(-1)}
        key = model_path
    except UnicodeDecodeError:
        feeds, key = {}, None
    try:
        if key not in sessions:
            model = onnx.load(model_path)
            if key is None:  # Raw bytes: a constant in place of the input.
                model.graph.initializer.append(helper.make_tensor(
                    "text", TensorProto.STRING, [len(texts)], texts))
                del model.graph.input[:]
            session = _session(model)
            if key is None:
                return _outputs(session.run(["translation", "score"], {}))
            sessions[key] = session
        return _outputs(sessions[key].run(["translation", "score"], feeds))
    except Exception as error:  # Reported to the test.
        return {"error": f"{type(error).__name__}: {error}"}


def _outputs(outputs: list) -> dict:
    translation, score = outputs
    return {"translation": translation.tolist(), "score": score.tolist(),
            "shapes": [list(translation.shape), list(score.shape)],
            "dtypes": [str(translation.dtype), str(score.dtype)]}


def main(job_path: str, result_path: str) -> None:
    with open(job_path, encoding="utf-8") as file:
        job = json.load(file)
    sessions = {}
    results = [run(r["model"], [base64.b64decode(t) for t in r["texts"]],
                   sessions) for r in job["runs"]]
    assert "tensorflow" not in sys.modules, "the worker imported tensorflow"
    with open(result_path, "w", encoding="utf-8") as file:
        json.dump({"runs": results,
                   "tensorflow_loaded": "tensorflow" in sys.modules}, file)


if __name__ == "__main__":
    main(*sys.argv[1:3])
