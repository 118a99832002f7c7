"""Write a web export and check it in Node.js against the Python runtimes.

`export_web_checked` is the step `export_run` takes for format "web" (and
"all"): the folder is written from the verified ONNX export, then, where
Node.js is installed, its translator.js translates the verification
sentences with both searches and must give

- the source ids of the Translator's tokenizer (SentencePiece in
  WebAssembly against TensorFlow Text's),
- the target ids of onnxruntime on the ONNX export's token graphs
  (float32 or int8; the browser runs the same searches in standard ONNX
  operators: the ONNX export's own graphs, or, where these use
  onnxruntime's fused operators, a standard export made for the page), and
- the strings of the Translator's detokenizer for those ids.

The test suite compares it with the Translator on held-out sentences and
every bad input, in Node.js and in a real browser.
"""

import shutil
import tempfile

from keras_transformer.contract import (
    ONNX_FORMAT,
    ONNX_MANIFEST,
    SEARCH_MODES,
    read_manifest,
)


def export_web_checked(translator, onnx_dir: str, web_dir: str,
                       texts: list[str], required: bool = True) -> dict:
    """Writes `web_dir` from the ONNX export `onnx_dir`; checks it.

    An export with onnxruntime's operators (`onnx_config.json`
    "operators") gives the page a standard-operator export of the same
    searches, made here; its ids are checked against `onnx_dir`'s.

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
    manifest = read_manifest(onnx_dir, ONNX_MANIFEST, ONNX_FORMAT,
                             "onnx_dir")
    if manifest["operators"] == "standard":
        report = export_web(onnx_dir, web_dir)
    else:
        # onnxruntime-web has no com.microsoft operators: the page gets the
        # same searches in standard operators, held below to the ids of
        # the verified graphs in `onnx_dir`.
        from keras_transformer.export.onnx import export_onnx

        quantization = manifest["quantization"]
        with tempfile.TemporaryDirectory(prefix="kt-web-") as standard:
            export_onnx(translator, standard, opset=int(manifest["opset"]),
                        modes=tuple(manifest["graphs"]), verify=False,
                        quantize=None if quantization == "float32"
                        else quantization, operators="standard")
            report = export_web(standard, web_dir)
    if shutil.which("node") is None:
        report["verification"] = {
            "skipped": "Node.js is not installed (`node` not on PATH)"}
        return report
    report["verification"] = check_web(translator, onnx_dir, web_dir, texts)
    return report


def check_web(translator, onnx_dir: str, web_dir: str,
              texts: list[str]) -> dict:
    """translator.js in Node.js against the Python runtimes (see module).

    Every comparison is `export.parity`'s, held to every row.

    Returns {"sentences", "identical": {mode: count}, "node_load_seconds"};
    raises ValueError (`parity.check`'s) naming the first row that differs.
    """
    import tensorflow as tf

    from keras_transformer.export import parity
    from keras_transformer.export.onnx.runtime import OnnxTranslator
    from keras_transformer.export.web.node import node_translate

    texts = list(texts)
    answer = node_translate(web_dir, [{"texts": texts, "beam": mode == "beam"}
                                      for mode in SEARCH_MODES])
    runtime = OnnxTranslator(onnx_dir)
    source_ids = translator.source_ids(tf.constant(texts, tf.string)).numpy()
    # A text with no token: "" with score 0 (the input rules).
    empty = source_ids[:, 0] == int(runtime.config["end_id"])
    subject = f"translator.js in Node.js ({web_dir})"
    identical = {}
    for mode, result in zip(SEARCH_MODES, answer["results"]):
        if "error" in result:
            raise ValueError(
                f"translator.js failed on the verification sentences "
                f"({mode}): {result['error']['message']}. Received: "
                f"web_dir={web_dir!r}")
        parity.check(parity.compare(result["sourceIds"], source_ids,
                                    inputs=texts),
                     f"{subject}, {mode}", "the Translator's source ids")
        expected = runtime.translate_tokens(source_ids, mode)
        scores = [0.0 if empty[row] else float(score)
                  for row, score in enumerate(expected["score"])]
        parity.check(parity.compare(result["targetIds"],
                                    expected["target_ids"],
                                    result["scores"], scores, inputs=texts),
                     f"{subject}, {mode}", f"onnxruntime on {onnx_dir}")
        strings = translator.target_tokenizer.detokenize(
            expected["target_ids"]).numpy()
        report = parity.check(
            parity.compare(result["translations"],
                           ["" if empty[row] else text.decode("utf-8")
                            for row, text in enumerate(strings)],
                           inputs=texts),
            f"{subject}, {mode}", "the Translator's detokenizer")
        identical[mode] = report["identical"]
    return {"sentences": len(texts), "identical": identical,
            "node_load_seconds": round(float(answer["load_seconds"]), 3)}
