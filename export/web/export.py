"""Write a web export: a static folder that translates inside a web page.

`export_web(onnx_dir, out_dir)` turns a verified ONNX export
(`export.onnx.export_onnx`) into a folder that any static web server can
serve and any current browser runs offline, with no request outside it:

- `index.html`: the page (a text area, beam or greedy search, the output
  with its score and time);
- `translator.js`: the ES module that runs the export (`Translator.load`,
  `translate`), with the input rules of every other runtime;
- the token graphs of the ONNX export (`beam.onnx`, `greedy.onnx`; int8
  when that export is quantized) and its SentencePiece models;
- `onnx_config.json`: the ONNX export's manifest (`contract.make_manifest`'s
  schema) less the text graphs, which need onnxruntime-extensions' ops that
  onnxruntime-web lacks, plus a `web` entry naming the runtime files; its
  `source_vocab_size` is the limit above which translator.js reads a
  SentencePiece id as `[UNK]` (`contract.known_token_ids`);
- the runtime files of the pinned npm packages (`package.json`,
  `package-lock.json` beside this module; `npm ci` fetches them once):
  onnxruntime-web's WebAssembly build and SentencePiece compiled to
  WebAssembly (@mlc-ai/web-tokenizers), with their licences in
  `licenses/`.

Only the Python standard library and the package's pure-Python contract
are used: no TensorFlow, no Node.js.
"""

import gzip
import json
import os
import shutil

from keras_transformer.contract import (
    ONNX_FORMAT,
    ONNX_MANIFEST,
    read_manifest,
    write_manifest,
)

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC_DIR = os.path.join(HERE, "static")
LICENSES_DIR = os.path.join(HERE, "licenses")
# The page and the module it runs (copied from static/).
PAGE = "index.html"
MODULE = "translator.js"
# Runtime files: name in the export -> (npm package, path inside it).
ORT_PACKAGE = "onnxruntime-web"
TOKENIZER_PACKAGE = "@mlc-ai/web-tokenizers"
ORT_SCRIPT = "ort.wasm.min.js"
TOKENIZER_SCRIPT = "web-tokenizers.js"
RUNTIME_FILES = {
    ORT_SCRIPT: (ORT_PACKAGE, "dist/ort.wasm.min.js"),
    "ort-wasm-simd-threaded.mjs": (ORT_PACKAGE,
                                   "dist/ort-wasm-simd-threaded.mjs"),
    "ort-wasm-simd-threaded.wasm": (ORT_PACKAGE,
                                    "dist/ort-wasm-simd-threaded.wasm"),
    TOKENIZER_SCRIPT: (TOKENIZER_PACKAGE, "lib/index.js"),
}
# The licence of each package (the packages ship none: these are the
# LICENSE files of their source repositories, verbatim).
LICENSES = {ORT_PACKAGE: "onnxruntime-web.LICENSE",
            TOKENIZER_PACKAGE: "web-tokenizers.LICENSE"}
# Keys of the ONNX manifest that describe the text graphs.
_TEXT_GRAPH_KEYS = ("text_graphs", "custom_op_domains")


def default_node_modules() -> str:
    """The `node_modules` folder `npm ci` fills beside this module."""
    return os.path.join(HERE, "node_modules")


def install_command() -> str:
    """The one command that fetches the runtime files."""
    return f"npm ci --ignore-scripts --prefix {HERE}"


def runtime_files(node_modules: str | os.PathLike | None = None
                  ) -> dict[str, str]:
    """The runtime files: name in an export -> path on this machine.

    Args:
        node_modules: the folder `npm ci` filled; defaults to the one
            beside this module (`default_node_modules`).

    Returns:
        A dict, with `package.json` files' versions checked against the
        pinned ones.

    Raises:
        FileNotFoundError: a file is missing, naming the command that
            fetches them (`install_command`).
    """
    node_modules = os.fspath(node_modules or default_node_modules())
    paths = {name: os.path.join(node_modules, package, *path.split("/"))
             for name, (package, path) in RUNTIME_FILES.items()}
    missing = [path for path in paths.values() if not os.path.isfile(path)]
    versions = package_versions(node_modules)
    if missing or versions != pinned_versions():
        raise FileNotFoundError(
            "A web export needs the runtime files of the npm packages "
            f"pinned in {os.path.join(HERE, 'package.json')} "
            f"{pinned_versions()}; fetch them once with `{install_command()}`"
            f" (needs Node.js and npm). Received: node_modules="
            f"{node_modules!r} (missing {missing[:1] or 'none'}, versions "
            f"{versions})")
    return paths


def pinned_versions() -> dict[str, str]:
    """The npm packages and versions `package.json` pins."""
    with open(os.path.join(HERE, "package.json"), encoding="utf-8") as file:
        return dict(json.load(file)["dependencies"])


def package_versions(node_modules: str) -> dict[str, str | None]:
    """The versions installed in `node_modules` (None where missing)."""
    versions = {}
    for package in pinned_versions():
        path = os.path.join(node_modules, package, "package.json")
        try:
            with open(path, encoding="utf-8") as file:
                versions[package] = json.load(file).get("version")
        except (OSError, ValueError):
            versions[package] = None
    return versions


def web_manifest(onnx_dir: str | os.PathLike) -> dict:
    """The manifest of a web export made from the ONNX export `onnx_dir`."""
    manifest = read_manifest(onnx_dir, ONNX_MANIFEST, ONNX_FORMAT,
                             "onnx_dir")
    if not manifest.get("graphs"):
        raise ValueError(
            "`onnx_dir` must hold token graphs (an export of this package, "
            f"version 2 or later). Received: onnx_dir={os.fspath(onnx_dir)!r}")
    if manifest["operators"] != "standard":
        raise ValueError(
            "`onnx_dir` must hold token graphs of standard ONNX operators "
            "(onnxruntime-web has no onnxruntime contrib operators): export "
            "with operators='standard' (`--onnx-operators standard`). "
            f"Received: onnx_dir={os.fspath(onnx_dir)!r} with operators="
            f"{manifest['operators']!r}")
    for key in _TEXT_GRAPH_KEYS:
        manifest.pop(key, None)
    for key in ("inputs", "outputs"):
        if isinstance(manifest.get(key), dict):
            manifest[key] = {"graphs": manifest[key].get("graphs")}
    manifest["web"] = {"onnxruntime": ORT_SCRIPT,
                       "tokenizer": TOKENIZER_SCRIPT,
                       "page": PAGE, "module": MODULE,
                       "packages": pinned_versions()}
    return manifest


def export_web(onnx_dir: str | os.PathLike, out_dir: str | os.PathLike,
               node_modules: str | os.PathLike | None = None) -> dict:
    """Writes a web export of the ONNX export `onnx_dir` into `out_dir`.

    The ONNX export is verified when written (`export_onnx`); its token
    graphs and models are copied as they are. The JavaScript input rules
    are checked by the test suite (Node.js and a real browser).

    Args:
        onnx_dir: a directory written by `export.onnx.export_onnx`
            (float32 or int8) with `operators="standard"`.
        out_dir: the folder to write (created; files of the same names are
            replaced).
        node_modules: where `npm ci` put the npm packages; defaults to
            `default_node_modules()`.

    Returns:
        A report: `out_dir`, `files` (name -> bytes), `bytes` (total),
        `gzip_bytes` (total, each file gzipped at level 9, as a server
        would send it compressed), `quantization`, `packages` (npm
        package -> version).

    Raises:
        FileNotFoundError: the npm runtime files are missing (the message
            gives `install_command()`).
        ValueError: `onnx_dir` is not an ONNX export with token graphs of
            standard operators.

    Example:
    >>> report = export_web("export/onnx", "export/web")
    >>> sorted(report["files"])[:3]
    ['beam.onnx', 'greedy.onnx', 'index.html']
    """
    runtime = runtime_files(node_modules)
    manifest = web_manifest(onnx_dir)
    onnx_dir, out_dir = os.fspath(onnx_dir), os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, "licenses"), exist_ok=True)
    manifest_path = os.path.join(out_dir, ONNX_MANIFEST)
    if os.path.exists(manifest_path):  # Until the new files are complete.
        os.remove(manifest_path)
    copies = {name: path for name, path in runtime.items()}
    for name in (PAGE, MODULE):
        copies[name] = os.path.join(STATIC_DIR, name)
    for name in (*manifest["graphs"].values(), manifest["source_model"],
                 manifest["target_model"]):
        copies[name] = os.path.join(onnx_dir, name)
    for name in LICENSES.values():
        copies[f"licenses/{name}"] = os.path.join(LICENSES_DIR, name)
    for name, path in copies.items():
        shutil.copyfile(path, os.path.join(out_dir, *name.split("/")))
    write_manifest(out_dir, ONNX_MANIFEST, manifest)
    files = {name: os.path.getsize(os.path.join(out_dir, *name.split("/")))
             for name in sorted([*copies, ONNX_MANIFEST])}
    return {"out_dir": out_dir, "files": files,
            "bytes": sum(files.values()),
            "gzip_bytes": sum(_gzip_size(os.path.join(out_dir, *n.split("/")))
                              for n in files),
            "quantization": manifest["quantization"],
            "packages": manifest["web"]["packages"]}


def _gzip_size(path: str) -> int:
    with open(path, "rb") as file:
        return len(gzip.compress(file.read(), compresslevel=9, mtime=0))
