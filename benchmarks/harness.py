"""`keras-transformer bench`: speed benchmarks against peers -> RESULTS.md.

One configuration for every comparison (`FULL`): d_model 256, 4 heads,
d_ff 1024, 3 + 3 layers, vocabularies of 8,000 (the "small" preset),
random weights; training on token-budget batches (about 6,000 tokens,
lengths of a real corpus, padded; `benchmarks/train_speed.py`), in float32
and in mixed_bfloat16, with a float32 / bfloat16 loss-agreement run.
`main(quick=True)` runs the same code on tiny sizes with 1 warm-up and 2
repeats, in well under a minute (a smoke test, not a measurement).

The full run takes about ten minutes on two cores. To keep it there, not
every runtime is timed at every size: every runtime is timed at 64 output
tokens (greedy and beam 4, batch 1 and 32); the output-length sweep
(16, 32, 64, 128) covers our Translator (graph and XLA), ONNX Runtime,
keras-hub with XLA and CTranslate2 float32, and the no-cache tutorial
loop runs at 64 tokens only (it grows with the square of the length).
ONNX Runtime runs the float32 and the int8 export
(`export_onnx(quantize="int8")`), CTranslate2 float32 and int8.
"""

import json
import os
import time
import warnings

from keras_transformer.benchmarks import report, timing
from keras_transformer.benchmarks.train_speed import (
    PEERS,
    loss_agreement,
    loss_agreement_in_subprocess,
    run_in_subprocess,
    run_training,
)

ALL = ("ours", "ours_xla", "saved_model", "onnx", "onnx_standard",
       "onnx_int8", "ct2_float32", "ct2_int8", "hub", "hub_xla", "tutorial")
BEAM = ("ours", "saved_model", "onnx", "onnx_standard", "onnx_int8",
        "onnx_beam_op",
        "ct2_float32", "ct2_int8")
SWEEP = ("ours", "ours_xla", "onnx", "ct2_float32", "hub_xla")


def _small_config():
    from keras_transformer.config import TransformerConfig

    return TransformerConfig.from_preset("small").to_dict()


def _tiny_config():
    from keras_transformer.config import TransformerConfig

    return TransformerConfig.from_preset(
        "tiny", source_vocab_size=300, target_vocab_size=300, num_layers=1,
        d_model=32, num_heads=2, d_ff=64, max_length=32).to_dict()


def full_settings() -> dict:
    points = [(1, 64), (32, 64)]
    return {
        "mode": "full", "config": _small_config(),
        "train_batch_tokens": 6000, "train_batches": 10,
        "train_repeats": 3,
        "loss_steps": 300, "loss_batch_tokens": 1000,
        "repeats": 5, "warmup": 2, "min_repeat_seconds": 0.3,
        "matmul_size": 2048, "isolate_training": True,
        "source_length": 16,
        "length_pair": [64, 128],
        "training_runs": [[peer, jit, "float32"] for peer in PEERS
                          for jit in (False, True)]
        + [["ours", False, "mixed_bfloat16"],
           ["ours", True, "mixed_bfloat16"]],
        "decode_plan": [
            {"name": "greedy", "beam": 1, "runtimes": list(ALL),
             "points": points},
            {"name": "greedy", "beam": 1, "runtimes": list(SWEEP),
             "points": [(b, n) for b in (1, 32) for n in (16, 32, 128)]},
            {"name": "beam", "beam": 4, "runtimes": list(BEAM),
             "points": points},
        ],
    }


def quick_settings() -> dict:
    points = [(1, 8), (2, 8)]
    quick = ["ours", "ours_xla", "onnx_int8", "ct2_float32", "ct2_int8",
             "hub", "tutorial"]
    return {
        "mode": "quick", "config": _tiny_config(),
        "train_batch_tokens": 128, "train_batches": 2,
        "loss_steps": 4, "loss_batch_tokens": 64,
        "repeats": 2, "warmup": 1, "min_repeat_seconds": 0.0,
        "matmul_size": 256, "isolate_training": False,
        "source_length": 4,
        "length_pair": [4, 8],
        "training_runs": [[peer, False, "float32"] for peer in PEERS]
        + [["ours", False, "mixed_bfloat16"]],
        "decode_plan": [
            {"name": "greedy", "beam": 1, "runtimes": quick,
             "points": points},
            {"name": "greedy", "beam": 1, "runtimes": ["ours"],
             "points": [(2, 4)]},
            {"name": "beam", "beam": 4,
             "runtimes": ["ours", "onnx_int8", "ct2_float32", "ct2_int8"],
             "points": points},
        ],
    }


def matmul_ceiling(size: int, settings: dict) -> dict:
    """fp32 GFLOP/s of one large `tf.matmul` (2 n^3 FLOPs)."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    measurement = timing.measure(
        lambda: product().numpy(), repeats=settings["repeats"],
        warmup=settings["warmup"],
        min_repeat_seconds=settings["min_repeat_seconds"])
    flops = 2.0 * size ** 3
    return {"size": size, "seconds": measurement.to_dict(),
            "gflops_per_second": flops / measurement.median / 1e9,
            "gflops_range": [flops / measurement.maximum / 1e9,
                             flops / measurement.minimum / 1e9]}


def read_quality(run_dir: str | None) -> dict | None:
    """Exact match, BLEU, chrF and time from a run's metrics.json."""
    if not run_dir:
        return None
    from keras_transformer import run_directory

    metrics = run_directory.RunDirectory(run_dir).read_json(
        run_directory.METRICS, default=None)
    if metrics is None:
        return None
    quality = {"run_dir": run_dir, "results": {}}
    quickstart = metrics.get("quickstart") or {}
    for name in ("greedy", "beam"):
        if isinstance(quickstart.get(name), dict):
            quality["results"][name] = quickstart[name]
    if not quality["results"] and isinstance(metrics.get("evaluation"),
                                              dict):
        evaluation = metrics["evaluation"]
        name = "greedy" if evaluation.get("beam_size") == 1 else "beam"
        quality["results"][name] = evaluation
    for key in ("train_seconds", "total_seconds"):
        if key in quickstart:
            quality[key] = quickstart[key]
    return quality if quality["results"] else None


def main(quick: bool = False, output: str = "benchmarks/RESULTS.md",
         run_dir: str | None = "runs/quickstart", progress=print) -> dict:
    """Runs the benchmarks and writes `output` (Markdown) and its `.json`.

    Args:
        quick: tiny sizes, 1 warm-up and 2 repeats (a smoke test).
        output: path of the Markdown report; the raw figures go beside it
            with the suffix `.json`.
        run_dir: a trained run directory whose metrics.json supplies the
            quality section (omitted when missing).
        progress: callable taking one line of progress text.

    Returns:
        The results dict that the report was rendered from.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = quick_settings() if quick else full_settings()
    started = time.perf_counter()
    results = {"settings": settings, "machine": timing.machine_info(),
               "versions": timing.library_versions(),
               "ctranslate2_use_mkl": os.environ.get("CT2_USE_MKL",
                                                     "default"),
               "quick": quick}

    from keras_transformer.config import TransformerConfig

    config = TransformerConfig.from_dict(settings["config"])
    progress(f"matmul ceiling ({settings['matmul_size']}^2) ...")
    results["matmul"] = matmul_ceiling(settings["matmul_size"], settings)
    phases = results["phase_seconds"] = {
        "setup_and_matmul": time.perf_counter() - started}

    results["training"] = []
    for peer, jit, precision in settings["training_runs"]:
        progress(f"training {peer} (jit_compile={jit}, {precision}) ...")
        try:
            if settings["isolate_training"]:
                result = run_in_subprocess(peer, jit, settings, precision)
            else:
                result = run_training(peer, jit, settings, precision)
        except Exception as error:  # noqa: BLE001 - reported in RESULTS
            result = {"peer": peer, "jit_compile": jit,
                      "precision": precision,
                      "error": f"{type(error).__name__}: {error}"[:500]}
        results["training"].append(result)
    progress(f"loss agreement, float32 / mixed_bfloat16, "
             f"{settings['loss_steps']} steps ...")
    try:
        results["loss_agreement"] = (
            loss_agreement_in_subprocess(settings)
            if settings["isolate_training"] else loss_agreement(settings))
    except Exception as error:  # noqa: BLE001 - reported in RESULTS
        results["loss_agreement"] = {
            "error": f"{type(error).__name__}: {error}"[:500]}

    phases["training"] = time.perf_counter() - started - sum(
        phases.values())
    from keras_transformer.benchmarks.decode_speed import DecodingBench

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench = DecodingBench(config, settings, log=progress)
    results["decoding"] = []
    for part in settings["decode_plan"]:
        for runtime in part["runtimes"]:
            for batch, length in part["points"]:
                progress(f"decoding {part['name']} {runtime} batch {batch} "
                         f"x {length} tokens ...")
                cell = bench.measure(runtime, part["beam"], batch, length)
                if cell is not None:
                    cell["mode"] = part["name"]
                    results["decoding"].append(cell)
    phases["decoding"] = time.perf_counter() - started - sum(
        phases.values())
    bench.close()
    results["unavailable"] = bench.unavailable
    results["export_seconds"] = bench.export_seconds
    results["file_bytes"] = bench.file_bytes
    results["quality"] = read_quality(run_dir)
    results["total_seconds"] = time.perf_counter() - started
    results["targets"] = report.evaluate_targets(results)

    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    with open(output, "w", encoding="utf-8") as file:
        file.write(report.render(results))
    with open(os.path.splitext(output)[0] + ".json", "w",
              encoding="utf-8") as file:
        json.dump(results, file, indent=1, default=str)
    progress(f"wrote {output} in {results['total_seconds']:.0f} s")
    return results
