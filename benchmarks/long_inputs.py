"""Training speed and memory on long sources (summarization).

For each source length S (256, 512 and 1,024 tokens by default), a fresh
process builds the "summarization" preset (3 + 3 layers, d_model 256,
sources up to 1,024 tokens, targets up to 128) with the package's training
recipe and times `train_on_batch` on real text: documents made of
consecutive Debian package descriptions (the bundled corpus), tokenized by
a SentencePiece model learned from them and cut at S - 1 tokens + [END];
the targets are the synopses (about 10 tokens). Batches hold
`batch_tokens // S` documents, the token budget of `make_dataset`. It
reports source and real target tokens per second (medians over repeats,
with the spread) and the process's peak resident memory.

    python -m keras_transformer.benchmarks.long_inputs [--lengths 256 512]

Prints a Markdown table. Not a test: no timing is asserted anywhere.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_LENGTHS = (256, 512, 1024)


def _documents(tokenizer, length: int, count: int):
    """(count, length) source ids and their synopses' (count, T) ids."""
    import numpy as np

    from keras_transformer.data import debian_corpus
    from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

    corpus = debian_corpus("train")
    sources, targets, position = [], [], 0
    for _ in range(count):
        ids = []
        first = position
        while len(ids) < length - 1:  # Consecutive descriptions.
            ids += tokenizer.tokenize([corpus.sources[position]])[0].numpy(
                ).tolist()
            position += 1
        sources.append(ids[:length - 1] + [END_ID])
        targets.append(tokenizer.tokenize([corpus.targets[first]])[0].numpy(
            ).tolist()[:126])
    width = max(len(t) for t in targets) + 1
    decoder = np.full((count, width), PAD_ID, np.int32)
    labels = np.full((count, width), PAD_ID, np.int32)
    for row, target in enumerate(targets):
        decoder[row, :len(target) + 1] = [START_ID] + target
        labels[row, :len(target) + 1] = target + [END_ID]
    return np.array(sources, np.int32), decoder, labels


def measure(length: int, batch_tokens: int, steps: int, repeats: int,
            vocab_size: int) -> dict:
    """Times training steps at source length `length` in this process."""
    import keras

    from keras_transformer.config import TransformerConfig
    from keras_transformer.data import debian_corpus
    from keras_transformer.model import build_transformer
    from keras_transformer.text.sentencepiece_model import (
        learn_tokenizer_models,
    )
    from keras_transformer.text.sentencepiece_tokenizer import (
        SentencePieceTokenizer,
    )
    from keras_transformer.training import compile_transformer

    corpus = debian_corpus("validation")
    proto, _ = learn_tokenizer_models(corpus.sources, corpus.targets,
                                      vocab_size=vocab_size)
    tokenizer = SentencePieceTokenizer(proto)
    batch = max(1, batch_tokens // length)
    sources, decoder, labels = _documents(tokenizer, length, batch)
    config = TransformerConfig.from_preset(
        "summarization", source_vocab_size=tokenizer.vocab_size,
        target_vocab_size=tokenizer.vocab_size)
    keras.utils.set_random_seed(0)
    model = build_transformer(config)
    compile_transformer(model, config)
    inputs = {"encoder_inputs": sources, "decoder_inputs": decoder}
    for _ in range(2):  # Traces and warms up.
        model.train_on_batch(inputs, labels)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(inputs, labels)
        times.append((time.perf_counter() - start) / steps)
    target_tokens = int((labels != 0).sum())
    median = statistics.median(times)
    return {
        "source_length": length, "batch": batch,
        "target_tokens_per_batch": target_tokens,
        "step_seconds": median,
        "step_spread": [min(times), max(times)],
        "source_tokens_per_second": batch * length / median,
        "target_tokens_per_second": target_tokens / median,
        # Linux reports kilobytes.
        "peak_rss_mb": resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def table(results: list[dict]) -> str:
    lines = ["| source length | batch | step (s), median [min, max] | "
             "source tokens/s | target tokens/s | peak RSS (MB) |",
             "|---:|---:|---|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['source_length']} | {r['batch']} | "
            f"{r['step_seconds']:.3f} [{r['step_spread'][0]:.3f}, "
            f"{r['step_spread'][1]:.3f}] | "
            f"{r['source_tokens_per_second']:,.0f} | "
            f"{r['target_tokens_per_second']:,.0f} | "
            f"{r['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=list(DEFAULT_LENGTHS))
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--worker", type=int, default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(measure(args.worker, args.batch_tokens, args.steps,
                                 args.repeats, args.vocab_size)))
        return
    results = []
    for length in args.lengths:  # One process each: its own peak memory.
        output = subprocess.run(
            [sys.executable, "-m", "keras_transformer.benchmarks.long_inputs",
             "--worker", str(length), "--batch-tokens",
             str(args.batch_tokens), "--steps", str(args.steps),
             "--repeats", str(args.repeats), "--vocab-size",
             str(args.vocab_size)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        results.append(json.loads(output.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    print(table(results))


if __name__ == "__main__":
    main()
