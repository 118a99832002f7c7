"""`import_marian`: a Hugging Face Marian folder as a run directory.

The run directory is an ordinary one (`run_directory.RunDirectory`):
config.json, tokenizer.json with the two rewritten SentencePiece models,
model.keras, samples.txt and metrics.json (under "import": what was read,
from where, how each config field was handled, the model's size, and the
self-check). So `translate`, `evaluate` and `export` take it unchanged,
and `train --init-from` fine-tunes it.

Nothing is downloaded: `src` must be a local folder (a hub name is an error
saying how to download it first).
"""

import json
import logging
import os
import time

import numpy as np

from keras_transformer import contract as files
from keras_transformer.marian.config import marian_spec
from keras_transformer.marian.vocabulary import (
    marian_order,
    package_vocabulary,
)
from keras_transformer.marian.weights import (
    assign_weights,
    checkpoint_file,
    read_checkpoint,
)
from keras_transformer.run_directory import RunDirectory
from keras_transformer.text.special_tokens import END_ID, START_ID

logger = logging.getLogger("keras_transformer")

# Sentences the self-check and the export checks (samples.txt) read: any
# source language tokenizes them, and they cover several scripts.
SAMPLE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please restart the server before you install the update.",
    "I bought 3 apples and 12 oranges for 4.50 euros.",
    "Where is the nearest train station?",
    "This file could not be opened because it is in use.",
    "Café, naïve, Größe: accents and umlauts.",
    "我喜欢猫",
    "مرحبا بالعالم",
    "Thanks! 🎉",
    "Save your changes before closing the window.",
)

# Largest teacher-forced logit difference the self-check accepts (float32,
# summed over a few hundred products per output: rounding only).
CHECK_TOLERANCE = 1e-3


def _read_json(path):
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _check_source(src) -> str:
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(
            f"`src` must be a folder path. Received: src={src!r}")
    src = os.fspath(src)
    if os.path.isdir(src):
        return src
    if not os.path.exists(src) and src.count("/") == 1 and (
            not src.startswith((".", "/"))):
        raise FileNotFoundError(
            f"`src` must be a local folder; nothing is downloaded. To "
            f"import the Hugging Face model {src!r}, download it first on "
            f"a machine with internet: `hf download {src} --local-dir "
            f"DIR` (or huggingface-cli), then give DIR. Received: "
            f"src={src!r}")
    raise FileNotFoundError(
        f"`src` is not a folder. Received: src={src!r}")


def _require(src, name):
    path = os.path.join(src, name)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"`src` is not a Marian folder: {name} is missing. "
            f"Received: src={src!r}")
    return path


def read_folder(src) -> dict:
    """Reads and checks a Marian folder (no TensorFlow).

    Returns:
        dict with spec (`MarianSpec`), vocab (token -> Marian id), order,
        vocabulary (package order), source_spm and target_spm (bytes),
        checkpoint (the weights file's path).
    """
    src = _check_source(src)
    # Hugging Face names the model's config as the package does.
    values = _read_json(_require(src, files.CONFIG))
    generation_path = os.path.join(src, "generation_config.json")
    generation = (_read_json(generation_path)
                  if os.path.exists(generation_path) else None)
    spec = marian_spec(values, generation)
    tokenizer_config = {}
    if os.path.exists(os.path.join(src, "tokenizer_config.json")):
        tokenizer_config = _read_json(os.path.join(src,
                                                   "tokenizer_config.json"))
    if tokenizer_config.get("separate_vocabs") or os.path.exists(
            os.path.join(src, "target_vocab.json")):
        raise ValueError(
            "This Marian folder cannot be imported: `separate_vocabs` "
            "(a target_vocab.json): the package imports one shared "
            f"vocabulary. Received: src={src!r}")
    vocab = _read_json(_require(src, "vocab.json"))
    if len(vocab) != spec.vocab_size:
        raise ValueError(
            f"vocab.json holds {len(vocab)} tokens, config.json's "
            f"`vocab_size` is {spec.vocab_size}. Received: src={src!r}")
    unk_token = tokenizer_config.get("unk_token", "<unk>")
    if isinstance(unk_token, dict):  # an AddedToken's serialized form
        unk_token = unk_token.get("content", "<unk>")
    order = marian_order(vocab, spec.pad_id, spec.eos_id, unk_token)
    codes = sorted(token for token in vocab
                   if token.startswith(">>") and token.endswith("<<"))
    if codes:
        logger.warning(
            "This Marian model has %d target-language codes (%s ...): "
            "the package's tokenizers do not read a leading `>>xx<<` as "
            "one token as MarianTokenizer does; sources with a code are "
            "tokenized differently.", len(codes), ", ".join(codes[:3]))
    spms = {}
    for side in ("source", "target"):
        with open(_require(src, f"{side}.spm"), "rb") as file:
            spms[side] = file.read()
    return {"src": src, "spec": spec, "vocab": vocab, "order": order,
            "vocabulary": package_vocabulary(vocab, order),
            "source_spm": spms["source"], "target_spm": spms["target"],
            "checkpoint": checkpoint_file(src), "language_codes": codes}


def import_marian(src, run_dir, *, check: bool | None = None,
                  samples: list[str] | None = None) -> dict:
    """Imports a Hugging Face Marian / OPUS-MT folder into `run_dir`.

    Args:
        src: a local folder as Hugging Face writes it: config.json
            (and generation_config.json), model.safetensors (or
            pytorch_model.bin, read with PyTorch), source.spm, target.spm,
            vocab.json.
        run_dir: the run directory to write; it must not hold a model.
        check: compare the imported model with the source weights run by
            `transformers` on `samples` (teacher-forced logits and token
            ids). None (the default) checks when `transformers` and
            `torch` are installed and says in the report when they are
            not; True requires them.
        samples: sentences for the check and samples.txt (which the
            export checks read); defaults to `SAMPLE_SENTENCES`.

    Returns:
        The "import" report also written to metrics.json.

    Raises:
        FileNotFoundError: `src` is not a local Marian folder.
        ValueError: a config field the package cannot represent (named),
            a checkpoint that does not match the config, or a failed check.
    """
    start = time.perf_counter()
    folder = read_folder(src)
    run = RunDirectory(run_dir)
    if run.exists(files.MODEL):
        raise FileExistsError(
            f"`run_dir` already holds a model ({files.MODEL}). Received: "
            f"run_dir={run.root!r}")
    samples = list(SAMPLE_SENTENCES if samples is None else samples)
    if not samples or not all(isinstance(s, str) and s.strip()
                              for s in samples):
        raise ValueError(
            "`samples` must be non-empty sentences. Received: "
            f"samples={samples!r:.80}")
    if check is None:
        check = _has_transformers()
        unchecked = None if check else (
            "not checked: transformers and torch are not installed "
            "(pip install 'keras-seq2seq-transformer[marian]')")
    else:
        unchecked = None if check else "not checked: check=False"

    from keras_transformer.marian.tokenizers import rewrite_sentencepiece
    from keras_transformer.model import build_transformer
    from keras_transformer.text.sentencepiece_tokenizer import (
        SentencePieceTokenizer,
    )

    spec = folder["spec"]
    tokenizers = {
        side: SentencePieceTokenizer(rewrite_sentencepiece(
            folder[f"{side}_spm"], folder["vocabulary"]))
        for side in ("source", "target")}
    tensors = read_checkpoint(folder["checkpoint"])
    read_seconds = time.perf_counter() - start
    model = build_transformer(spec.config)
    ids = np.ones((1, 2), np.int32)
    model({"encoder_inputs": ids, "decoder_inputs": ids})
    weights = assign_weights(model, tensors, folder["order"])
    del tensors

    os.makedirs(run.root, exist_ok=True)
    for side, name in (("source", files.SOURCE_MODEL),
                       ("target", files.TARGET_MODEL)):
        tokenizers[side].save(run.path(name))
    run.write_json(files.TOKENIZER, {
        "source_model": files.SOURCE_MODEL,
        "target_model": files.TARGET_MODEL, "joint": True,
        "source": tokenizers["source"].config,
        "target": tokenizers["target"].config,
        "imported_from": "marian"})
    run.write_json(files.CONFIG, spec.config.to_dict())
    run.write_samples(samples)
    run.save_model(model)
    report = {
        "src": os.path.abspath(folder["src"]),
        "checkpoint": os.path.basename(folder["checkpoint"]),
        "marian_vocab_size": spec.vocab_size,
        "vocab_size": spec.config.target_vocab_size,
        "parameters": int(model.count_params()),
        "model_bytes": os.path.getsize(run.path(files.MODEL)),
        "checkpoint_bytes": os.path.getsize(folder["checkpoint"]),
        "tensors": weights["tensors"],
        "position_table_difference": weights["position_table_difference"],
        "fields": spec.report,
        "language_codes": len(folder["language_codes"]),
        "seconds": None,
    }
    if check:
        report["check"] = check_against_transformers(
            folder["src"], model, tokenizers["source"], folder["order"],
            samples)
    else:
        report["check"] = unchecked
    report["seconds"] = round(time.perf_counter() - start, 2)
    report["read_seconds"] = round(read_seconds, 2)
    run.update_metrics({"import": report})
    return report


def _has_transformers() -> bool:
    import importlib.util
    return all(importlib.util.find_spec(name) is not None
               for name in ("transformers", "torch"))


def check_against_transformers(src, model, source_tokenizer, order,
                               samples, tolerance: float = CHECK_TOLERANCE
                               ) -> dict:
    """Runs the source folder with `transformers` and compares.

    Checks that our source ids equal `MarianTokenizer`'s (mapped through
    `order`), and that the imported model's teacher-forced logits equal
    `MarianMTModel`'s (columns permuted by `order`) within `tolerance`,
    with the decoder reading the source ids as targets (any ids of the
    shared vocabulary will do).

    Returns:
        dict: sentences, ids_identical, max_logit_difference, tolerance.

    Raises:
        ValueError: ids differ, or logits differ by more than `tolerance`.
    """
    try:
        import torch
        from transformers import MarianMTModel, MarianTokenizer
    except ImportError as error:
        raise ModuleNotFoundError(
            "`check=True` needs transformers and torch: pip install "
            "'keras-seq2seq-transformer[marian]'") from error
    order = np.asarray(order)
    package_of = np.empty(len(order) - 1, np.int64)
    for package_id in range(len(order) - 1, -1, -1):  # pad -> 0, not 2
        package_of[order[package_id]] = package_id
    hf_tokenizer = MarianTokenizer.from_pretrained(src)
    hf_model = MarianMTModel.from_pretrained(src, dtype=torch.float32)
    hf_model.eval()
    ours = source_tokenizer.tokenize(samples)
    worst, identical = 0.0, 0
    for index, sentence in enumerate(samples):
        theirs = hf_tokenizer(sentence)["input_ids"]
        mine = [int(i) for i in ours[index].numpy()] + [END_ID]
        if package_of[theirs].tolist() == mine:
            identical += 1
        else:
            raise ValueError(
                f"The imported source tokenizer gives {mine} for sample "
                f"{index} ({sentence!r}), MarianTokenizer "
                f"{package_of[theirs].tolist()} (in package ids).")
        source = torch.tensor([theirs])
        decoder = torch.tensor([[order[2]] + theirs[:-1]])
        with torch.no_grad():
            logits = hf_model(input_ids=source,
                              decoder_input_ids=decoder).logits[0].numpy()
        expected = logits[:, order]
        got = model({"encoder_inputs": np.asarray([mine], np.int32),
                     "decoder_inputs": np.asarray(
                         [[START_ID] + mine[:-1]], np.int32)})
        got = np.asarray(got)[0]
        worst = max(worst, float(np.max(np.abs(got - expected))))
    if worst > tolerance:
        raise ValueError(
            f"The imported model's logits differ from transformers' by "
            f"{worst:.3g}, more than tolerance={tolerance}.")
    return {"sentences": len(samples), "ids_identical": identical,
            "max_logit_difference": worst, "tolerance": tolerance}
