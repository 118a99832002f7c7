"""Write a Translator as a SavedModel for TensorFlow Serving, and verify it.

The SavedModel's signatures (ARCHITECTURE.md, "Contracts"):

- `serving_default`: `text` string [B] -> `translation` string [B],
  `score` float32 [B]; beam search with the run's defaults;
- `translate_greedy`: the same, greedy;
- `translate_tokens`: `source_ids` int32 [B, S] -> `target_ids` int32
  [B, L], `score` float32 [B]; beam search;
- `translate_xla`, `translate_greedy_xla`: `serving_default` and
  `translate_greedy` with their search compiled by XLA (the tokenizers
  outside it): the same outputs, several times faster at batch 1 on CPU.
  Each (batch size, source length rounded up to 16) compiles once, on
  first use; TensorFlow Serving runs them only when started with
  `--xla_cpu_compilation_enabled=true` (the other signatures need
  nothing).

It loads with `tf.saved_model.load` in a process that imports only
`tensorflow` and `tensorflow_text`; `verify_saved_model` checks exactly that,
in a fresh subprocess.
"""

import json
import os
import subprocess
import sys
import tempfile

import tensorflow as tf

from keras_transformer.contract import (
    SAVED_MODEL_SCORE_TOLERANCE,
    SAVED_MODEL_SIGNATURES,
)
from keras_transformer.export import parity

SIGNATURES = SAVED_MODEL_SIGNATURES
# Text signatures and the Translator function each must equal: the XLA
# signatures are held to the graph's searches, not to themselves.
TEXT_SIGNATURES = {"serving_default": "translate",
                   "translate_greedy": "translate_greedy",
                   "translate_xla": "translate",
                   "translate_greedy_xla": "translate_greedy"}

# Runs in a fresh interpreter: only TensorFlow and TF Text are imported.
_CHECK_SCRIPT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)
request = json.load(open(sys.argv[2], encoding="utf-8"))
loaded = tf.saved_model.load(sys.argv[1])
text = tf.constant(request["text"], tf.string)
out = {"signatures": sorted(loaded.signatures)}
for name in request["text_signatures"]:
    result = loaded.signatures[name](text=text)
    out[name] = {"translation": [t.decode("utf-8") for t in
                                 result["translation"].numpy()],
                 "score": result["score"].numpy().tolist()}
ids = tf.constant(request["source_ids"], tf.int32)
result = loaded.signatures["translate_tokens"](source_ids=ids)
out["translate_tokens"] = {"target_ids": result["target_ids"].numpy().tolist(),
                           "score": result["score"].numpy().tolist()}
out["modules"] = sorted(m for m in sys.modules
                       if m.startswith("keras_transformer"))
json.dump(out, open(sys.argv[3], "w", encoding="utf-8"))
"""


def export_saved_model(translator, export_dir: str) -> str:
    """Writes `translator` as a SavedModel in `export_dir` and returns it.

    For TensorFlow Serving, `export_dir` is a numbered version folder, e.g.
    `models/translator/1`.
    """
    signatures = {
        "serving_default": translator.translate.get_concrete_function(),
        "translate_greedy":
            translator.translate_greedy.get_concrete_function(),
        "translate_tokens":
            translator.translate_tokens.get_concrete_function(),
        "translate_xla": translator.translate_xla.get_concrete_function(),
        "translate_greedy_xla":
            translator.translate_greedy_xla.get_concrete_function(),
    }
    tf.saved_model.save(translator, os.fspath(export_dir),
                        signatures=signatures)
    return os.fspath(export_dir)


def _expected(translator, texts, source_ids):
    out = {}
    for name, function in TEXT_SIGNATURES.items():
        result = getattr(translator, function)(tf.constant(texts, tf.string))
        out[name] = {"translation": [t.decode("utf-8") for t in
                                     result["translation"].numpy()],
                     "score": result["score"].numpy().tolist()}
    result = translator.translate_tokens(source_ids)
    out["translate_tokens"] = {
        "target_ids": result["target_ids"].numpy().tolist(),
        "score": result["score"].numpy().tolist()}
    return out


def verify_saved_model(export_dir: str, translator, texts: list[str],
                       score_tolerance: float = SAVED_MODEL_SCORE_TOLERANCE
                       ) -> dict:
    """Loads the SavedModel in a fresh process and compares with `translator`.

    The subprocess imports only `tensorflow` and `tensorflow_text`. Every
    signature must give the same translations / token ids as the in-process
    Translator on every sentence, and scores within `score_tolerance`
    (float32 round-off of a separately traced graph).

    Returns:
        A report dict: `sentences`, `comparisons` (sentences times
        signatures), `identical` (outputs identical to the Translator's),
        `max_score_difference`, `signatures`, and `parity`
        (`export.parity.compare` over every signature's rows).

    Raises:
        RuntimeError: the subprocess failed, naming its error output.
        ValueError: an output or score differs, naming the signature, the
            sentence and both outputs.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("`texts` must not be empty. Received: texts=[]")
    source_ids = translator.source_ids(tf.constant(texts, tf.string))
    expected = _expected(translator, texts, source_ids)
    with tempfile.TemporaryDirectory() as tmp:
        request = os.path.join(tmp, "request.json")
        answer = os.path.join(tmp, "answer.json")
        with open(request, "w", encoding="utf-8") as f:
            json.dump({"text": texts,
                       "text_signatures": list(TEXT_SIGNATURES),
                       "source_ids": source_ids.numpy().tolist()}, f)
        process = subprocess.run(
            [sys.executable, "-c", _CHECK_SCRIPT, os.fspath(export_dir),
             request, answer],
            capture_output=True, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if process.returncode:
            raise RuntimeError(
                "Loading the SavedModel in a fresh TensorFlow process "
                f"failed:\n{process.stderr[-3000:]}")
        with open(answer, encoding="utf-8") as f:
            got = json.load(f)
    missing = sorted(set(SIGNATURES) - set(got["signatures"]))
    if missing:
        raise ValueError(f"The SavedModel lacks signatures {missing}.")
    if got["modules"]:
        raise ValueError(
            f"Loading imported keras_transformer: {got['modules']}.")
    rows = {"got": [], "expected": [], "got_scores": [],
            "expected_scores": [], "inputs": []}
    for name in SIGNATURES:
        key = "target_ids" if name == "translate_tokens" else "translation"
        for side, outputs in (("got", got), ("expected", expected)):
            rows[side] += outputs[name][key]
            rows[f"{side}_scores"] += outputs[name]["score"]
        rows["inputs"] += [f"{name}: {text}" for text in texts]
    result = parity.check(
        parity.compare(**rows, score_tolerance=score_tolerance),
        "the SavedModel", "the Translator")
    return {"sentences": len(texts), "identical": result["identical"],
            "comparisons": result["rows"],
            "max_score_difference": result["max_score_difference"],
            "signatures": got["signatures"], "parity": result}
