"""The input rules hold at each runtime's own entry point.

`keras_transformer.contract` states the rules once; here each is tried on
what a user of that runtime calls directly, without this package's Python
helpers in between: a raw onnxruntime session on the token graphs, a raw
session on the text graphs (onnxruntime + onnxruntime-extensions, in a
process where TensorFlow cannot be imported), and the SavedModel's
signatures loaded with `tf.saved_model.load`. Every answer is compared
with the Translator's.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.contract import (
    ONNX_GRAPHS,
    ONNX_TEXT_GRAPHS,
    SEARCH_MODES,
    TOKEN_OUTPUTS,
)
from keras_transformer.text.special_tokens import END_ID, PAD_ID

pytestmark = pytest.mark.slow

TOKEN_FUNCTIONS = {"beam": "translate_tokens",
                   "greedy": "translate_tokens_greedy"}
TEXT_SIGNATURES = {"beam": "serving_default", "greedy": "translate_greedy"}


def token_cases(translator):
    """Name -> int32 ids (B, S) for each token-level rule."""
    limit = translator.source_limit
    long_row = np.full([1, limit + 10], 5, np.int32)
    long_row[0, -1] = END_ID
    return {
        "zero columns": np.zeros([3, 0], np.int32),
        "empty batch": np.zeros([0, 5], np.int32),
        "empty batch, zero columns": np.zeros([0, 0], np.int32),
        "only [END] and padding": np.array(
            [[END_ID, PAD_ID, PAD_ID], [5, 6, END_ID]], np.int32),
        "all padding": np.array([[PAD_ID, PAD_ID], [5, END_ID]], np.int32),
        "longer than max_source_tokens": long_row,
    }


def raw_onnx(path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path),
                                   providers=["CPUExecutionProvider"])

    def run(ids):
        outputs = session.run(list(TOKEN_OUTPUTS), {"source_ids": ids})
        return dict(zip(TOKEN_OUTPUTS, outputs))
    return run


def raw_saved_model(path, signature):
    function = tf.saved_model.load(str(path)).signatures[signature]

    def run(ids):
        return {key: value.numpy() for key, value in function(
            source_ids=tf.constant(ids, tf.int32)).items()}
    return run


# The SavedModel's one token signature is beam search.
@pytest.mark.parametrize("entry_point, mode", [
    ("onnxruntime", "beam"), ("onnxruntime", "greedy"),
    ("saved_model", "beam")])
def test_token_rules_at_the_raw_entry_point(onnx_export, entry_point, mode):
    translator = onnx_export.translator
    if entry_point == "onnxruntime":
        run = raw_onnx(onnx_export.onnx_dir / ONNX_GRAPHS[mode])
    else:
        run = raw_saved_model(onnx_export.saved_model_dir,
                              "translate_tokens")
    expected_function = getattr(translator, TOKEN_FUNCTIONS[mode])
    for name, ids in token_cases(translator).items():
        got = run(ids)
        expected = {key: value.numpy()
                    for key, value in expected_function(ids).items()}
        assert got["target_ids"].shape == expected["target_ids"].shape, name
        np.testing.assert_array_equal(got["target_ids"],
                                      expected["target_ids"], err_msg=name)
        np.testing.assert_allclose(got["score"], expected["score"],
                                   atol=1e-3, err_msg=name)
        rows = ids.shape[0]
        assert got["score"].shape == (rows,), name
        if name == "zero columns":
            assert got["target_ids"].shape == (rows, 0)
            assert not got["score"].any()
        if name in ("only [END] and padding", "all padding"):
            assert not got["target_ids"][0].any() and got["score"][0] == 0
    # Truncation: the long row translates as its first max_source_tokens.
    long_row = token_cases(translator)["longer than max_source_tokens"]
    truncated = np.concatenate(
        [long_row[:, :translator.source_limit], [[END_ID]]],
        axis=1).astype(np.int32)
    np.testing.assert_array_equal(run(long_row)["target_ids"],
                                  run(truncated)["target_ids"])


@pytest.mark.parametrize("entry_point", ["onnxruntime", "saved_model"])
def test_ids_outside_the_vocabulary_fail_at_the_raw_entry_point(
        onnx_export, entry_point):
    size = onnx_export.translator.source_vocab_size
    if entry_point == "onnxruntime":
        run = raw_onnx(onnx_export.onnx_dir / ONNX_GRAPHS["beam"])
        errors = Exception  # onnxruntime's own error types.
    else:
        run = raw_saved_model(onnx_export.saved_model_dir,
                              "translate_tokens")
        errors = tf.errors.InvalidArgumentError
    for bad in (size, -1):
        with pytest.raises(errors, match="source_ids"):
            run(np.array([[5, bad, END_ID]], np.int32))


# Raw text-graph sessions, in a process where TensorFlow cannot be
# imported (onnxruntime-extensions crashes one that has).
_TEXT_SCRIPT = r"""
import json, sys
for name in ("tensorflow", "keras", "tensorflow_text"):
    sys.modules[name] = None
import numpy as np
import onnxruntime as ort
import onnxruntime_extensions

paths, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
options = ort.SessionOptions()
options.register_custom_ops_library(onnxruntime_extensions.get_library_path())
answer = {}
for mode, path in paths.items():
    session = ort.InferenceSession(path, options,
                                   providers=["CPUExecutionProvider"])
    for name, batch in texts.items():
        translation, score = session.run(
            ["translation", "score"], {"text": np.array(batch, dtype=object)})
        answer[f"{mode} {name}"] = [[str(t) for t in translation.tolist()],
                                    score.tolist()]
print(json.dumps(answer))
"""


def test_text_rules_at_the_raw_entry_point(onnx_export):
    long_text = " ".join(onnx_export.texts[:1] * 200)
    cases = {"empty text": ["", onnx_export.texts[0]],
             "whitespace only": [" \t\u3000\n\u00a0"],
             "empty batch": [],
             "longer than max_source_tokens": [long_text]}
    paths = {mode: str(onnx_export.onnx_dir / ONNX_TEXT_GRAPHS[mode])
             for mode in SEARCH_MODES}
    process = subprocess.run(
        [sys.executable, "-c", _TEXT_SCRIPT, json.dumps(paths),
         json.dumps(cases)], capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert process.returncode == 0, process.stderr[-3000:]
    answer = json.loads(process.stdout.strip().splitlines()[-1])
    translator = onnx_export.translator
    saved = tf.saved_model.load(str(onnx_export.saved_model_dir))
    for mode in SEARCH_MODES:
        for name, batch in cases.items():
            translations, scores = answer[f"{mode} {name}"]
            assert len(translations) == len(scores) == len(batch), name
            expected = saved.signatures[TEXT_SIGNATURES[mode]](
                text=tf.constant(batch, tf.string))
            assert translations == [t.decode() for t in
                                    expected["translation"].numpy()], name
            np.testing.assert_allclose(scores, expected["score"].numpy(),
                                       atol=1e-3, err_msg=name)
            python = translator(batch, beam_size=(
                None if mode == "beam" else 1)) if batch else []
            assert translations == [t for t, _ in python], name
        assert answer[f"{mode} empty text"][0][0] == ""
        assert answer[f"{mode} empty text"][1][0] == 0.0
        assert answer[f"{mode} whitespace only"] == [[""], [0.0]]
