"""The `keras-transformer` command. It parses arguments and calls the API.

    keras-transformer quickstart [--run DIR]
    keras-transformer train --data SPEC --run DIR [--preset small ...]
        [--precision float32|mixed_bfloat16|mixed_float16]
    keras-transformer translate --run DIR [TEXT ...] [--file F] [--beam N]
    keras-transformer summarize --run DIR [TEXT ...] [--file F] [--beam N]
    keras-transformer evaluate --run DIR --data SPEC
    keras-transformer export --run DIR --format saved_model|onnx|all|
        ctranslate2[-int8]|web --out DIR
    keras-transformer serve-web DIR [--port 8000]   (a web export, on
        127.0.0.1, cross-origin isolated)
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
             "bundled:debian (Debian package descriptions to their synopsis, "
             "a summarization corpus), tfds:NAME, a .tsv file, a .jsonl file "
             "(with --source-field and --target-field), or SOURCE,TARGET "
             "aligned plain-text files")


def _add_fields(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-field", default=None,
                        help="the source's field of a .jsonl corpus (or "
                             "feature of a tfds dataset)")
    parser.add_argument("--target-field", default=None,
                        help="the target's field of a .jsonl corpus (or "
                             "feature of a tfds dataset)")


def _add_search(parser: argparse.ArgumentParser) -> None:
    """Search settings; each defaults to the run's task default."""
    group = parser.add_argument_group(
        "search", "defaults: the run's task (translation: the paper's beam "
                  "4, length penalty 0.6, source + 50 tokens; "
                  "summarization: also bigram blocking and the model's "
                  "target length as the output limit)")
    beam = group.add_mutually_exclusive_group()
    beam.add_argument("--beam", type=int, default=None,
                      help="beam size (default: the run's, 4)")
    beam.add_argument("--greedy", action="store_true",
                      help="greedy search (beam size 1)")
    group.add_argument("--length-penalty", type=float, default=None,
                       help="GNMT length penalty alpha (0: none)")
    group.add_argument("--min-length", type=int, default=None,
                       help="no output ends before this many tokens")
    group.add_argument("--no-repeat-ngram", type=int, default=None,
                       metavar="N",
                       help="no n-gram of N tokens appears twice in an "
                            "output (0: off)")
    group.add_argument("--max-output-tokens", type=int, default=None,
                       help="an absolute output limit in tokens, instead of "
                            "source length + --extra-length")
    group.add_argument("--extra-length", type=int, default=None,
                       help="outputs may be this many tokens longer than "
                            "their source (when no --max-output-tokens)")


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
    from keras_transformer.checks import PRECISION_CHOICES  # Pure Python.
    from keras_transformer.config import (  # Pure Python.
        PRESETS,
        SCHEDULES,
        TASKS,
    )

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
        "quickstart", "train on a bundled corpus, evaluate, export",
        "Train a tiny model on a bundled corpus (no download), evaluate it, "
        "and export it: a translator of English number phrases to French "
        "or German (minutes on a CPU), or with --task summarization a "
        "summarizer of Debian package descriptions (about 11 minutes on 2 "
        "cores) scored with ROUGE against two extractive baselines.")
    quick.add_argument("--run", default=None,
                       help="the run directory, resumed if it exists "
                            "(default: runs/quickstart, or runs/summarize "
                            "for summarization)")
    quick.add_argument("--task", choices=TASKS, default="translation",
                       help="which bundled task (default: %(default)s)")
    quick.add_argument("--language", choices=("fr", "de"), default="fr",
                       help="target language of the bundled translation "
                            "corpus (default: %(default)s)")
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
    train.add_argument("--init-from", default=None, metavar="RUN",
                       help="fine-tune the model of this run directory "
                            "(e.g. one import-marian wrote): its tokenizers "
                            "and architecture, only training settings may "
                            "change")
    train.add_argument("--preset", default=None, choices=tuple(PRESETS),
                       help="model size (default: small, or summarization "
                            "with --task summarization)")
    train.add_argument("--task", default=None, choices=TASKS,
                       help="what the run is for: its metrics (BLEU/chrF or "
                            "ROUGE), length limits and search defaults "
                            "(default: the preset's, translation but for "
                            "the summarization preset)")
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
    train.add_argument("--length-policy", choices=("drop", "truncate"),
                       default=None,
                       help="pairs longer than the model's source or "
                            "target length are dropped or truncated, and "
                            "counted (default: drop for translation, "
                            "truncate for summarization)")
    _add_fields(train)
    train.add_argument("--time-budget", type=parse_duration, default=None,
                       metavar="DURATION",
                       help="stop training after this long, e.g. 90s, 30m, "
                            "1.5h (a plain number is seconds); with "
                            "--schedule linear the decay is planned to end "
                            "with the budget (default: train all epochs)")
    train.add_argument("--schedule", choices=SCHEDULES, default=None,
                       help="learning-rate schedule: paper (warm-up, then "
                            "inverse square-root decay, made for 100k "
                            "steps) or linear (warm-up, then linear decay "
                            "to zero at the run's last planned step) "
                            "(default: the preset's, paper)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="peak learning rate (default: the paper's, "
                            "(d_model * warmup_steps) ** -0.5)")
    train.add_argument("--warmup-steps", type=int, default=None,
                       help="warm-up steps (default: the preset's)")
    train.add_argument("--average-last", type=int, default=5,
                       help="average the newest N checkpoints into the "
                            "final model; 0 keeps the last weights "
                            "(default: %(default)s)")
    train.add_argument("--strategy", default="default",
                       choices=("default", "mirrored", "multi_worker"),
                       help="tf.distribute strategy: one device, every "
                            "local GPU, or the workers of TF_CONFIG "
                            "(default: %(default)s)")
    train.add_argument("--precision", choices=PRECISION_CHOICES,
                       default="auto",
                       help="Keras dtype policy to train in: mixed_bfloat16 "
                            "trains about 1.65x faster on CPUs with AMX or "
                            "AVX512-BF16; auto picks it where the machine "
                            "has native bfloat16 and float32 elsewhere "
                            "(the run records its choice); "
                            "mixed_float16 is for GPUs (with "
                            "loss scaling); model.keras is float32 either "
                            "way; resuming a run takes the precision it "
                            "was started with (default: %(default)s)")
    train.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                       default=None,
                       help="Keras backend to train on (sets KERAS_BACKEND; "
                            "default: KERAS_BACKEND, else tensorflow); "
                            "every other command reads the run it writes "
                            "under TensorFlow")
    train.add_argument("--set", action="append", default=[],
                       metavar="FIELD=VALUE",
                       help="override a TransformerConfig field (JSON "
                            "value; repeatable)")

    for verb, text in (("translate", "translate text"),
                       ("summarize", "summarize text")):
        use = command(verb, text,
                      f"{text[0].upper()}{text[1:]} with a trained run. "
                      "translate and summarize are one command under two "
                      "names: the run's task sets the search defaults.")
        use.add_argument("--run", required=True,
                         help="a trained run directory")
        use.add_argument("text", nargs="*",
                         help="texts (default: --file or stdin)")
        use.add_argument("--file", default=None,
                         help="one text a line ('-' for stdin)")
        _add_search(use)
        use.add_argument("--nbest", type=int, default=1,
                         help="print the N best outputs of each text, with "
                              "rank and score (default: %(default)s)")
        use.add_argument("--batch-size", type=int, default=64,
                         help="texts processed at once (default: "
                              "%(default)s)")
        use.add_argument(
            "--jit-compile", action="store_true",
            help="XLA-compile each search (faster on repeated shapes; every "
                 "new batch shape compiles once)")
        use.add_argument("--plot-attention", default=None,
                         metavar="OUT.png",
                         help="cross-attention heatmap of the first text")

    evaluate = command("evaluate", "BLEU, chrF, exact match; or ROUGE",
                       "Score a trained run on a held-out corpus: BLEU, "
                       "chrF and exact match for translation, ROUGE-1/2/L "
                       "and summary lengths for summarization.")
    evaluate.add_argument("--run", required=True,
                          help="a trained run directory")
    evaluate.add_argument("--data", required=True,
                          help=f"held-out corpus: {DATA_HELP}")
    evaluate.add_argument("--split", default="test",
                          help="split of bundled and tfds data (default: "
                               "%(default)s)")
    _add_fields(evaluate)
    _add_search(evaluate)
    evaluate.add_argument("--jit-compile", action="store_true",
                          help="XLA-compile each search")

    export = command("export", "SavedModel and ONNX")
    export.add_argument("--run", required=True,
                        help="a trained run directory")
    export.add_argument("--format", default="all",
                        choices=("saved_model", "onnx", "all",
                                 "ctranslate2", "ctranslate2-int8", "web"),
                        help="what to write: all is saved_model, onnx and, "
                             "where `npm ci --prefix export/web` has run, "
                             "web (OUT/web, a page that translates in the "
                             "browser); ctranslate2 needs the bench extra "
                             "(default: %(default)s)")
    export.add_argument("--out", required=True,
                        help="the output directory")
    export.add_argument("--quantize", choices=("int8", "float16"),
                        default=None,
                        help="ONNX and web only: int8 (the decoder step's "
                             "MatMuls in int8, every other weight stored as "
                             "int8: about 3.8x smaller) or float16 (weights "
                             "stored as float16: 2x smaller, nearly every "
                             "output as float32's); verified against the "
                             "float32 ids")
    export.add_argument("--onnx-operators",
                        choices=("onnxruntime", "standard"), default=None,
                        help="ONNX only: onnxruntime (the greedy search's "
                             "decoder step with onnxruntime's fused "
                             "com.microsoft attention, which only onnxruntime "
                             "runs) or standard (ONNX "
                             "operators only, for other engines); default "
                             "standard with --format web, else onnxruntime. "
                             "The web folder always gets standard graphs")
    export.add_argument("--ort-beam-search", action="store_true",
                        help="ONNX only: also write beam_ort.onnx, the "
                             "beam search as onnxruntime's BeamSearch op "
                             "(faster; ranks by score / length^alpha, not "
                             "GNMT; verified at alpha 0)")
    _add_search(export)

    serve = command("serve-web", "serve a web export on 127.0.0.1",
                    "Serve a web export (export --format web) on "
                    "http://127.0.0.1:PORT/ with the headers that let its "
                    "page use WebAssembly threads (cross-origin isolation). "
                    "Browsers do not run it from file://. Ctrl-C stops.")
    serve.add_argument("dir", help="the web export folder (OUT/web)")
    serve.add_argument("--port", type=int, default=8000,
                       help="the port; 0 picks a free one (default: "
                            "%(default)s)")

    marian = command(
        "import-marian", "import a Hugging Face Marian / OPUS-MT folder",
        "Import a local Hugging Face Marian folder (config.json, "
        "model.safetensors or pytorch_model.bin, source.spm, target.spm, "
        "vocab.json) into a run directory that translate, evaluate, export "
        "and train --init-from take. Nothing is downloaded: fetch the "
        "folder first (e.g. `hf download Helsinki-NLP/opus-mt-en-de "
        "--local-dir DIR`). With transformers and torch installed, the "
        "import checks itself against them.")
    marian.add_argument("src", help="the Marian folder")
    marian.add_argument("--run", required=True,
                        help="the run directory to write (must hold no "
                             "model)")
    marian.add_argument("--check", choices=("auto", "yes", "no"),
                        default="auto",
                        help="compare with transformers on sample "
                             "sentences: auto (when installed), yes "
                             "(required), no (default: %(default)s)")
    marian.add_argument("--samples", default=None,
                        help="a text file of sentences (one per line) for "
                             "the check and the run's samples.txt")

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
        length_policy=args.length_policy,
        average_last=args.average_last or None,
        strategy=get_strategy(args.strategy),
        source_field=args.source_field, target_field=args.target_field,
        precision=args.precision, time_budget=args.time_budget,
        init_from=args.init_from,
        **_task(args), **_schedule(args), **_overrides(args.set))
    print(f"data: {result.data['read']}; {result.data['length']}")
    print(f"trained run written to {result.run_dir} (precision "
          f"{result.precision})")


def _schedule(args):
    """The schedule flags given, as config overrides."""
    flags = {"schedule": args.schedule, "learning_rate": args.learning_rate,
             "warmup_steps": args.warmup_steps}
    return {key: value for key, value in flags.items() if value is not None}


def parse_duration(text: str) -> float:
    """Seconds of "90", "90s", "30m", "1.5h"; argparse's `type` for
    --time-budget (its ValueError reads as an invalid value)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text,
                                                                     "s")
    seconds = float(number) * units[unit]
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(text)
    return seconds


def _task(args):
    return {} if args.task is None else {"task": args.task}


def _settings(args):
    """The run's task defaults with the search flags given."""
    from keras_transformer.runs import search_settings
    flags = {"beam_size": 1 if args.greedy else args.beam,
             "length_penalty": args.length_penalty,
             "min_length": args.min_length,
             "no_repeat_ngram_size": args.no_repeat_ngram,
             "max_output_tokens": args.max_output_tokens,
             "extra_length": args.extra_length}
    return search_settings(args.run, **{
        key: value for key, value in flags.items() if value is not None})


def _cmd_translate(args):
    from keras_transformer.runs import load_translator
    translator = load_translator(args.run, settings=_settings(args),
                                 jit_compile=args.jit_compile)
    texts = _read_texts(args)
    beam = None
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
    metrics = evaluate_run(args.run, args.data, split=args.split,
                           settings=_settings(args),
                           jit_compile=args.jit_compile,
                           source_field=args.source_field,
                           target_field=args.target_field)
    _print_metrics(metrics)


def _print_metrics(metrics):
    if metrics.get("task") == "summarization":
        print(f"ROUGE-1 {metrics['rouge1']:.2f}  ROUGE-2 "
              f"{metrics['rouge2']:.2f}  ROUGE-L {metrics['rougeL']:.2f}  "
              f"words {metrics['summary_words']:.1f} (references "
              f"{metrics['reference_words']:.1f})  "
              f"({metrics['sentences']} documents, beam "
              f"{metrics['beam_size']})")
    else:
        print(f"BLEU {metrics['bleu']:.2f}  chrF {metrics['chrf']:.2f}  "
              f"exact match {100 * metrics['exact_match']:.1f}% "
              f"({metrics['sentences']} sentences, beam "
              f"{metrics['beam_size']})")
    for source, hypothesis, reference in metrics["examples"]:
        mark = "=" if hypothesis == reference else "≠"
        print(f"  {source}\n    -> {hypothesis}  {mark}  {reference}")


def _cmd_export(args):
    from keras_transformer.export import export_run
    report = export_run(args.run, args.out, args.format,
                        settings=_settings(args), quantize=args.quantize,
                        beam_op=args.ort_beam_search,
                        onnx_operators=args.onnx_operators)
    print(json.dumps(report, indent=2, ensure_ascii=False))


def _cmd_serve_web(args):
    from keras_transformer.export.web.serve import serve_web
    serve_web(args.dir, args.port,
              ready=lambda url: print(f"Serving {args.dir} at {url} "
                                      "(Ctrl-C stops)", flush=True))


def _cmd_quickstart(args):
    from keras_transformer import quickstart
    if args.task == "summarization":
        quickstart.summarization_quickstart(
            args.run or "runs/summarize", epochs=args.epochs, report=print)
    else:
        quickstart.quickstart(args.run or "runs/quickstart",
                              language=args.language, epochs=args.epochs,
                              report=print)


def _cmd_import_marian(args):
    from keras_transformer.marian.importer import import_marian
    samples = None
    if args.samples is not None:
        with open(args.samples, encoding="utf-8") as file:
            samples = [line.strip() for line in file if line.strip()]
    report = import_marian(
        args.src, args.run, samples=samples,
        check={"auto": None, "yes": True, "no": False}[args.check])
    report.pop("fields", None)  # in metrics.json; long
    print(json.dumps(report, indent=2, ensure_ascii=False))


def _cmd_bench(args):
    from keras_transformer.benchmarks.harness import main as bench_main
    bench_main(quick=args.quick, output=args.output)


COMMANDS = {"train": _cmd_train, "translate": _cmd_translate,
            "summarize": _cmd_translate,
            "evaluate": _cmd_evaluate, "export": _cmd_export,
            "quickstart": _cmd_quickstart, "bench": _cmd_bench,
            "serve-web": _cmd_serve_web,
            "import-marian": _cmd_import_marian}
# Commands that need no TensorFlow: its quiet import is skipped.
_LIGHT_COMMANDS = frozenset({"serve-web"})


def _set_backend(backend: str) -> None:
    """Sets Keras' backend; it must happen before Keras is imported."""
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != backend:
        raise ValueError(
            "`--backend` must be chosen before Keras is imported; "
            f"this process already runs Keras on "
            f"{loaded.backend.backend()}. Received: --backend {backend}")
    os.environ["KERAS_BACKEND"] = backend


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
        if getattr(args, "backend", None):
            _set_backend(args.backend)
        if args.command not in _LIGHT_COMMANDS:
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
