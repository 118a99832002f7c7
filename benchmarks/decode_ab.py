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


def _worker(weights_path, out_path, workdir):  # noqa: C901 - one script
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

    if "settings" in inspect.signature(Translator).parameters:
        from keras_transformer.contract import SearchSettings
        from keras_transformer.export.onnx import export_onnx
        from keras_transformer.export.onnx.runtime import make_session
        from keras_transformer.export.saved_model import export_saved_model

        def make(jit):
            return Translator(model, tokenizer, tokenizer,
                              settings=SearchSettings(extra_length=extra),
                              jit_compile=jit)
    else:  # the version before SearchSettings, with a top-level `export`
        from export.onnx_runtime import make_session

        from export.onnx import export_onnx
        from export.saved_model import export_saved_model

        def make(jit):
            return Translator(model, tokenizer, tokenizer,
                              extra_length=extra, jit_compile=jit)
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
            # A layout whose export/ installs as keras_transformer.export:
            # link it into the package, as the installed package has it.
            package = os.path.join(trees[name], "keras_transformer")
            for folder in ("export", "benchmarks"):
                link = os.path.join(package, folder)
                if name == "current" and not os.path.exists(link):
                    os.symlink(os.path.join("..", folder), link)
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
