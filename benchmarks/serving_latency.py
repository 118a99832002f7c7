"""Batch-1 latency of a run's exports: SavedModel signatures and ONNX Runtime.

What a server waits for one request: each sentence alone (batch 1), from
text for the SavedModel's text signatures (tokenizers included) and from
ids for its `translate_tokens` and for ONNX Runtime's token graphs. The
SavedModel is timed in a process that imports only TensorFlow and
TensorFlow Text (as TensorFlow Serving holds it), ONNX Runtime in one
without TensorFlow (ids from the `sentencepiece` package, equal to the
graphs' tokenizer's). Each process times `--passes` passes over the
sentences after two warm-up passes (so that the XLA signatures have
compiled every source bucket) and reports the median of the passes' mean
milliseconds per sentence, with their range; the processes alternate
`--rounds` times. It also counts the sentences on which an XLA signature
(`translate_xla`, `translate_greedy_xla`) differs from the graph's
(`serving_default`, `translate_greedy`): must be 0.

    python -m keras_transformer.benchmarks.serving_latency \\
        --saved-model runs/quickstart/export/saved_model/1 \\
        --onnx runs/quickstart/export/onnx \\
        --sentences runs/quickstart/samples.txt

One JSON line per way on stdout.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

_SAVED_MODEL = r"""
import json, sys, time
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)
request = json.load(open(sys.argv[1], encoding="utf-8"))
loaded = tf.saved_model.load(request["dir"])
texts = [tf.constant([text]) for text in request["texts"]]
ids = [tf.constant([row], tf.int32) for row in request["ids"]]
ways = {name: (loaded.signatures[name], "text", texts)
        for name in ("translate_greedy", "translate_greedy_xla",
                     "serving_default", "translate_xla")}
ways["translate_tokens"] = (loaded.signatures["translate_tokens"],
                            "source_ids", ids)
out = {"times": {}, "outputs": {}}
for name, (function, key, inputs) in ways.items():
    for _ in range(2):  # Warm-up: XLA compiles each bucket here.
        results = [function(**{key: x}) for x in inputs]
    out["outputs"][name] = [
        r["translation"].numpy()[0].decode("utf-8") if "translation" in r
        else r["target_ids"].numpy()[0].tolist() for r in results]
    passes = []
    for _ in range(request["passes"]):
        start = time.perf_counter()
        for x in inputs:
            function(**{key: x})
        passes.append((time.perf_counter() - start) / len(inputs) * 1000)
    out["times"][name] = passes
out["modules"] = sorted(m for m in sys.modules
                        if m.startswith(("keras_transformer", "onnx")))
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""

_ONNX = r"""
import json, sys, time
import numpy as np
from keras_transformer.export.onnx.runtime import make_session, run_search
request = json.load(open(sys.argv[1], encoding="utf-8"))
ids = [np.array([row], np.int32) for row in request["ids"]]
out = {"times": {}}
for mode, path in request["graphs"].items():
    session = make_session(path)
    for _ in range(2):
        for x in ids:
            run_search(session, x)
    passes = []
    for _ in range(request["passes"]):
        start = time.perf_counter()
        for x in ids:
            run_search(session, x)
        passes.append((time.perf_counter() - start) / len(ids) * 1000)
    out["times"][f"onnx_{mode}"] = passes
out["modules"] = sorted(m for m in sys.modules if m.startswith("tensorflow"))
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"""


def _run(script, request, tmp):
    path = os.path.join(tmp, "request.json")
    answer = os.path.join(tmp, "answer.json")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(request, file)
    subprocess.run([sys.executable, "-c", script, path, answer], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    with open(answer, encoding="utf-8") as file:
        return json.load(file)


def main(argv: list[str] | None = None) -> list[dict]:
    import sentencepiece

    from keras_transformer.export.onnx.runtime import read_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model", required=True,
                        help="a SavedModel folder (a version folder)")
    parser.add_argument("--onnx", required=True,
                        help="the ONNX export folder of the same run")
    parser.add_argument("--sentences", required=True,
                        help="a file of source sentences, one per line")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    onnx_dir, saved_model = args.onnx, args.saved_model
    config = read_config(onnx_dir)
    with open(args.sentences, encoding="utf-8") as file:
        texts = [line.rstrip("\n").split("\t")[0] for line in file
                 if line.strip()][:args.count]
    source = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(onnx_dir, config["source_model"]))
    limit, end_id = int(config["max_source_tokens"]), int(config["end_id"])
    ids = [source.encode(text)[:limit] + [end_id] for text in texts]
    graphs = {mode: os.path.join(onnx_dir, name)
              for mode, name in config["graphs"].items()}
    times, differ = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            got = _run(_SAVED_MODEL, {"dir": saved_model, "texts": texts,
                                      "ids": ids, "passes": args.passes},
                       tmp)
            if got["modules"]:
                raise RuntimeError(f"the SavedModel process imported "
                                   f"{got['modules']}")
            outputs = got["outputs"]
            differ = {xla: sum(a != b for a, b in zip(outputs[graph],
                                                      outputs[xla]))
                      for graph, xla in (("translate_greedy",
                                          "translate_greedy_xla"),
                                         ("serving_default",
                                          "translate_xla"))}
            onnx = _run(_ONNX, {"graphs": graphs, "ids": ids,
                                "passes": args.passes}, tmp)
            if onnx["modules"]:
                raise RuntimeError(f"the ONNX process imported "
                                   f"{onnx['modules']}")
            for part in (got, onnx):
                for name, values in part["times"].items():
                    times.setdefault(name, []).extend(values)
    rows = []
    for name, values in times.items():
        rows.append({
            "way": name, "sentences": len(texts),
            "batch1_ms": round(statistics.median(values), 2),
            "range": [round(min(values), 2), round(max(values), 2)],
            "passes": len(values),
            **({"xla_differs_from_graph": differ[name]}
               if name in differ else {})})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
