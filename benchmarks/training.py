"""Training throughput of one model, in this process or in a fresh one.

`run_training(peer, jit_compile, settings)` builds one of "ours",
"tutorial" or "keras_hub" with the benchmark sizes, compiles it with its
own recipe (ours: `compile_transformer`; the tutorial: its masked loss
and Adam with the warm-up schedule; keras-hub: our loss and optimizer,
as keras-hub prescribes none), and times
`train_on_batch` on one fixed random batch without padding. Run as
`python -m keras_transformer.benchmarks.training JSON` it prints the result
as JSON on its last line: the harness runs each model in a fresh process,
so that the peak resident memory belongs to that model alone.
"""

import json
import os
import sys
import time
import warnings

PEERS = ("ours", "tutorial", "keras_hub")


def _config(settings):
    from keras_transformer.config import TransformerConfig

    return TransformerConfig.from_dict(settings["config"])


def _build(peer, config, jit_compile):
    if peer == "ours":
        from keras_transformer.model import build_transformer
        from keras_transformer.training import compile_transformer

        model = build_transformer(config)
        compile_transformer(model, config)
        model.jit_compile = jit_compile
        return model, "dict"
    if peer == "tutorial":
        from keras_transformer.benchmarks import reference_tutorial

        model = reference_tutorial.build(config)
        reference_tutorial.compile_model(model, config, jit_compile)
        return model, "tuple"
    if peer == "keras_hub":
        from keras_transformer.benchmarks import keras_hub_peer

        from keras_transformer.training import (
            MaskedSparseCategoricalCrossentropy,
            make_optimizer,
        )

        model = keras_hub_peer.build(config)["model"]
        model.compile(optimizer=make_optimizer(config),
                      loss=MaskedSparseCategoricalCrossentropy(
                          label_smoothing=config.label_smoothing),
                      jit_compile=jit_compile)
        return model, "dict"
    raise ValueError(f"`peer` must be one of {PEERS}. "
                     f"Received: peer={peer!r}")


def run_training(peer: str, jit_compile: bool, settings: dict) -> dict:
    """Times training steps; returns tokens/s, FLOP/s and memory figures."""
    import numpy as np
    import tensorflow as tf
    from keras_transformer.benchmarks import ours, timing

    config = _config(settings)
    batch = settings["train_batch"]
    source_length = settings["train_source_length"]
    target_length = settings["train_target_length"]
    rng = np.random.default_rng(0)
    source = tf.constant(ours.random_ids(rng, batch, source_length,
                                         config.source_vocab_size))
    target = ours.random_ids(rng, batch, target_length + 1,
                             config.target_vocab_size)
    target[:, 0] = 2  # [START]
    decoder_inputs = tf.constant(target[:, :-1])
    labels = tf.constant(target[:, 1:])

    baseline_rss = timing.current_rss_bytes()
    import keras

    keras.utils.set_random_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs_kind = _build(peer, config, jit_compile)
        inputs = ((source, decoder_inputs) if inputs_kind == "tuple" else
                  {"encoder_inputs": source,
                   "decoder_inputs": decoder_inputs})
        start = time.perf_counter()
        model.train_on_batch(inputs, labels)  # traces (and compiles)
        first_step = time.perf_counter() - start
        measurement = timing.measure(
            lambda: model.train_on_batch(inputs, labels),
            repeats=settings["repeats"], warmup=settings["warmup"],
            min_repeat_seconds=settings["min_repeat_seconds"])
    tokens = batch * target_length
    flops = ours.training_flops(config, batch, source_length, target_length)
    return {
        "peer": peer, "jit_compile": jit_compile,
        "parameters": int(model.count_params()),
        "seconds_per_step": measurement.to_dict(),
        "target_tokens_per_second": tokens / measurement.median,
        "tokens_per_second_range": [tokens / measurement.maximum,
                                    tokens / measurement.minimum],
        "flops_per_step": flops,
        "gflops_per_second": flops / measurement.median / 1e9,
        "first_step_seconds": first_step,
        "jit_compile_effective": bool(getattr(model, "jit_compile", False)),
        "peak_rss_bytes": timing.peak_rss_bytes(),
        "baseline_rss_bytes": baseline_rss,
    }


def run_in_subprocess(peer: str, jit_compile: bool, settings: dict,
                      timeout: float = 600) -> dict:
    """`run_training` in a fresh interpreter (its own peak memory)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(
        [root] + ([os.environ["PYTHONPATH"]]
                  if os.environ.get("PYTHONPATH") else []))
    request = json.dumps({"peer": peer, "jit_compile": jit_compile,
                          "settings": settings})
    process = subprocess.run(
        [sys.executable, "-m", "keras_transformer.benchmarks.training",
         request],
        capture_output=True, text=True, timeout=timeout, cwd=root,
        env=dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = process.stdout.strip().splitlines()
    if process.returncode or not lines:
        raise RuntimeError(
            f"The training benchmark of {peer!r} (jit_compile="
            f"{jit_compile}) failed:\n{process.stderr[-3000:]}")
    return json.loads(lines[-1])


def _main(argv):
    request = json.loads(argv[1])
    result = run_training(request["peer"], request["jit_compile"],
                          request["settings"])
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv)
