"""Write a web export and check it in Node.js against the Python runtimes.

`export_web_checked` is the step `export_run` takes for format "web" (and
"all"): the folder is written from the verified ONNX export, then, where
Node.js is installed, its translator.js translates the verification
sentences with both searches and must give

- the source ids of the Translator's tokenizer (SentencePiece in
  WebAssembly against TensorFlow Text's),
- the target ids of onnxruntime on the same token graphs (float32 or
  int8: the browser runs the graphs of the ONNX export), and
- the strings of the Translator's detokenizer for those ids.

The test suite compares it with the Translator on held-out sentences and
every bad input, in Node.js and in a real browser.
"""

import shutil

from keras_transformer.contract import SCORE_TOLERANCE, SEARCH_MODES


def export_web_checked(translator, onnx_dir: str, web_dir: str,
                       texts: list[str], required: bool = True) -> dict:
    """Writes `web_dir` from the ONNX export `onnx_dir`; checks it.

    Args:
        translator: the `Translator` the ONNX export was made from.
        onnx_dir: a verified ONNX export directory.
        web_dir: the folder to write.
        texts: the verification sentences.
        required: bool; when False, missing npm files give a report
            `{"skipped": reason}` instead of an error (format "all").

    Returns:
        `export_web`'s report plus `verification`: {"sentences",
        "identical": {mode: count}} or {"skipped": reason} where Node.js
        is not installed.

    Raises:
        FileNotFoundError: the npm files are missing and `required`.
        ValueError: translator.js disagrees with the Python runtimes.
    """
    from keras_transformer.export.web.export import export_web, runtime_files

    try:
        runtime_files()
    except FileNotFoundError as error:
        if required:
            raise
        return {"skipped": str(error)}
    report = export_web(onnx_dir, web_dir)
    if shutil.which("node") is None:
        report["verification"] = {
            "skipped": "Node.js is not installed (`node` not on PATH)"}
        return report
    report["verification"] = check_web(translator, onnx_dir, web_dir, texts)
    return report


def check_web(translator, onnx_dir: str, web_dir: str,
              texts: list[str]) -> dict:
    """translator.js in Node.js against the Python runtimes (see module).

    Returns {"sentences", "identical": {mode: count}}; raises ValueError
    naming the first sentence that differs.
    """
    import tensorflow as tf

    from keras_transformer.export.onnx.runtime import OnnxTranslator
    from keras_transformer.export.web.node import node_translate

    texts = list(texts)
    answer = node_translate(web_dir, [{"texts": texts, "beam": mode == "beam"}
                                      for mode in SEARCH_MODES])
    runtime = OnnxTranslator(onnx_dir)
    source_ids = translator.source_ids(tf.constant(texts, tf.string)).numpy()
    identical = {}
    for mode, result in zip(SEARCH_MODES, answer["results"]):
        if "error" in result:
            raise ValueError(
                f"translator.js failed on the verification sentences "
                f"({mode}): {result['error']['message']}. Received: "
                f"web_dir={web_dir!r}")
        expected = runtime.translate_tokens(source_ids, mode)
        strings = translator.target_tokenizer.detokenize(
            expected["target_ids"]).numpy()
        empty = source_ids[:, 0] == int(runtime.config["end_id"])
        same = 0
        for row, text in enumerate(texts):
            if (result["sourceIds"][row] != source_ids[row].tolist()
                    or result["targetIds"][row]
                    != expected["target_ids"][row].tolist()
                    or result["translations"][row] != (
                        "" if empty[row] else strings[row].decode("utf-8"))
                    or abs(result["scores"][row] - (
                        0.0 if empty[row] else expected["score"][row]))
                    > SCORE_TOLERANCE):
                raise ValueError(
                    f"translator.js translates {text!r} ({mode}) otherwise "
                    "than the Python runtimes: "
                    f"{result['translations'][row]!r}. Received: "
                    f"web_dir={web_dir!r}")
            same += 1
        identical[mode] = same
    return {"sentences": len(texts), "identical": identical,
            "node_load_seconds": round(float(answer["load_seconds"]), 3)}
