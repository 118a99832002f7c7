"""A/B of decoding between two versions of the package, side by side.

    python -m keras_transformer.benchmarks.decode_ab BASELINE_REV \
        [--current REV] [--rounds 2] [--json OUT.json]

checks out BASELINE_REV and the current revision (default HEAD) of this
repository into temporary worktrees (so edits in progress cannot disturb
it) and runs the same worker (this file, `--worker`) under each version in
turn, `--rounds` times, alternating: each builds the
"small" model with the same weights (saved once by the current version and
assigned by variable path), pins the [END] logit to 0 so every search runs
to 64 tokens, and times greedy and beam 4 at batch 1 and 32 in the
Translator's graphs, the XLA greedy search, the SavedModel and ONNX
Runtime. It prints a Markdown table (medians, min-max, ratio) and whether
the two versions' ids are identical in every cell.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SOURCE_LENGTH, OUTPUT_LENGTH, BATCHES, BEAM = 16, 64, (1, 32), 4
REPEATS = 5


def _timed(run, repeats=REPEATS, warmup=2):
    for _ in range(warmup):
        out = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return times, np.asarray(out).tolist()


# Where each layout of the checkout under test keeps the export functions,
# newest first: (ONNX export, onnxruntime session, SavedModel export).
EXPORT_LAYOUTS = (
    # export/onnx/ and export/ctranslate2/ subpackages (38744dd, 2026-12-07)
    ("keras_transformer.export.onnx.export",
     "keras_transformer.export.onnx.runtime",
     "keras_transformer.export.saved_model"),
    # export/onnx.py, installed as keras_transformer.export (9477a9d,
    # 2026-11-30)
    ("keras_transformer.export.onnx",
     "keras_transformer.export.onnx_runtime",
     "keras_transformer.export.saved_model"),
    # a top-level `export` package (up to efa4e0c, 2026-11-24)
    ("export.onnx", "export.onnx_runtime", "export.saved_model"),
)
# Where SearchSettings lives, newest first (none before 2647854).
SETTINGS_MODULES = ("keras_transformer.contract", "keras_transformer.inference")


def _missing(error: ModuleNotFoundError, name: str) -> bool:
    """Whether `error` says that module `name` (or a parent) is absent."""
    return bool(error.name) and (name + ".").startswith(error.name + ".")


def _only_this_checkout() -> None:
    """Imports come from the checkout on PYTHONPATH alone.

    An editable install of the package puts a finder on `sys.meta_path`
    that would otherwise supply `keras_transformer.export` (and
    `.benchmarks`) from the installed checkout to a checkout that has none
    (`main` links export/ and benchmarks/ into the package of a checkout
    whose setup.cfg installs them there).
    """
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not getattr(finder, "__module__", "")
                        .startswith("__editable__")]


def _checkout_api() -> dict:
    """The export functions and SearchSettings of the checkout under test,
    whichever layout it has (`EXPORT_LAYOUTS`)."""
    import importlib

    api = {"SearchSettings": None}
    for name in SETTINGS_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if not _missing(error, name):
                raise
            continue
        if hasattr(module, "SearchSettings"):
            api["SearchSettings"] = module.SearchSettings
            break
    for onnx_name, runtime_name, saved_name in EXPORT_LAYOUTS:
        try:
            runtime = importlib.import_module(runtime_name)
        except ModuleNotFoundError as error:
            if not _missing(error, runtime_name):
                raise  # the layout is there, a dependency is not
            continue
        api["make_session"] = runtime.make_session
        api["export_onnx"] = importlib.import_module(onnx_name).export_onnx
        api["export_saved_model"] = importlib.import_module(
            saved_name).export_saved_model
        return api
    raise ImportError("no export package in this checkout: looked for "
                      + ", ".join(runtime for _, runtime, _ in EXPORT_LAYOUTS))


def _worker(weights_path, out_path, workdir):  # noqa: C901 - one script
    _only_this_checkout()
    import keras
    import tensorflow as tf

    from keras_transformer.config import TransformerConfig
    from keras_transformer.model import build_transformer
    from keras_transformer.translator import Translator

    config = TransformerConfig.from_preset("small")
    keras.utils.set_random_seed(0)
    model = build_transformer(config)
    if os.path.exists(weights_path):
        saved = np.load(weights_path)
        for variable in model.weights:
            variable.assign(saved[variable.path])
    else:
        np.savez(weights_path, **{v.path: v.numpy() for v in model.weights})
    # [END] row of the tied target embedding -> its logit is always 0.
    for variable in model.weights:
        if variable.path.endswith("embedding/embeddings") and (
                "source" not in variable.path):
            value = variable.numpy()
            value[3] = 0.0
            variable.assign(value)
    try:  # the tokenizer of the version: WordPiece before 0.2
        from keras_transformer.text import RESERVED_TOKENS, SubwordTokenizer
        tokenizer = SubwordTokenizer(list(RESERVED_TOKENS) + [
            f"t{i}" for i in range(4, config.target_vocab_size)])
    except ImportError:
        from keras_transformer.benchmarks.ours import synthetic_tokenizer
        tokenizer = synthetic_tokenizer(config.target_vocab_size)
    extra = OUTPUT_LENGTH - SOURCE_LENGTH
    import inspect

    api = _checkout_api()
    if "settings" in inspect.signature(Translator).parameters:
        def make(jit):
            return Translator(model, tokenizer, tokenizer,
                              settings=api["SearchSettings"](
                                  extra_length=extra),
                              jit_compile=jit)
    else:  # the version before SearchSettings
        def make(jit):
            return Translator(model, tokenizer, tokenizer,
                              extra_length=extra, jit_compile=jit)
    export_saved_model = api["export_saved_model"]
    export_onnx, make_session = api["export_onnx"], api["make_session"]
    translator, xla = make(False), make(True)
    rng = np.random.default_rng(1)
    results = {}
    saved_path = os.path.join(workdir, "saved_model")
    export_saved_model(translator, saved_path)
    loaded = tf.saved_model.load(saved_path)
    onnx_dir = os.path.join(workdir, "onnx")
    export_onnx(translator, onnx_dir, verify=False)
    sessions = {mode: make_session(os.path.join(onnx_dir, f"{mode}.onnx"))
                for mode in ("greedy", "beam")}
    for batch in BATCHES:
        source = rng.integers(4, config.source_vocab_size,
                              size=(batch, SOURCE_LENGTH)).astype(np.int32)
        source[:, -1] = 3
        tensor = tf.constant(source)
        for mode, beam in (("greedy", 1), ("beam", BEAM)):
            name = "translate_tokens" + ("_greedy" if beam == 1 else "")
            cells = {
                "graph": lambda: getattr(translator, name)(
                    tensor)["target_ids"],
                "saved_model": lambda: getattr(loaded, name)(
                    tensor)["target_ids"],
                "onnx": lambda: sessions[mode].run(
                    ["target_ids"], {"source_ids": source})[0],
            }
            if beam == 1:
                cells["xla"] = lambda: xla.search_tokens(tensor, 1)[0][:, 0]
            for runtime, run in cells.items():
                times, ids = _timed(run)
                results[f"{runtime} {mode} b{batch}"] = {
                    "times": times, "ids": ids}
    with open(out_path, "w") as file:
        json.dump(results, file)


def _link_installed_folders(tree: str) -> None:
    """Links export/ and benchmarks/ into the checkout's package where its
    setup.cfg installs them there (keras_transformer.export,
    keras_transformer.benchmarks; from 9477a9d on), as an install would;
    an older checkout keeps its top-level `export` package."""
    try:
        with open(os.path.join(tree, "setup.cfg")) as file:
            setup = file.read()
    except FileNotFoundError:
        return
    package = os.path.join(tree, "keras_transformer")
    for folder in ("export", "benchmarks"):
        link = os.path.join(package, folder)
        if (f"keras_transformer.{folder} = {folder}" in setup
                and os.path.isdir(os.path.join(tree, folder))
                and not os.path.exists(link)):
            os.symlink(os.path.join("..", folder), link)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", help="git revision to compare with")
    parser.add_argument("--current", default="HEAD",
                        help="git revision to measure (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None,
                        help="also write the raw timings and ids here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(*args.worker)
    root = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], check=True, text=True,
        capture_output=True,
        cwd=os.environ.get("DECODE_AB_REPO",
                          os.path.dirname(os.path.abspath(__file__)))
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="decode-ab-") as tmp:
        trees = {}
        for name, revision in (("baseline", args.baseline),
                               ("current", args.current)):
            trees[name] = os.path.join(tmp, name)
            subprocess.run(["git", "-C", root, "worktree", "add",
                            "--detach", trees[name], revision], check=True,
                           capture_output=True)
            _link_installed_folders(trees[name])
        try:
            weights = os.path.join(tmp, "weights.npz")
            runs = {"baseline": [], "current": []}
            for round_ in range(args.rounds):
                for name in ("current", "baseline"):
                    out = os.path.join(tmp, f"{name}-{round_}.json")
                    work = tempfile.mkdtemp(dir=tmp)
                    env = dict(os.environ, PYTHONPATH=trees[name],
                               TF_CPP_MIN_LOG_LEVEL="3")
                    subprocess.run(
                        [sys.executable, os.path.abspath(__file__),
                         "x", "--worker", weights, out, work],
                        check=True, cwd=trees[name], env=env)
                    with open(out) as file:
                        runs[name].append(json.load(file))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", root, "worktree", "remove",
                                "--force", tree], check=False)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(runs, file)
    print("| cell | baseline ms (min-max) | current ms (min-max) | "
          "current/baseline time | ids identical |")
    print("|---|---|---|---|---|")
    for cell in runs["current"][0]:
        stats = {}
        for name in runs:
            times = [t * 1000 for run in runs[name]
                     for t in run[cell]["times"]]
            stats[name] = (statistics.median(times), min(times), max(times))
        same = all(run[cell]["ids"] == runs["baseline"][0][cell]["ids"]
                   for name in runs for run in runs[name])
        b, c = stats["baseline"], stats["current"]
        print(f"| {cell} | {b[0]:.1f} ({b[1]:.1f}-{b[2]:.1f}) | "
              f"{c[0]:.1f} ({c[1]:.1f}-{c[2]:.1f}) | {c[0] / b[0]:.2f} | "
              f"{'yes' if same else 'NO'} |")


if __name__ == "__main__":
    sys.exit(main())
