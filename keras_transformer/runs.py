"""Run directories: train one from a corpus, load it back, evaluate it.

A run directory (ARCHITECTURE.md) holds everything needed to use a model again;
`keras_transformer.run_directory` owns its files. The CLI's `train`,
`translate` and `evaluate` commands are `train_run`, `load_translator` and
`evaluate_run`.
"""

import dataclasses
import logging
import os
import shutil
import time

import keras

from keras_transformer import run_directory as files
from keras_transformer.checks import PRECISION_CHOICES, check_choice
from keras_transformer.config import TransformerConfig
from keras_transformer.contract import SearchSettings
from keras_transformer.data import encode_pairs, load_corpus, make_dataset
from keras_transformer.evaluation import (
    evaluate_summaries,
    evaluate_translations,
)
from keras_transformer.run_directory import RunDirectory
from keras_transformer.text.sentencepiece_model import learn_tokenizer_models
from keras_transformer.text.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
)
from keras_transformer.training import train
from keras_transformer.training.precision import (
    float32_model,
    resolve_precision,
)
from keras_transformer.translator import Translator

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train_run` did: the run, its config, data statistics and the
    precision it trained in."""

    run_dir: str
    config: TransformerConfig
    history: dict
    data: dict
    precision: str = "float32"


def _tokenizers(run, corpus, vocab_size, joint_vocabulary, model_type,
                max_sentences):
    """Learns the SentencePiece models once; a resumed run reads them back.
    """
    if run.exists(files.TOKENIZER):
        return load_tokenizers(run)
    start = time.perf_counter()
    source, target = learn_tokenizer_models(
        corpus.sources, corpus.targets, vocab_size=vocab_size,
        model_type=model_type, joint=joint_vocabulary,
        max_sentences=max_sentences)
    seconds = time.perf_counter() - start
    os.makedirs(run.root, exist_ok=True)
    tokenizers = SentencePieceTokenizer(source), SentencePieceTokenizer(target)
    tokenizers[0].save(run.path(files.SOURCE_MODEL))
    tokenizers[1].save(run.path(files.TARGET_MODEL))
    run.write_json(files.TOKENIZER, {
        "source_model": files.SOURCE_MODEL,
        "target_model": files.TARGET_MODEL, "joint": joint_vocabulary,
        "source": tokenizers[0].config, "target": tokenizers[1].config,
        "learning_seconds": round(seconds, 2)})
    return tokenizers


def load_tokenizers(run_dir: "str | RunDirectory"):
    """Returns the (source, target) tokenizers saved in `run_dir`."""
    run = RunDirectory(run_dir)
    info = run.read_json(files.TOKENIZER)
    return (SentencePieceTokenizer.from_file(
                run.require(info["source_model"])),
            SentencePieceTokenizer.from_file(
                run.require(info["target_model"])))


def make_config(preset: str, source_tokenizer, target_tokenizer,
                joint_vocabulary: bool, **overrides) -> TransformerConfig:
    """The preset with the vocabulary sizes of the tokenizers."""
    base = _check_overrides(preset, overrides)
    share = joint_vocabulary and base.share_embeddings
    # Copying needs the joint vocabulary: a preset's copy attention is off
    # with separate vocabularies; asking for it then is an error (config).
    overrides.setdefault("copy_attention", base.copy_attention and share)
    return dataclasses.replace(
        base, source_vocab_size=source_tokenizer.vocab_size,
        target_vocab_size=target_tokenizer.vocab_size,
        share_embeddings=share, **overrides)


def _check_overrides(preset, overrides) -> TransformerConfig:
    """The preset; unknown override fields are a ValueError naming them."""
    base = TransformerConfig.from_preset(preset)
    known = set(base.to_dict()) - {"source_vocab_size", "target_vocab_size",
                                   "share_embeddings"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"Unknown config fields {unknown} to override; known fields: "
            f"{sorted(known)}. Received: {overrides}")
    return base


# The config fields a fine-tuning run (`train_run(init_from=...)`) may
# change: how it trains, not what the model is.
FINE_TUNING_FIELDS = ("dropout_rate", "attention_dropout_rate",
                      "label_smoothing", "warmup_steps", "schedule",
                      "learning_rate", "max_source_length",
                      "max_target_length")


def _fine_tuning_source(init_from, preset, overrides) -> RunDirectory:
    """The run to fine-tune, checked before any slow work."""
    init = RunDirectory(init_from)
    init.require(files.MODEL, "a run directory with a model to fine-tune "
                              "(`init_from`)")
    init.require(files.TOKENIZER, "a run directory with tokenizers "
                                  "(`init_from`)")
    if preset is not None:
        raise ValueError(
            "`preset` and `init_from` exclude each other: a fine-tuned "
            "model keeps the architecture of the run it starts from. "
            f"Received: preset={preset!r}, init_from={init_from!r}")
    fixed = sorted(set(overrides) - set(FINE_TUNING_FIELDS))
    if fixed:
        raise ValueError(
            f"With `init_from`, only the training fields "
            f"{list(FINE_TUNING_FIELDS)} may be overridden; {fixed} are "
            f"the model's. Received: {overrides}")
    dataclasses.replace(init.read_config(), **overrides)  # validated
    return init


def _copy_tokenizers(init: RunDirectory, run: RunDirectory) -> None:
    """The starting run's tokenizer files, once (a resumed run has them).
    """
    if run.exists(files.TOKENIZER):
        return
    os.makedirs(run.root, exist_ok=True)
    info = init.read_json(files.TOKENIZER)
    for key in ("source_model", "target_model"):
        shutil.copyfile(init.require(info[key]), run.path(info[key]))
    run.write_json(files.TOKENIZER, dict(info, init_from=os.path.abspath(
        init.root)))


def default_preset(task: str | None) -> str:
    """The preset a task trains with unless one is named."""
    return "summarization" if task == "summarization" else "small"


def train_run(data: str, run_dir: str, *, preset: str | None = None,
              valid_data: str | None = None, epochs: int = 10,
              steps_per_epoch: int | None = None, batch_tokens: int = 4096,
              vocab_size: int = 8000, joint_vocabulary: bool = True,
              subword_model: str = "unigram",
              vocab_sample: int = 1_000_000,
              length_policy: str | None = None,
              average_last: int | None = 5, strategy=None, seed: int = 0,
              verbose: int | str = "auto",
              source_field: str | None = None,
              target_field: str | None = None,
              precision: str = "auto",
              time_budget: float | None = None,
              init_from: str | None = None,
              **config_overrides) -> TrainResult:
    """Trains a translator from a corpus specification into `run_dir`.

    Args:
        data: corpus specification of `data.load_corpus` ("bundled",
            "bundled:fr", "tfds:NAME", a TSV path, "SRC,TGT" paths).
        run_dir: the run directory; the same call again resumes it.
        preset: "tiny", "small", "summarization", "base" or "big";
            defaults to "small", or "summarization" when the override
            `task="summarization"` is given. The task (a config field,
            "translation" or "summarization") comes from the preset unless
            overridden.
        valid_data: validation corpus; defaults to the "validation" split
            of bundled/TFDS data and to none for files.
        epochs, steps_per_epoch, average_last, strategy: as in
            `training.train`.
        batch_tokens: token budget per batch (the paper: ~25,000).
        vocab_size: the largest SentencePiece vocabulary to learn (joint,
            or per side), byte pieces and reserved ids included.
        joint_vocabulary: one vocabulary for both sides (the paper's
            shared source-target vocabulary; the default); the preset's
            `share_embeddings` then applies.
        subword_model: "unigram" (default) or "bpe", SentencePiece's
            model type.
        vocab_sample: the vocabulary is learned from at most this many
            sentences (a seeded random sample of a larger corpus; in all
            when joint, else per side). Defaults to 1,000,000.
        length_policy: "drop" or "truncate" pairs over the config's source
            or target length; defaults to "drop" for translation and to
            "truncate" for summarization (long documents keep their
            beginning; the counts are in metrics.json under "data").
        seed: shuffling seed.
        verbose: Keras progress-bar mode.
        source_field, target_field: the JSON fields of a .jsonl corpus
            (or the features of a TFDS dataset).
        precision: "auto" (the default: mixed_bfloat16 where bfloat16 is
            native here, else float32; `TrainResult.precision` and the run
            record the choice), or "float32", "mixed_bfloat16" or
            "mixed_float16": the Keras dtype policy to train in (see
            `training.train`). Recorded in checkpoints/state.json and
            history.json; a resumed run must give the same one.
            model.keras is float32 whatever it is.
        time_budget: float or None, seconds after which training stops
            (see `training.train`); with `schedule="linear"` the decay is
            planned over the steps the budget allows.
        init_from: str or None, a run directory to fine-tune (e.g. one
            `import-marian` wrote): its tokenizers and config are this
            run's, and training starts from its model.keras. Then `preset`
            must be None, the vocabulary arguments are unused, and only
            the training fields of the config (`FINE_TUNING_FIELDS`) may
            be overridden. None (the default) trains from scratch.
        **config_overrides: TransformerConfig fields to override.

    Returns:
        A `TrainResult`.
    """
    init = None
    if init_from is not None:
        init = _fine_tuning_source(init_from, preset, config_overrides)
    elif preset is None:
        preset = default_preset(config_overrides.get("task"))
    if init is None:
        _check_overrides(preset, config_overrides)  # before any slow work
    check_choice("precision", precision, PRECISION_CHOICES)
    run = RunDirectory(run_dir)
    precision = resolve_precision(precision, run)
    run.check_precision(precision)
    fields = {"source_field": source_field, "target_field": target_field}
    corpus = load_corpus(data, split="train", **fields)
    if valid_data is None and (data.startswith("bundled")
                               or data.startswith("tfds:")):
        valid_data = data
    valid = (load_corpus(valid_data, split="validation", **fields)
             if valid_data else None)
    if init is not None:
        _copy_tokenizers(init, run)
        source_tokenizer, target_tokenizer = load_tokenizers(run)
        config = dataclasses.replace(init.read_config(), **config_overrides)
    else:
        source_tokenizer, target_tokenizer = _tokenizers(
            run, corpus, vocab_size, joint_vocabulary, subword_model,
            vocab_sample)
        config = make_config(preset, source_tokenizer, target_tokenizer,
                             joint_vocabulary, **config_overrides)
    run.check_config(config)  # before any slow work; `train` claims it
    if length_policy is None:
        length_policy = ("truncate" if config.task == "summarization"
                         else "drop")
    lengths = {"max_length": max(config.source_length, config.target_length),
               "max_source_length": config.source_length,
               "max_target_length": config.target_length,
               "length_policy": length_policy}
    encoded = encode_pairs(corpus, source_tokenizer, target_tokenizer,
                           **lengths)
    train_ds = make_dataset(encoded, batch_tokens=batch_tokens, seed=seed,
                            repeat=steps_per_epoch is not None)
    valid_ds, valid_encoded = None, None
    if valid is not None:
        valid_encoded = encode_pairs(valid, source_tokenizer,
                                     target_tokenizer, **lengths)
        valid_ds = make_dataset(valid_encoded, batch_tokens=batch_tokens,
                                shuffle=False)
    data_report = {
        "corpus": corpus.name or data, "task": config.task,
        "read": corpus.stats.summary(),
        "length": encoded.stats.summary(),
        "truncated_sources": encoded.stats.truncated_source,
        "truncated_targets": encoded.stats.truncated_target,
        "source_vocab_size": source_tokenizer.vocab_size,
        "target_vocab_size": target_tokenizer.vocab_size}
    if valid_encoded is not None:
        data_report["validation"] = valid_encoded.stats.summary()
    if init is not None:
        data_report["init_from"] = os.path.abspath(init.root)
    run.update_metrics({"data": data_report})
    run.write_samples((valid or corpus).sources)
    logger.info("data: %s", data_report)

    _, history = train(config, train_ds, valid_ds, run, epochs=epochs,
                       steps_per_epoch=steps_per_epoch,
                       average_last=average_last, strategy=strategy,
                       verbose=verbose, precision=precision,
                       time_budget=time_budget,
                       initial_weights=(init.path(files.MODEL)
                                        if init is not None else None))
    return TrainResult(run_dir, config, history, data_report, precision)


def search_settings(run_dir: str, **overrides) -> SearchSettings:
    """The search settings of a run's task, `overrides` replacing fields.

    Reads only config.json (no TensorFlow): `SearchSettings.for_config`.
    """
    return SearchSettings.for_config(RunDirectory(run_dir).read_config(),
                                     **overrides)


def load_translator(run_dir: str,
                    settings: SearchSettings | None = None,
                    jit_compile: bool = False) -> Translator:
    """The Translator of a trained run directory (see `Translator`).

    Args:
        run_dir: a trained run directory.
        settings: `SearchSettings`; defaults to those of the run's task
            (`SearchSettings.for_config`: the paper's for translation).
        jit_compile: bool, see `Translator`.
    """
    run = RunDirectory(run_dir)
    path = run.require(files.MODEL, "a trained run directory (did "
                                    "training finish?)")
    source, target = load_tokenizers(run)
    # float32 whatever the training precision (train() saves it so; a
    # model.keras saved under a mixed policy elsewhere is copied).
    model = float32_model(keras.models.load_model(path, safe_mode=True))
    return Translator(model, source, target, settings=settings,
                      jit_compile=jit_compile)


def evaluate_run(run_dir: str, data: str, *, split: str = "test",
                 beam_size: int | None = None, batch_size: int = 64,
                 translator: Translator | None = None,
                 jit_compile: bool = False,
                 settings: SearchSettings | None = None,
                 source_field: str | None = None,
                 target_field: str | None = None) -> dict:
    """Runs a trained model over a held-out corpus and scores it.

    Translation runs get BLEU, chrF and exact match
    (`evaluate_translations`); summarization runs ROUGE-1/2/L and length
    statistics (`evaluate_summaries`). The result is also stored under
    "evaluation" in `metrics.json`. `beam_size=1` is greedy search.
    """
    translator = translator or load_translator(
        run_dir, settings=settings, jit_compile=jit_compile)
    corpus = load_corpus(data, split=split, source_field=source_field,
                         target_field=target_field)
    hypotheses = translate_all(translator, corpus.sources, beam_size,
                               batch_size)
    task = translator.model.config.task
    if task == "summarization":
        metrics = evaluate_summaries(hypotheses, corpus.targets)
    else:
        metrics = evaluate_translations(hypotheses, corpus.targets)
    metrics.update({"data": data, "split": split, "sentences": len(corpus),
                    "task": task,
                    "beam_size": beam_size or translator.beam_size,
                    "search": translator.settings.to_dict()})
    RunDirectory(run_dir).update_metrics({"evaluation": metrics})
    metrics["examples"] = list(zip(corpus.sources[:5], hypotheses[:5],
                                   corpus.targets[:5]))
    return metrics


def translate_all(translator, texts, beam_size=None, batch_size=64,
                  progress=None) -> list[str]:
    """Translates texts in batches (sorted by length to pad less)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        pairs = translator([texts[i] for i in rows], beam_size=beam_size)
        for row, (translation, _) in zip(rows, pairs):
            results[row] = translation
        if progress is not None:
            progress(len(rows))
    return results
