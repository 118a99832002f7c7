"""Run a web export's translator.js in Node.js.

`node_translate` sends every request to one Node.js process running
`node_check.mjs`: the export's own translator.js and SentencePiece
WebAssembly file, with onnxruntime-web's Node build (the same WebAssembly
runtime as the browser's) from the npm packages beside this module.
"""

import json
import os
import shutil
import subprocess

from keras_transformer.export.web.export import HERE, runtime_files

SCRIPT = os.path.join(HERE, "node_check.mjs")


def node_translate(web_dir: str | os.PathLike, requests: list[dict],
                   bad_dirs: list[str] = (), timeout: float = 600) -> dict:
    """Translates in Node.js with a web export; returns the answers.

    Args:
        web_dir: a folder written by `export_web`.
        requests: list of {"texts": anything, "beam": anything}, passed to
            `Translator.translateDetailed` as they are (bad input
            included).
        bad_dirs: folders that `Translator.load` must refuse.
        timeout: seconds for the whole process.

    Returns:
        {"load_seconds": float, "results": one per request, either
        {"sourceIds", "targetIds", "translations", "scores"} or {"error":
        {"name", "message"}}, "bad_dirs": one {"error": ...} or
        {"loaded": True} per folder}.

    Raises:
        FileNotFoundError: no `node` on PATH, or the npm packages are not
            installed (the message names the command).
        RuntimeError: the Node.js process failed.
    """
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError(
            "`node_translate` needs Node.js (`node` on PATH); install "
            "nodejs. Received: PATH without node")
    runtime_files()  # The npm packages, or an error naming `npm ci`.
    request = {"dir": os.path.abspath(os.fspath(web_dir)),
               "requests": list(requests),
               "bad_dirs": [os.path.abspath(os.fspath(d)) for d in bad_dirs]}
    process = subprocess.run([node, SCRIPT], input=json.dumps(request),
                             capture_output=True, text=True, timeout=timeout,
                             encoding="utf-8")
    if process.returncode != 0:
        raise RuntimeError(
            f"translator.js failed in Node.js (exit {process.returncode}): "
            f"{process.stderr[-2000:]}")
    return json.loads(process.stdout)
