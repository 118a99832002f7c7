"""The Marian import at OPUS-MT's size: time, memory, export sizes, speed.

    python -m keras_transformer.benchmarks.marian_import --out DIR

1. Writes a random Marian folder with the shapes of Helsinki-NLP's
   opus-mt-en-de (6 + 6 layers, d_model 512, 8 heads, d_ff 2,048, swish,
   a shared vocabulary of 58,101 tokens padded with unused filler tokens;
   Hugging Face's initialization; SentencePiece models learned on the
   bundled English descriptions) — nothing is downloaded.
2. Imports it twice, each in a fresh process: with the self-check against
   transformers and without; wall time and peak resident memory
   (ru_maxrss) of the process.
3. Exports the imported run (SavedModel, ONNX float32 and int8, our
   CTranslate2 conversion) with their checks on a few sentences; sizes.
4. Converts the folder with CTranslate2's own Transformers converter.
5. Times greedy translation at batch 1 of English sentences, interleaved
   per round, in one process without TensorFlow: the ONNX greedy graph
   (onnxruntime), our CTranslate2 conversion and CTranslate2's own, all
   float32 with the same thread count; every runtime must give the same
   tokens. The model is random, so its outputs run to the length limit
   (source length + 50) or stop at a random [END]: the same work in
   every runtime.

Prints a Markdown table and writes DIR/marian_import.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from keras_transformer.contract import ONNX_GRAPHS

OPUS_MT_EN_DE = dict(d_model=512, layers=6, heads=8, d_ff=2048,
                     total_vocab=58101, max_positions=512, vocab_size=8000)


def _child(code: str) -> dict:
    """Runs `code` in a fresh Python; it prints one JSON line last."""
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if process.returncode:
        raise RuntimeError(process.stderr[-3000:])
    result = json.loads(process.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - start, 1)
    return result


_IMPORT = """
import json, resource, time
start = time.perf_counter()
from keras_transformer.marian.importer import import_marian
report = import_marian({src!r}, {run!r}, check={check})
report.pop("fields")
report["import_seconds"] = round(time.perf_counter() - start, 1)
report["peak_rss_mb"] = round(
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(report))
"""

# One export per process: tf2onnx's conversions of a model this size keep
# gigabytes alive, and the next export in the same process ran the machine
# (23 GB) out of memory.
_EXPORT = """
import json, os, time
from keras_transformer.export import export_run
from keras_transformer.export.onnx import export_onnx
from keras_transformer.runs import load_translator
texts, out, step = {texts!r}, {out!r}, {step!r}
start = time.perf_counter()
if step == "saved_model+onnx":
    export_run({run!r}, out, "all", texts=texts)
elif step == "onnx_int8":
    # No agreement check: on random weights every logit is a near-tie,
    # and rounding flips them (measured on trained models instead, RESULTS
    # "int8 and float16 storage").
    export_onnx(load_translator({run!r}), os.path.join(out, "onnx"),
                quantize="int8")
else:
    export_run({run!r}, out, "ctranslate2", texts=texts)
print(json.dumps({{"seconds": round(time.perf_counter() - start, 1)}}))
"""

_CT2_CONVERT = """
import json, time
import ctranslate2
start = time.perf_counter()
ctranslate2.converters.TransformersConverter({src!r}).convert(
    {out!r}, force=True)
print(json.dumps({{"seconds": round(time.perf_counter() - start, 1)}}))
"""

_SPEED = """
import json, statistics, time
import ctranslate2
from keras_transformer.export.onnx.runtime import OnnxTranslator
from keras_transformer.export.ctranslate2.runtime import CTranslate2Translator
from transformers import MarianTokenizer
texts, rounds, threads = {texts!r}, {rounds}, {threads}
onnx = OnnxTranslator({onnx!r})
ours = CTranslate2Translator({ct2!r}, intra_threads=threads)
theirs = ctranslate2.Translator({ct2_hf!r}, intra_threads=threads)
hf_tokenizer = MarianTokenizer.from_pretrained({src!r})
def run_onnx(text):
    return onnx(text, greedy=True)[0]
def run_ours(text):
    return ours(text, greedy=True)[0]
def run_theirs(text):
    tokens = hf_tokenizer.convert_ids_to_tokens(
        hf_tokenizer(text)["input_ids"])
    result = theirs.translate_batch(
        [tokens], beam_size=1, max_decoding_length=len(tokens) + 50)
    return hf_tokenizer.convert_tokens_to_string(result[0].hypotheses[0])
runs = {{"onnx (text graph)": run_onnx, "ctranslate2 (ours)": run_ours,
        "ctranslate2 (own converter)": run_theirs}}
outputs = {{name: [fn(text) for text in texts] for name, fn in runs.items()}}
same = {{name: sum(a == b for a, b in zip(values,
                                          outputs["ctranslate2 (ours)"]))
        for name, values in outputs.items()}}
times = {{name: [] for name in runs}}
for _ in range(rounds):
    for text in texts:
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(text)
            times[name].append(time.perf_counter() - start)
result = {{"same_output_as_ctranslate2_ours": same,
          "output_words": sum(len(t.split()) for t in outputs[
              "ctranslate2 (ours)"])}}
for name, values in times.items():
    per_round = [sum(values[i:i + len(texts)]) / len(texts)
                 for i in range(0, len(values), len(texts))]
    result[name] = {{"median_ms": round(1000 * statistics.median(per_round),
                                       2),
                    "min_ms": round(1000 * min(per_round), 2),
                    "max_ms": round(1000 * max(per_round), 2)}}
print(json.dumps(result))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--skip-import", action="store_true",
                        help="keep the imported runs of an earlier call")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    folder = os.path.join(args.out, "opus-mt-en-de-random")
    from keras_transformer.benchmarks.marian_folder import make_marian_folder
    from keras_transformer.data.debian import debian_corpus
    if not os.path.exists(os.path.join(folder, "model.safetensors")):
        make_marian_folder(folder, randomize=False, **OPUS_MT_EN_DE)
    texts = [text.split(". ")[0].strip() + "." for text in
             debian_corpus("test").sources[:args.sentences]]
    report = {"shapes": OPUS_MT_EN_DE, "machine": _machine(),
              "checkpoint_bytes": os.path.getsize(
                  os.path.join(folder, "model.safetensors"))}
    for name, check in (("import_checked", True),
                        ("import_unchecked", False)):
        run = os.path.join(args.out, name)
        if args.skip_import and os.path.exists(run):
            continue
        subprocess.run(["rm", "-rf", run], check=True)
        report[name] = _child(_IMPORT.format(src=folder, run=run,
                                             check=check))
        print(name, report[name], flush=True)
    run = os.path.join(args.out, "import_checked")
    exports = os.path.join(args.out, "exports")
    seconds = {}
    for step in ("saved_model+onnx", "onnx_int8", "ctranslate2"):
        out = os.path.join(exports, step)
        if os.path.exists(out):  # made by an earlier call
            seconds[step] = None
            continue
        seconds[step] = _child(_EXPORT.format(run=run, out=out, step=step,
                                              texts=texts[:4]))["seconds"]
    base = exports
    report["exports"] = {"seconds": seconds, "bytes": {
        "saved_model": _size(os.path.join(base, "saved_model+onnx",
                                          "saved_model")),
        "onnx_greedy": _size(os.path.join(base, "saved_model+onnx", "onnx",
                                          ONNX_GRAPHS["greedy"])),
        "onnx_beam": _size(os.path.join(base, "saved_model+onnx", "onnx",
                                        ONNX_GRAPHS["beam"])),
        "onnx_int8_greedy": _size(os.path.join(base, "onnx_int8", "onnx",
                                               ONNX_GRAPHS["greedy"])),
        "web_folder": _size(os.path.join(base, "saved_model+onnx", "web")),
        "ctranslate2": _size(os.path.join(base, "ctranslate2",
                                          "ctranslate2"))}}
    print("exports", report["exports"], flush=True)
    ct2_hf = os.path.join(args.out, "ct2_own_converter")
    report["ct2_own_converter"] = _child(_CT2_CONVERT.format(src=folder,
                                                             out=ct2_hf))
    report["speed"] = _child(_SPEED.format(
        texts=texts, rounds=args.rounds, threads=args.threads,
        onnx=os.path.join(exports, "saved_model+onnx", "onnx"),
        ct2=os.path.join(exports, "ctranslate2", "ctranslate2"),
        ct2_hf=ct2_hf, src=folder))
    report["speed"]["threads"] = args.threads
    report["speed"]["sentences"] = len(texts)
    report["speed"]["rounds"] = args.rounds
    with open(os.path.join(args.out, "marian_import.json"), "w") as file:
        json.dump(report, file, indent=2)
    print(json.dumps(report, indent=2))


def _size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def _machine():
    import platform
    return {"cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version()}


if __name__ == "__main__":
    main()
