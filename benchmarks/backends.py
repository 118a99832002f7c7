"""Training tokens/s of our model on each Keras backend, as a markdown table.

    python -m keras_transformer.benchmarks.backends [--repeats 5] [--batches 20]

Each configuration runs in its own process (Keras fixes its backend when
imported): TensorFlow as a graph, TensorFlow with XLA (`jit_compile=True`),
JAX (always XLA) and PyTorch (eager). All train the same model (the "tiny"
preset, dropout as configured) with the package's recipe
(`compile_transformer`) on the same batches: `make_dataset` with its token
budget over the bundled English-German corpus, tokenized by whitespace
words. One untimed pass compiles every batch shape; then each repeat is
one timed pass of `train_on_batch` over the batches. Throughput counts the
real (non-pad) target tokens. The median and the spread (min-max) over
the repeats are printed; a shared machine makes single figures noisy.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGURATIONS = (("tensorflow", "TensorFlow (graph)", False),
                  ("tensorflow", "TensorFlow + XLA", True),
                  ("jax", "JAX (XLA)", True),
                  ("torch", "PyTorch (eager)", False))


class _WordTokenizer:
    """Whitespace words -> ids from a fixed vocabulary (1 for unknown)."""

    def __init__(self, texts, reserved=4):
        import tensorflow as tf

        words = sorted({w for text in texts for w in text.split()})
        self.vocab_size = len(words) + reserved
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(words), tf.range(reserved, self.vocab_size)), 1)

    def tokenize(self, texts):
        import tensorflow as tf

        return self.table.lookup(tf.strings.split(texts))


def _batches(count, batch_tokens):
    from keras_transformer.data import load_corpus, make_dataset

    corpus = load_corpus("bundled")
    pairs = list(zip(corpus.sources, corpus.targets))
    source = _WordTokenizer([s for s, _ in pairs])
    target = _WordTokenizer([t for _, t in pairs])
    dataset = make_dataset(pairs, source, target, batch_tokens=batch_tokens,
                           seed=0, repeat=True)
    batches = [({k: v.numpy() for k, v in inputs.items()}, labels.numpy())
               for inputs, labels in dataset.take(count)]
    return batches, source.vocab_size, target.vocab_size


def measure(jit_compile, repeats, count, batch_tokens):
    """Runs in the child process: tokens/s of each repeat."""
    import keras
    import numpy as np

    from keras_transformer.config import TransformerConfig
    from keras_transformer.model import build_transformer
    from keras_transformer.training import compile_transformer

    batches, source_vocab, target_vocab = _batches(count, batch_tokens)
    config = TransformerConfig.from_preset(
        "tiny", source_vocab_size=source_vocab,
        target_vocab_size=target_vocab, share_embeddings=False,
        tie_output_projection=False)
    keras.utils.set_random_seed(0)
    model = compile_transformer(build_transformer(config), config)
    model.jit_compile = jit_compile
    tokens = sum(int(np.count_nonzero(labels)) for _, labels in batches)
    for inputs, labels in batches:  # Compiles every shape.
        model.train_on_batch(inputs, labels)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for inputs, labels in batches:
            model.train_on_batch(inputs, labels)
        rates.append(tokens / (time.perf_counter() - start))
    return {"rates": rates, "tokens": tokens,
            "shapes": len({(i["encoder_inputs"].shape, labels.shape)
                           for i, labels in batches})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        result = measure(args.child == "xla", args.repeats, args.batches,
                         args.batch_tokens)
        print(json.dumps(result))
        return 0
    print("| backend | real target tokens/s (median) | min-max | "
          "batches (shapes) |")
    print("| --- | ---: | ---: | ---: |")
    for backend, label, jit in CONFIGURATIONS:
        env = dict(os.environ, KERAS_BACKEND=backend,
                   TF_CPP_MIN_LOG_LEVEL="3")
        run = subprocess.run(
            [sys.executable, "-m", "benchmarks.backends", "--child",
             "xla" if jit else "graph", "--repeats", str(args.repeats),
             "--batches", str(args.batches), "--batch-tokens",
             str(args.batch_tokens)], env=env, capture_output=True,
            text=True)
        if run.returncode:
            print(f"| {label} | failed: "
                  f"{run.stderr.strip().splitlines()[-1]} | | |")
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        rates = result["rates"]
        print(f"| {label} | {statistics.median(rates):,.0f} | "
              f"{min(rates):,.0f}-{max(rates):,.0f} | "
              f"{args.batches} ({result['shapes']}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
