"""Training throughput of one model, in this process or in a fresh one.

`run_training(peer, jit_compile, settings, precision)` builds one of
"ours", "tutorial" or "keras_hub" with the benchmark sizes, compiles it
with its own recipe (ours: `compile_transformer`; the tutorial: its masked
loss and Adam with the warm-up schedule; keras-hub: our loss and
optimizer, as keras-hub prescribes none), and times `train_on_batch` over
the same padded batches for every model (`training_batches`).

The batches are what `keras-transformer train` feeds a model: the
package's `make_dataset` (length buckets, a token budget of
`train_batch_tokens` source-or-target tokens per batch, padding to the
longest pair) over pairs of random ids whose lengths follow a real
corpus: `PO_SOURCE_LENGTHS`, the source lengths of the English-German
`.po` corpus (`benchmarks/po_corpus.py`, 4,926 training pairs, its joint
SentencePiece vocabulary of 6,010 pieces: mean 7 tokens, 90% at most 17),
and `PO_LENGTH_RATIOS`, its target / source length quantiles. A
repeat is one pass over `train_batches` batches; throughput counts the
real (non-pad) target tokens.

`loss_agreement(settings)` trains our model twice from the same weights
on the same batches, in float32 and in `mixed_bfloat16`, on a learnable
task (the target is the source reversed), and reports both loss curves.

Run as `python -m keras_transformer.benchmarks.train_speed JSON` it prints the
result as JSON on its last line: the harness runs each model in a fresh
process, so that the peak resident memory belongs to that model alone.
"""

import json
import os
import sys
import time
import warnings

PEERS = ("ours", "tutorial", "keras_hub")
PRECISIONS = ("float32", "mixed_bfloat16")
# Sources of the .po corpus by length in SentencePiece tokens (index =
# length, without [END]): 474 of 1 token, 1,062 of 2, ...
PO_SOURCE_LENGTHS = (
    0, 474, 1062, 761, 459, 289, 185, 173, 175, 126, 136, 128, 108, 110, 92,
    80, 58, 65, 45, 47, 36, 30, 36, 28, 26, 24, 22, 17, 13, 10, 13, 14, 15,
    10, 8, 8, 8, 4, 3, 2, 7, 3, 0, 2, 4, 0, 2, 0, 2, 0, 1, 1, 1, 1, 0, 0, 1,
    0, 0, 0, 0, 0, 0, 1)
# Target / source length of its pairs, quantiles 0, 0.05, ..., 1.
PO_LENGTH_RATIOS = (
    0.17, 0.5, 0.67, 0.8, 0.89, 0.96, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
    1.0, 1.07, 1.14, 1.25, 1.33, 1.5, 1.67, 6.0)


def _config(settings):
    from keras_transformer.config import TransformerConfig

    return TransformerConfig.from_dict(settings["config"])


def sample_lengths(rng, count: int, max_length: int):
    """(source, target) lengths (count,) drawn from the .po corpus."""
    import numpy as np

    weights = np.array(PO_SOURCE_LENGTHS, np.float64)
    source = rng.choice(len(weights), size=count, p=weights / weights.sum())
    ratio = np.interp(rng.random(count),
                      np.linspace(0, 1, len(PO_LENGTH_RATIOS)),
                      PO_LENGTH_RATIOS)
    target = np.maximum(1, np.rint(source * ratio)).astype(int)
    # [END] / [START] are added by the pipeline: one token fewer here.
    return (np.minimum(source, max_length - 1),
            np.minimum(target, max_length - 1))


class _IdTokenizer:
    """Text of space-separated ids -> the ids (a stand-in tokenizer)."""

    def tokenize(self, texts):
        import tensorflow as tf

        return tf.strings.to_number(tf.strings.split(texts), tf.int32)


def training_batches(config, settings: dict, reverse: bool = False,
                     count: int | None = None) -> list:
    """Full padded batches of random ids, as `make_dataset` makes them.

    `make_dataset` fills each length bucket's batches to the token budget
    and leaves one partial batch per bucket and epoch. On a real corpus
    (thousands of batches an epoch) those are a few per thousand; on a
    small sample they would be most of the batches. So the pairs sampled
    here make about `_CORPUS_BATCHES` x `count` batches, and the first
    `count` full ones of the shuffled epoch are kept (a partial batch has
    fewer pairs than its bucket's budget allows).

    Args:
        config: the `TransformerConfig` (vocabularies, `max_length`).
        settings: `train_batch_tokens`, `train_batches` (how many batches
            when `count` is None) and optionally `train_max_length`.
        reverse: targets are the sources reversed (a learnable task);
            else random ids of the sampled target lengths.
        count: int or None, the number of batches.

    Returns:
        A list of (encoder_inputs, decoder_inputs, labels) int32 arrays.
    """
    import numpy as np

    from keras_transformer.data import make_dataset
    from keras_transformer.data.pipeline import default_bucket_lengths

    count = settings["train_batches"] if count is None else count
    budget = settings["train_batch_tokens"]
    max_length = min(config.max_length,
                     settings.get("train_max_length", config.max_length))
    rng = np.random.default_rng(0)
    mean_length = 9  # Tokens of a sampled pair with [END]: about 8.6.
    size = max(64, _CORPUS_BATCHES * count * budget // mean_length)
    sources, targets = sample_lengths(rng, size, max_length)
    low = 4  # Above the reserved ids.
    vocab = min(config.source_vocab_size, config.target_vocab_size)
    pairs = []
    for s, t in zip(sources, targets):
        source = rng.integers(low, vocab, int(s))
        target = (source[::-1] if reverse
                  else rng.integers(low, config.target_vocab_size, int(t)))
        pairs.append((" ".join(map(str, source)), " ".join(map(str, target))))
    buckets = np.array(default_bucket_lengths(max_length))
    dataset = make_dataset(pairs, _IdTokenizer(), _IdTokenizer(),
                           batch_tokens=budget, max_length=max_length,
                           seed=0, repeat=True)
    batches = []
    for inputs, labels in dataset:
        source = inputs["encoder_inputs"].numpy()
        decoder_inputs = inputs["decoder_inputs"].numpy()
        # Padded to its longest pair, which lies in this bucket.
        width = max(source.shape[1], labels.shape[1])
        bucket = buckets[np.searchsorted(buckets, width)]
        if len(source) == budget // bucket:
            batches.append((source, decoder_inputs, labels.numpy()))
        if len(batches) == count:
            return batches
    raise AssertionError("unreachable: the dataset repeats")


# Batches an epoch of the sampled corpus, per batch kept: at most one
# partial batch per bucket (42 buckets up to 256 tokens) among 20 x count.
_CORPUS_BATCHES = 20


def batch_figures(config, batches) -> dict:
    """Real and padded tokens and the FLOPs of one pass over `batches`."""
    import numpy as np

    from keras_transformer.benchmarks import ours

    real = sum(int(np.count_nonzero(labels)) for _, _, labels in batches)
    padded = sum(labels.size for _, _, labels in batches)
    flops = sum(ours.training_flops(config, source.shape[0],
                                    source.shape[1], labels.shape[1])
                for source, _, labels in batches)
    return {"batches": len(batches), "real_target_tokens": real,
            "padded_target_tokens": padded,
            "real_source_tokens": sum(int(np.count_nonzero(s))
                                      for s, _, _ in batches),
            "pairs": sum(len(labels) for _, _, labels in batches),
            "shapes": [[int(s.shape[0]), int(s.shape[1]),
                        int(labels.shape[1])] for s, _, labels in batches],
            "flops": flops}


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


def _check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}. "
                         f"Received: precision={precision!r}")


def _feeds(batches, inputs_kind):
    import tensorflow as tf

    feeds = []
    for source, decoder_inputs, labels in batches:
        source, decoder_inputs = tf.constant(source), tf.constant(
            decoder_inputs)
        inputs = ((source, decoder_inputs) if inputs_kind == "tuple" else
                  {"encoder_inputs": source,
                   "decoder_inputs": decoder_inputs})
        feeds.append((inputs, tf.constant(labels)))
    return feeds


def run_training(peer: str, jit_compile: bool, settings: dict,
                 precision: str = "float32") -> dict:
    """Times training passes; returns tokens/s, FLOP/s and memory figures."""
    from keras_transformer.benchmarks import timing

    _check_precision(precision)
    config = _config(settings)
    batches = training_batches(config, settings)
    figures = batch_figures(config, batches)

    baseline_rss = timing.current_rss_bytes()
    import keras

    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy(precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs_kind = _build(peer, config, jit_compile)
        feeds = _feeds(batches, inputs_kind)

        def one_pass():
            for inputs, labels in feeds:
                model.train_on_batch(inputs, labels)

        start = time.perf_counter()
        one_pass()  # traces (and compiles) every batch shape
        first_pass = time.perf_counter() - start
        measurement = timing.measure(
            one_pass, repeats=settings.get("train_repeats",
                                           settings["repeats"]), warmup=1,
            min_repeat_seconds=settings["min_repeat_seconds"])
    keras.config.set_dtype_policy("float32")
    real = figures["real_target_tokens"]
    return {
        "peer": peer, "jit_compile": jit_compile, "precision": precision,
        "parameters": int(model.count_params()),
        "batch_figures": {k: v for k, v in figures.items() if k != "flops"},
        "seconds_per_pass": measurement.to_dict(),
        "seconds_per_step": {k: (v / len(batches) if isinstance(v, float)
                                 else v)
                             for k, v in measurement.to_dict().items()},
        "target_tokens_per_second": real / measurement.median,
        "tokens_per_second_range": [real / measurement.maximum,
                                    real / measurement.minimum],
        "padded_target_tokens_per_second": (
            figures["padded_target_tokens"] / measurement.median),
        "flops_per_step": figures["flops"] / len(batches),
        "gflops_per_second": figures["flops"] / measurement.median / 1e9,
        "first_step_seconds": first_pass,
        "jit_compile_effective": bool(getattr(model, "jit_compile", False)),
        "peak_rss_bytes": timing.peak_rss_bytes(),
        "baseline_rss_bytes": baseline_rss,
    }


def loss_agreement(settings: dict) -> dict:
    """Our model trained in float32 and in mixed_bfloat16, same batches.

    Both start from the same weights (saved from the float32 model) and
    see `loss_steps` batches of `loss_batch_tokens` tokens (targets: the
    sources reversed). Returns both loss curves, the final losses (mean
    of the last 10% of steps) and their difference.
    """
    import keras
    import numpy as np

    config = _config(settings)
    steps = settings["loss_steps"]
    batches = training_batches(
        config, dict(settings, train_batch_tokens=settings[
            "loss_batch_tokens"]), reverse=True, count=steps)
    losses, seconds, weights = {}, {}, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for precision in PRECISIONS:
            keras.utils.set_random_seed(0)
            keras.config.set_dtype_policy(precision)
            model, inputs_kind = _build("ours", config, False)
            if weights is None:
                weights = [w.numpy() for w in model.weights]
            else:
                for variable, value in zip(model.weights, weights):
                    variable.assign(value)
            curve = []
            start = time.perf_counter()
            for inputs, labels in _feeds(batches, inputs_kind):
                result = model.train_on_batch(inputs, labels,
                                              return_dict=True)
                curve.append(float(result["loss"]))
            seconds[precision] = time.perf_counter() - start
            losses[precision] = curve
            keras.config.set_dtype_policy("float32")
    tail = max(1, steps // 10)
    final = {p: float(np.mean(c[-tail:])) for p, c in losses.items()}
    return {"steps": steps, "batch_tokens": settings["loss_batch_tokens"],
            "losses": losses, "final_loss": final, "seconds": seconds,
            "final_loss_difference": final["mixed_bfloat16"]
            - final["float32"],
            "first_loss": {p: c[0] for p, c in losses.items()}}


def _subprocess(request: dict, timeout: float) -> dict:
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(
        [root] + ([os.environ["PYTHONPATH"]]
                  if os.environ.get("PYTHONPATH") else []))
    process = subprocess.run(
        [sys.executable, "-m", "keras_transformer.benchmarks.train_speed",
         json.dumps(request)],
        capture_output=True, text=True, timeout=timeout, cwd=root,
        env=dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = process.stdout.strip().splitlines()
    if process.returncode or not lines:
        raise RuntimeError(
            f"The training benchmark {request.get('peer', 'loss check')!r} "
            f"failed:\n{process.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_in_subprocess(peer: str, jit_compile: bool, settings: dict,
                      precision: str = "float32",
                      timeout: float = 900) -> dict:
    """`run_training` in a fresh interpreter (its own peak memory)."""
    return _subprocess({"peer": peer, "jit_compile": jit_compile,
                        "precision": precision, "settings": settings},
                       timeout)


def loss_agreement_in_subprocess(settings: dict,
                                 timeout: float = 1800) -> dict:
    """`loss_agreement` in a fresh interpreter."""
    return _subprocess({"loss_agreement": True, "settings": settings},
                       timeout)


def _main(argv):
    request = json.loads(argv[1])
    if request.get("loss_agreement"):
        result = loss_agreement(request["settings"])
    else:
        result = run_training(request["peer"], request["jit_compile"],
                              request["settings"],
                              request.get("precision", "float32"))
    print(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv)
