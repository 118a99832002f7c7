"""`export.onnx.convert`: one search as one ONNX graph.

The token graphs of the trained run's export (`onnx_export`, written once
per pytest run in `tests/export/conftest.py`) are checked as files and run
without our Python helpers.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from keras_transformer.export.onnx import convert as onnx_convert
from keras_transformer.text.special_tokens import END_ID
from tests.export.onnx_helpers import dims, fake_translator


def test_convert_rejects_unknown_mode():
    with pytest.raises(ValueError, match="`mode`"):
        onnx_convert.convert_search(fake_translator(), "sampling")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_token_graph_is_one_loop_with_named_dims(onnx_export, mode):
    model = onnx.load(onnx_export.onnx_dir / f"{mode}.onnx")
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    assert [(i.name, dims(i)) for i in model.graph.input] == [
        ("source_ids", ["batch", "source_length"])]
    assert model.graph.input[0].type.tensor_type.elem_type == (
        onnx.TensorProto.INT32)
    assert sorted((o.name, dims(o)) for o in model.graph.output) == [
        ("score", ["batch"]), ("target_ids", ["batch", "target_length"])]
    assert [n.op_type for n in model.graph.node].count("Loop") == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_raw_token_graph_rejects_ids_outside_the_vocabulary(onnx_export,
                                                            mode):
    # Without our Python helper too: the graph itself fails, in a node
    # named after the rule (onnxruntime names the failing node).
    session = ort.InferenceSession(str(onnx_export.onnx_dir /
                                       f"{mode}.onnx"))
    vocab = onnx_export.translator.source_vocab_size
    for bad in (vocab, vocab + 7, -2):
        with pytest.raises(Exception, match="source_ids_in_vocabulary"):
            session.run(["target_ids"], {
                "source_ids": np.array([[5, bad, END_ID]], np.int32)})
    ids, = session.run(["target_ids"], {
        "source_ids": np.array([[5, 6, END_ID]], np.int32)})
    assert ids.shape[0] == 1
