"""Quantized ONNX exports against float32: size, agreement, BLEU, time.

Given ONNX export directories of one run (`keras-transformer export
--format onnx [--quantize int8|float16]`), the first being the float32
one, translates a TSV test split (source TAB reference) with each token
graph in onnxruntime (no TensorFlow: the sources are tokenized with the
`sentencepiece` package, whose ids equal the graphs' tokenizer's), in
batches of 32 sorted by length, and reports per directory and search:
the file size, the share of translations whose ids equal the first
directory's, corpus BLEU (sacrebleu), and the time of one sentence
(batch 1, 8 sentences of median length) and of a batch of 32, as
medians of `--rounds` rounds that alternate the directories.

    python -m keras_transformer.benchmarks.quantization \\
        --test /tmp/po_more/test.tsv exported/onnx int8/onnx float16/onnx

One JSON line per directory and search on stdout.
"""

import argparse
import json
import os
import statistics
import sys
import time

MODES = ("greedy", "beam")
BATCH = 32


def _read_tsv(path):
    with open(path, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t") for line in file]
    return [row[0] for row in rows], [row[1] for row in rows]


def _batch(rows):
    import numpy as np

    ids = np.zeros((len(rows), max(len(row) for row in rows)), np.int32)
    for index, row in enumerate(rows):
        ids[index, :len(row)] = row
    return ids


def _until_end(row, end_id):
    row = [int(token) for token in row]
    return row[:row.index(end_id)] if end_id in row else row


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import sacrebleu
    import sentencepiece

    from keras_transformer.export.onnx.runtime import (
        make_session,
        read_config,
        run_search,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+",
                        help="ONNX export directories; the first float32")
    parser.add_argument("--test", required=True,
                        help="TSV file: source TAB reference")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    configs = {d: read_config(d) for d in args.dirs}
    config = configs[args.dirs[0]]
    if config["quantization"] != "float32":
        parser.error(f"the first directory must be a float32 export; "
                     f"{args.dirs[0]} is {config['quantization']}")
    sources, references = _read_tsv(args.test)
    source = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(args.dirs[0], config["source_model"]))
    target = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(args.dirs[0], config["target_model"]))
    limit, end_id = int(config["max_source_tokens"]), int(config["end_id"])
    ids = [source.encode(text)[:limit] + [end_id] for text in sources]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    paths = {(d, mode): os.path.join(d, configs[d]["graphs"][mode])
             for d in args.dirs for mode in MODES}
    sessions = {key: make_session(path) for key, path in paths.items()}
    rows, outputs = {}, {}
    for (d, mode), session in sessions.items():
        found = [None] * len(ids)
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            result = run_search(session, _batch([ids[i] for i in chunk]))
            for row, i in zip(result["target_ids"], chunk):
                found[i] = _until_end(row, end_id)
        outputs[d, mode] = found
        reference = outputs[args.dirs[0], mode]
        rows[d, mode] = {
            "dir": d, "mode": mode,
            "quantization": configs[d]["quantization"],
            "megabytes": round(os.path.getsize(paths[d, mode]) / 1e6, 2),
            "sentences": len(ids),
            "identical_percent": round(100 * float(np.mean(
                [a == b for a, b in zip(found, reference)])), 2),
            "bleu": round(sacrebleu.corpus_bleu(
                [target.decode(row) for row in found], [references]).score,
                2)}
    middle = order[len(order) // 2 - BATCH // 2:len(order) // 2 + BATCH // 2]
    batch = _batch([ids[i] for i in middle])
    times = {key: {"batch1_ms": [], "batch32_ms": []} for key in sessions}
    for session in sessions.values():  # Warm-up.
        run_search(session, batch)
    for _ in range(args.rounds):
        for key, session in sessions.items():
            start = time.perf_counter()
            for i in middle[:8]:
                run_search(session, _batch([ids[i]]))
            times[key]["batch1_ms"].append(
                (time.perf_counter() - start) / 8 * 1000)
            start = time.perf_counter()
            run_search(session, batch)
            times[key]["batch32_ms"].append(
                (time.perf_counter() - start) * 1000)
    for key, row in rows.items():
        for name, values in times[key].items():
            row[name] = round(statistics.median(values), 1)
            row[f"{name}_range"] = [round(min(values), 1),
                                    round(max(values), 1)]
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
