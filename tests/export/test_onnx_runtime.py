"""`export.onnx.runtime`: `OnnxTranslator`, its sessions and input rules.

The trained run's export (`onnx_export`, written once per pytest run in
`tests/export/conftest.py`) is run here and, for the text graphs, in
subprocesses where TensorFlow cannot be imported: onnxruntime-extensions
crashes a process that has imported TensorFlow (this one has).
"""

import base64
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transformer.export.onnx.runtime import (
    OnnxTranslator,
    make_session,
    read_config,
    text_feed,
)
from keras_transformer.export.onnx.verify import bad_input_texts
from keras_transformer.text.special_tokens import END_ID
from tests.export.onnx_helpers import INVALID_UTF8, reverse_task
from tests.readme import python_block

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_text_feed_keeps_the_bytes_of_every_text():
    feed = text_feed(["one", b"two", "caf\u00e9 \U0001f600"])
    assert feed.dtype == object
    assert feed.tolist() == ["one", "two", "caf\u00e9 \U0001f600"]
    # Invalid UTF-8 anywhere: every text goes as its bytes.
    escaped = INVALID_UTF8.decode("utf-8", "surrogateescape")
    feed = text_feed(["caf\u00e9", INVALID_UTF8, escaped, "\ud800"])
    assert feed.dtype.kind == "S"
    assert feed.tolist() == ["caf\u00e9".encode(), INVALID_UTF8,
                             INVALID_UTF8, b"\xed\xa0\x80"]


def test_make_session_refuses_extensions_where_tensorflow_is(tmp_path):
    assert "tensorflow" in sys.modules
    with pytest.raises(RuntimeError, match="TensorFlow"):
        make_session(tmp_path / "beam_text.onnx", extensions=True)


def test_runtime_rejects_directory_without_export(tmp_path):
    with pytest.raises(ValueError, match="`onnx_dir`"):
        OnnxTranslator(tmp_path / "missing")
    with pytest.raises(ValueError, match="`onnx_dir`"):
        OnnxTranslator(tmp_path)
    config = tmp_path / "onnx_config.json"
    config.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="another format"):
        read_config(tmp_path)
    # A version-1 export: token graphs and vocabulary files only.
    config.write_text(json.dumps({
        "format": "keras-transformer-onnx", "version": 1,
        "graphs": {"beam": "beam.onnx"}}))
    with pytest.raises(ValueError, match="version-2 or later export"):
        OnnxTranslator(tmp_path)


# -- the export of the trained run (slow) -----------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["beam", "greedy"])
def test_onnxruntime_ids_equal_translator_ids(reverse_digits,
                                              reverse_digits_onnx, mode):
    # The model that has learned its task (`reverse_digits`): the ids
    # compared are mostly right translations.
    translator = reverse_digits.translator
    texts, expected_texts = reverse_task(56, seed=2)
    ids = translator.source_ids(tf.constant(texts)).numpy()
    function = {"beam": translator.translate_tokens,
                "greedy": translator.translate_tokens_greedy}[mode]
    expected = function(ids)
    got = reverse_digits_onnx.translate_tokens(ids, mode)
    assert got["target_ids"].dtype == np.int32
    np.testing.assert_array_equal(got["target_ids"],
                                  expected["target_ids"].numpy())
    np.testing.assert_allclose(got["score"], expected["score"].numpy(),
                               atol=1e-4)
    # The model learned the task: many outputs are the reversed words.
    translations = translator.target_tokenizer.detokenize(
        got["target_ids"]).numpy()
    correct = sum(t.decode() == r for t, r in zip(translations,
                                                  expected_texts))
    assert correct >= len(texts) // 4


@pytest.mark.slow
def test_runtime_token_errors_and_empty_inputs(onnx_export):
    runtime, translator = onnx_export.runtime, onnx_export.translator
    size = translator.source_vocab_size
    with pytest.raises(ValueError, match="`source_ids`.*containing 1000"):
        runtime.translate_tokens([[4, 1000, 3]])
    with pytest.raises(ValueError, match=f"`source_ids`.*containing {size}"):
        runtime.translate_tokens(np.array([[4, size, 3]], np.int64),
                                 "greedy")
    with pytest.raises(ValueError, match="`source_ids`.*containing -1"):
        runtime.translate_tokens([[-1, 3]])
    with pytest.raises(ValueError, match="`source_ids` must be a 2-D"):
        runtime.translate_tokens(np.zeros([3], np.int32))
    with pytest.raises(ValueError, match="`source_ids` must be a 2-D"):
        runtime.translate_tokens(np.zeros([1, 2], np.float32))
    with pytest.raises(ValueError, match="`mode`.*mode='top'"):
        runtime.translate_tokens(np.zeros([1, 2], np.int32), "top")
    empty = runtime.translate_tokens(np.zeros([0, 3], np.int32))
    assert empty["target_ids"].shape == (0, 0)
    assert empty["score"].shape == (0,)
    # No columns: the empty-input rule, as in TensorFlow.
    for mode, function in (("beam", translator.translate_tokens),
                           ("greedy", translator.translate_tokens_greedy)):
        got = runtime.translate_tokens(np.zeros([2, 0], np.int32), mode)
        expected = function(tf.zeros([2, 0], tf.int32))
        assert got["target_ids"].shape == expected["target_ids"].shape
        assert got["target_ids"].shape == (2, 0)
        assert got["score"].tolist() == expected["score"].numpy().tolist()
        # Rows of only [END] and padding: no token, score 0.
        got = runtime.translate_tokens([[END_ID, 0], [5, END_ID]], mode)
        assert got["target_ids"][0].tolist() == [0] * got[
            "target_ids"].shape[1]
        assert got["score"][0] == 0.0 and got["score"][1] != 0.0


@pytest.mark.slow
@pytest.mark.parametrize("texts, greedy, error, match", [
    (None, False, TypeError, "`texts`"),
    (5, False, TypeError, "`texts`"),
    ([1, "one"], False, TypeError, r"texts\[0\]"),
    (["one", None], True, TypeError, r"texts\[1\]"),
    ("one", "yes", TypeError, "`greedy`")])
def test_runtime_rejects_bad_texts(onnx_export, texts, greedy, error,
                                   match):
    with pytest.raises(error, match=match):
        onnx_export.runtime(texts, greedy=greedy)


@pytest.mark.slow
def test_runtime_refuses_text_graphs_where_tensorflow_is(onnx_export,
                                                         tmp_path):
    with pytest.raises(RuntimeError, match="TensorFlow"):
        onnx_export.runtime(["one two"])
    copy = tmp_path / "copy"
    shutil.copytree(onnx_export.onnx_dir, copy)
    os.remove(copy / "greedy_text.onnx")
    with pytest.raises(ValueError, match="greedy text graph"):
        OnnxTranslator(copy)


# The TensorFlow-free runtime: `import tensorflow` fails in this process.
RUNTIME_SCRIPT = r"""
import sys
sys.modules["tensorflow"] = None
sys.modules["keras"] = None
import base64, json
try:
    import tensorflow
    blocked = False
except ImportError:
    blocked = True
import numpy as np
from keras_transformer.export.onnx.runtime import OnnxTranslator

request = json.load(open(sys.argv[1], encoding="utf-8"))
def text(entry):
    if isinstance(entry, str):
        return entry
    data = base64.b64decode(entry["base64"])
    return data.decode("utf-8", "surrogateescape") if entry["str"] else data
texts = [text(entry) for entry in request["texts"]]
runtime = OnnxTranslator(request["onnx_dir"])
out = {"blocked": blocked}
for mode in ("beam", "greedy"):
    out[mode] = runtime(texts, greedy=mode == "greedy")
    result = runtime.translate_tokens(np.array(request["ids"]), mode)
    out[mode + "_tokens"] = {key: value.tolist()
                             for key, value in result.items()}
out["single"] = runtime(texts[0], greedy=True)
out["empty"] = [runtime([]), runtime([], greedy=True)]
errors = []
for call in (lambda: runtime.translate_tokens([[4, 100000, 3]]),
             lambda: runtime.translate_tokens([[3]], mode="top"),
             lambda: runtime(["one"], greedy=None),
             lambda: runtime([b"one", 2])):
    try:
        call()
        errors.append(None)
    except (TypeError, ValueError) as error:
        errors.append(f"{type(error).__name__}: {error}")
out["errors"] = errors
out["modules"] = sorted(name for name, module in sys.modules.items()
                        if module is not None and name.split(".")[0] in (
                            "tensorflow", "keras", "tensorflow_text",
                            "tf2onnx"))
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""


def run_script(script, request, tmp_path):
    request_path, answer_path = tmp_path / "request.json", tmp_path / "a.json"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    process = subprocess.run(
        [sys.executable, "-c", script, str(request_path), str(answer_path)],
        capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(answer_path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_tensorflow_free_runtime_equals_translator(onnx_export, tmp_path):
    translator = onnx_export.translator
    texts = onnx_export.texts[:30] + bad_input_texts(translator,
                                                     onnx_export.texts)
    texts += ["  nine\u3000four\t", INVALID_UTF8, "\u2603"]
    # Invalid UTF-8 as bytes, and as the str Python decodes them to.
    entries = [t if isinstance(t, str) else
               {"base64": base64.b64encode(t).decode(), "str": False}
               for t in texts]
    entries.append({"base64": base64.b64encode(INVALID_UTF8).decode(),
                    "str": True})
    strings = [t.encode() if isinstance(t, str) else t for t in texts]
    strings.append(INVALID_UTF8)
    ids = translator.source_ids(tf.constant(strings[:40])).numpy()
    got = run_script(RUNTIME_SCRIPT, {
        "onnx_dir": str(onnx_export.onnx_dir), "texts": entries,
        "ids": ids.tolist()}, tmp_path)
    assert got["blocked"] and got["modules"] == []
    for mode, function, tokens in (
            ("beam", translator.translate, translator.translate_tokens),
            ("greedy", translator.translate_greedy,
             translator.translate_tokens_greedy)):
        expected = function(tf.constant(strings))
        assert [t for t, _ in got[mode]] == [
            t.decode() for t in expected["translation"].numpy()]
        np.testing.assert_allclose([s for _, s in got[mode]],
                                   expected["score"].numpy(), atol=1e-4)
        expected = tokens(ids)
        assert got[mode + "_tokens"]["target_ids"] == expected[
            "target_ids"].numpy().tolist()
        np.testing.assert_allclose(got[mode + "_tokens"]["score"],
                                   expected["score"].numpy(), atol=1e-4)
    # Bytes and their surrogate-escaped str give the same translation.
    assert got["beam"][-1] == got["beam"][-3]
    assert got["beam"][len(onnx_export.texts[:30])] == ["", 0.0]
    assert got["single"][0] == got["greedy"][0][0]
    assert got["single"][1] == pytest.approx(got["greedy"][0][1], abs=1e-4)
    assert got["empty"] == [[], []]
    assert got["errors"][0].startswith("ValueError: `source_ids`")
    assert "containing 100000" in got["errors"][0]
    assert got["errors"][1].startswith("ValueError: `mode`")
    assert got["errors"][2].startswith("TypeError: `greedy`")
    assert got["errors"][3].startswith("TypeError: `texts` must contain")


@pytest.mark.slow
def test_readme_python_example_runs_without_tensorflow(onnx_export):
    code = python_block("beam_text.onnx")
    code = code.replace("exported/onnx", str(onnx_export.onnx_dir))
    script = ("import json, sys\nsys.modules['tensorflow'] = None\n" + code +
              "\nassert 'keras' not in sys.modules\n"
              "print(json.dumps([[str(t) for t in translation],"
              " score.tolist()]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, check=True)
    translations, scores = json.loads(out.stdout.strip().splitlines()[-1])
    expected = onnx_export.translator.translate(
        tf.constant(["forty-two", ""]))
    assert translations == [t.decode() for t in
                            expected["translation"].numpy()]
    np.testing.assert_allclose(scores, expected["score"].numpy(), atol=1e-3)
    assert translations[1] == "" and scores[1] == 0.0
