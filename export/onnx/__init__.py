"""The ONNX export and its TensorFlow-free runtime.

    convert      tf2onnx: a Translator's search as one ONNX graph
    graph        graph helpers (subgraph walk, constant folding, dim names)
    lean         a leaner decoder step (hoisted invariants, fused LayerNorm)
    quantize     int8 MatMul weights (dynamic quantization)
    text_graph   text -> text graphs (onnxruntime-extensions SentencePiece)
    beam_op      the opt-in graph on onnxruntime's BeamSearch op
    export       export_onnx: writes and verifies an export directory
    verify       verify_onnx: every graph against the Translator
    runtime      OnnxTranslator: numpy + onnxruntime (+ extensions) only
    text_check   the subprocess that runs the text graphs without TensorFlow

This `__init__` imports nothing: `import keras_transformer.export.onnx
.runtime` works where TensorFlow is not installed. The main functions are
one attribute away (imported on first use).
"""

from keras_transformer._lazy import lazy_attributes

_LAZY_NAMES = {
    "export_onnx": ".export",
    "convert_search": ".convert",
    "verify_onnx": ".verify",
    "graph_summary": ".verify",
    "OnnxTranslator": ".runtime",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)
