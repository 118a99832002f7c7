"""The `keras-transformer` command. It parses arguments and calls the API.

    keras-transformer quickstart [--run DIR]
    keras-transformer train --data SPEC --run DIR [--preset small ...]
    keras-transformer translate --run DIR [TEXT ...] [--file F] [--beam N]
    keras-transformer evaluate --run DIR --data SPEC
    keras-transformer export --run DIR --format saved_model|onnx|all|
        ctranslate2[-int8] --out DIR
    keras-transformer bench [--quick]
    keras-transformer --verbose COMMAND ...   (TensorFlow's log lines too)

Bad input (missing files, unknown presets, a run directory holding another
config, ...) ends with one line `error: ...` and exit status 2.

This module imports only the standard library at top level, and the
parser only pure-Python modules, so `--help` never imports TensorFlow;
each command imports what it needs once its arguments are parsed, after
`_logging.configure` has imported TensorFlow quietly.
"""

import argparse
import json
import os
import sys

DATA_HELP = ("bundled[:de|fr] (English number phrases, no download), "
             "tfds:NAME, a .tsv file, or SOURCE,TARGET aligned plain-text "
             "files")


def _add_verbose(parser: argparse.ArgumentParser, subcommand: bool) -> None:
    # After a subcommand, SUPPRESS keeps an absent flag from overwriting
    # the value parsed before it.
    parser.add_argument(
        "--verbose", action="store_true",
        default=argparse.SUPPRESS if subcommand else False,
        help="show TensorFlow's start-up and log lines (hidden by default)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `keras-transformer` command.

    Building it imports no TensorFlow, Keras or NumPy.

    Returns:
        An `argparse.ArgumentParser` with one subparser per command.
    """
    from keras_transformer.config import PRESETS  # Pure Python.

    parser = argparse.ArgumentParser(
        prog="keras-transformer",
        description="Train, use and export Transformer translators.")
    _add_verbose(parser, subcommand=False)
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="COMMAND")

    def command(name, text, description=None):
        sub = commands.add_parser(name, help=text,
                                  description=description or text)
        _add_verbose(sub, subcommand=True)
        return sub

    quick = command(
        "quickstart", "train on the bundled corpus, evaluate, export",
        "Train a tiny translator on the bundled corpus (English number "
        "phrases to French or German; minutes on a CPU), evaluate it, and "
        "export it.")
    quick.add_argument("--run", default="runs/quickstart",
                       help="the run directory, resumed if it exists "
                            "(default: %(default)s)")
    quick.add_argument("--language", choices=("fr", "de"), default="fr",
                       help="target language of the bundled corpus "
                            "(default: %(default)s)")
    quick.add_argument("--epochs", type=int, default=None,
                       help="training epochs (default: the quickstart's "
                            "setting)")

    train = command("train", "train a translator")
    train.add_argument("--data", required=True,
                       help=f"training corpus: {DATA_HELP}")
    train.add_argument("--valid-data", default=None,
                       help="validation corpus, same forms as --data "
                            "(default: the validation split of bundled and "
                            "tfds data, none for files)")
    train.add_argument("--run", required=True,
                       help="the run directory (the same command again "
                            "resumes it)")
    train.add_argument("--preset", default="small", choices=tuple(PRESETS),
                       help="model size (default: %(default)s)")
    train.add_argument("--epochs", type=int, default=10,
                       help="training epochs (default: %(default)s)")
    train.add_argument("--steps", type=int, default=None,
                       help="steps per epoch (default: one pass)")
    train.add_argument("--batch-tokens", type=int, default=4096,
                       help="token budget per batch (default: %(default)s)")
    train.add_argument("--vocab-size", type=int, default=8000,
                       help="largest SentencePiece vocabulary to learn, "
                            "joint or per side, 256 byte pieces included "
                            "(default: %(default)s)")
    train.add_argument("--separate-vocab", action="store_true",
                       help="one SentencePiece model per side (default: one "
                            "joint vocabulary for both sides, as the paper)")
    train.add_argument("--vocab-sample", type=int, default=1_000_000,
                       help="learn the vocabulary from at most this many "
                            "sentences, a random sample of larger corpora "
                            "(default: %(default)s)")
    train.add_argument("--subword-model", choices=("unigram", "bpe"),
                       default="unigram",
                       help="SentencePiece model type (default: "
                            "%(default)s)")
    train.add_argument("--truncate", action="store_true",
                       help="truncate pairs over max_length (default: drop)")
    train.add_argument("--average-last", type=int, default=5,
                       help="average the newest N checkpoints into the "
                            "final model; 0 keeps the last weights "
                            "(default: %(default)s)")
    train.add_argument("--strategy", default="default",
                       choices=("default", "mirrored", "multi_worker"),
                       help="tf.distribute strategy: one device, every "
                            "local GPU, or the workers of TF_CONFIG "
                            "(default: %(default)s)")
    train.add_argument("--set", action="append", default=[],
                       metavar="FIELD=VALUE",
                       help="override a TransformerConfig field (JSON "
                            "value; repeatable)")

    translate = command("translate", "translate text")
    translate.add_argument("--run", required=True,
                           help="a trained run directory")
    translate.add_argument("text", nargs="*",
                           help="texts (default: --file or stdin)")
    translate.add_argument("--file", default=None,
                           help="one text a line ('-' for stdin)")
    search = translate.add_mutually_exclusive_group()
    search.add_argument("--beam", type=int, default=None,
                        help="beam size (default: the translator's, 4)")
    search.add_argument("--greedy", action="store_true",
                        help="greedy search (beam size 1)")
    translate.add_argument("--nbest", type=int, default=1,
                           help="print the N best translations of each "
                                "text, with rank and score (default: "
                                "%(default)s)")
    translate.add_argument("--batch-size", type=int, default=64,
                           help="texts translated at once (default: "
                                "%(default)s)")
    translate.add_argument(
        "--jit-compile", action="store_true",
        help="XLA-compile each search (faster on repeated shapes; every "
             "new batch shape compiles once)")
    translate.add_argument("--plot-attention", default=None,
                           metavar="OUT.png",
                           help="cross-attention heatmap of the first text")

    evaluate = command("evaluate", "BLEU, chrF, exact match")
    evaluate.add_argument("--run", required=True,
                          help="a trained run directory")
    evaluate.add_argument("--data", required=True,
                          help=f"held-out corpus: {DATA_HELP}")
    evaluate.add_argument("--split", default="test",
                          help="split of bundled and tfds data (default: "
                               "%(default)s)")
    evaluate.add_argument("--greedy", action="store_true",
                          help="greedy search (beam size 1)")
    evaluate.add_argument("--beam", type=int, default=None,
                          help="beam size (default: the translator's, 4)")
    evaluate.add_argument("--jit-compile", action="store_true",
                          help="XLA-compile each search")

    export = command("export", "SavedModel and ONNX")
    export.add_argument("--run", required=True,
                        help="a trained run directory")
    export.add_argument("--format", default="all",
                        choices=("saved_model", "onnx", "all",
                                 "ctranslate2", "ctranslate2-int8"),
                        help="what to write: all is saved_model and onnx; "
                             "ctranslate2 needs the bench extra (default: "
                             "%(default)s)")
    export.add_argument("--out", required=True,
                        help="the output directory")

    bench = command("bench", "speed benchmarks")
    bench.add_argument("--quick", action="store_true",
                       help="tiny config, few repeats (a smoke run)")
    bench.add_argument("--output", default="benchmarks/RESULTS.md",
                       help="the Markdown report; the figures go beside it "
                            "as .json (default: %(default)s)")
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
        joint_vocabulary=not args.separate_vocab,
        subword_model=args.subword_model, vocab_sample=args.vocab_sample,
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
    """Runs the `keras-transformer` command.

    Args:
        argv: list of str, the arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status: 0, 2 after an `error: ...` line, 130 when
        interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        from keras_transformer import _logging

        _logging.configure(verbose=args.verbose)
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
