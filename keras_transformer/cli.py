"""The `keras-transformer` command. It parses arguments and calls the API.

    keras-transformer quickstart [--run DIR]
    keras-transformer train --data SPEC --run DIR [--preset small ...]
    keras-transformer translate --run DIR [TEXT ...] [--file F] [--beam N]
    keras-transformer evaluate --run DIR --data SPEC
    keras-transformer export --run DIR --format saved_model|onnx|all|
        ctranslate2[-int8] --out DIR
    keras-transformer bench [--quick]

Bad input (missing files, unknown presets, a run directory holding another
config, ...) ends with one line `error: ...` and exit status 2.
"""

import argparse
import json
import logging
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PRESETS = ("tiny", "small", "base", "big")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-transformer",
        description="Train, use and export Transformer translators.")
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser(
        "quickstart", help="train on the bundled corpus, evaluate, export")
    quick.add_argument("--run", default="runs/quickstart")
    quick.add_argument("--language", choices=("fr", "de"), default="fr")
    quick.add_argument("--epochs", type=int, default=None)

    train = commands.add_parser("train", help="train a translator")
    train.add_argument("--data", required=True,
                       help="bundled[:de|fr], tfds:NAME, a .tsv file, or "
                            "SOURCE,TARGET plain-text files")
    train.add_argument("--valid-data", default=None)
    train.add_argument("--run", required=True, help="the run directory")
    train.add_argument("--preset", default="small", choices=PRESETS)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--steps", type=int, default=None,
                       help="steps per epoch (default: one pass)")
    train.add_argument("--batch-tokens", type=int, default=4096)
    train.add_argument("--vocab-size", type=int, default=8000)
    train.add_argument("--joint-vocab", action="store_true",
                       help="one vocabulary for both sides (paper)")
    train.add_argument("--lower-case", action="store_true")
    train.add_argument("--truncate", action="store_true",
                       help="truncate pairs over max_length (default: drop)")
    train.add_argument("--average-last", type=int, default=5)
    train.add_argument("--strategy", default="default",
                       choices=("default", "mirrored", "multi_worker"))
    train.add_argument("--set", action="append", default=[],
                       metavar="FIELD=VALUE",
                       help="override a TransformerConfig field")

    translate = commands.add_parser("translate", help="translate text")
    translate.add_argument("--run", required=True)
    translate.add_argument("text", nargs="*",
                           help="texts (default: --file or stdin)")
    translate.add_argument("--file", default=None,
                           help="one text a line ('-' for stdin)")
    search = translate.add_mutually_exclusive_group()
    search.add_argument("--beam", type=int, default=None)
    search.add_argument("--greedy", action="store_true")
    translate.add_argument("--nbest", type=int, default=1)
    translate.add_argument("--batch-size", type=int, default=64)
    translate.add_argument(
        "--jit-compile", action="store_true",
        help="XLA-compile each search (faster on repeated shapes; every "
             "new batch shape compiles once)")
    translate.add_argument("--plot-attention", default=None,
                           metavar="OUT.png",
                           help="cross-attention heatmap of the first text")

    evaluate = commands.add_parser("evaluate", help="BLEU, chrF, exact match")
    evaluate.add_argument("--run", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--greedy", action="store_true")
    evaluate.add_argument("--beam", type=int, default=None)
    evaluate.add_argument("--jit-compile", action="store_true",
                          help="XLA-compile each search")

    export = commands.add_parser("export", help="SavedModel and ONNX")
    export.add_argument("--run", required=True)
    export.add_argument("--format", default="all",
                        choices=("saved_model", "onnx", "all",
                                 "ctranslate2", "ctranslate2-int8"))
    export.add_argument("--out", required=True)

    bench = commands.add_parser("bench", help="speed benchmarks")
    bench.add_argument("--quick", action="store_true",
                       help="tiny config, few repeats (a smoke run)")
    bench.add_argument("--output", default="benchmarks/RESULTS.md")
    return parser


def _overrides(pairs):
    values = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(
                f"`--set` takes FIELD=VALUE. Received: --set {pair}")
        field, value = pair.split("=", 1)
        try:
            values[field] = json.loads(value)
        except json.JSONDecodeError:
            values[field] = value
    return values


def _read_texts(args):
    if args.text:
        return list(args.text)
    if args.file in (None, "-"):
        return [line.rstrip("\n") for line in sys.stdin]
    if not os.path.exists(args.file):
        raise FileNotFoundError(
            f"`--file` does not exist. Received: --file {args.file}")
    with open(args.file, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in f]


def _cmd_train(args):
    from keras_transformer.runs import train_run
    from keras_transformer.training import get_strategy
    result = train_run(
        args.data, args.run, preset=args.preset, valid_data=args.valid_data,
        epochs=args.epochs, steps_per_epoch=args.steps,
        batch_tokens=args.batch_tokens, vocab_size=args.vocab_size,
        joint_vocabulary=args.joint_vocab, lower_case=args.lower_case,
        length_policy="truncate" if args.truncate else "drop",
        average_last=args.average_last or None,
        strategy=get_strategy(args.strategy), **_overrides(args.set))
    print(f"data: {result.data['read']}; {result.data['length']}")
    print(f"trained run written to {result.run_dir}")


def _cmd_translate(args):
    from keras_transformer.runs import load_translator
    translator = load_translator(args.run, jit_compile=args.jit_compile)
    texts = _read_texts(args)
    beam = 1 if args.greedy else args.beam
    nbest = args.nbest
    progress = None
    if args.file and len(texts) > args.batch_size:
        import keras
        bar = keras.utils.Progbar(len(texts), unit_name="sentence")
        progress = bar.add
    for start in range(0, len(texts), args.batch_size):
        batch = texts[start:start + args.batch_size]
        results = translator(batch, beam_size=beam, nbest=nbest)
        for text, result in zip(batch, results):
            if nbest == 1:
                print(result[0])
            else:
                for rank, (translation, score) in enumerate(result, 1):
                    print(f"{rank}\t{score:.4f}\t{translation}")
        if progress:
            progress(len(batch))
    if args.plot_attention and texts:
        from keras_transformer.plotting import plot_attention
        source, target, weights = translator.attention(texts[0])
        plot_attention(weights, source, target, args.plot_attention,
                       title=texts[0])
        print(f"attention plot written to {args.plot_attention}",
              file=sys.stderr)


def _cmd_evaluate(args):
    from keras_transformer.runs import evaluate_run
    beam = 1 if args.greedy else args.beam
    metrics = evaluate_run(args.run, args.data, split=args.split,
                           beam_size=beam, jit_compile=args.jit_compile)
    _print_metrics(metrics)


def _print_metrics(metrics):
    print(f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}  "
          f"exact match {100 * metrics['exact_match']:.1f}% "
          f"({metrics['sentences']} sentences, beam {metrics['beam_size']})")
    for source, hypothesis, reference in metrics["examples"]:
        mark = "=" if hypothesis == reference else "≠"
        print(f"  {source}\n    -> {hypothesis}  {mark}  {reference}")


def _cmd_export(args):
    from keras_transformer.export import export_run
    report = export_run(args.run, args.out, args.format)
    print(json.dumps(report, indent=2, ensure_ascii=False))


def _cmd_quickstart(args):
    from keras_transformer.quickstart import quickstart
    quickstart(args.run, language=args.language, epochs=args.epochs,
               report=print)


def _cmd_bench(args):
    from keras_transformer.benchmarks.harness import main as bench_main
    bench_main(quick=args.quick, output=args.output)


COMMANDS = {"train": _cmd_train, "translate": _cmd_translate,
            "evaluate": _cmd_evaluate, "export": _cmd_export,
            "quickstart": _cmd_quickstart, "bench": _cmd_bench}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # TensorFlow's own notes on saving and tracing are not for CLI users.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    try:
        COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else repr(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
