"""What `test_backends.py` runs on each Keras backend, in or out of process.

The backend is fixed when Keras is imported, so `test_backends.py` runs
this module as a script with `KERAS_BACKEND` set (one process per
backend), and calls `parity` in its own TensorFlow process for the
reference numbers:

    KERAS_BACKEND=jax python -m tests.backend_worker parity DIR
    KERAS_BACKEND=jax python -m tests.backend_worker copy DIR
    KERAS_BACKEND=jax python -m tests.backend_worker train_run DIR CORPUS

`parity` reads DIR/model.keras and DIR/inputs.npz and writes
DIR/<backend>.npz: the logits, greedy and beam search ids and scores (with
and without the search rules), the compiled loss and accuracy of a batch,
the losses of three `fit` steps (SGD) on a `make_dataset` pipeline, and the
logits of the fitted model, which it saves as DIR/<backend>.keras.
`copy` reads DIR/copy.keras, a model with copy attention, and DIR/inputs.npz
and writes DIR/copy_<backend>.npz: its log-probabilities, those of its
cached step at every position, and its greedy and beam search.
`train_run` trains a tiny run with `keras-transformer train` into
DIR/run and writes DIR/run_search.npz: search ids of that model, as a
`Translator` would compute them, for the export checks.
"""

import json
import os
import sys

import keras
import numpy as np

VOCAB = 16
RULES = {"min_length": 3, "no_repeat_ngram_size": 2}


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def search(model, source_ids, max_length, beam_size, **kwargs):
    """ids (B, K, L) and scores (B, K) of the cached search, as numpy."""
    from keras_transformer import decoding
    from keras_transformer.text.special_tokens import START_ID

    memory, memory_mask = model.encode(source_ids)
    cache, context = model.initial_cache(memory, memory_mask, max_length,
                                         source_ids)
    context = decoding.tile_beams(context, beam_size)

    def step_fn(ids, index, cache):
        return model.decode_step(ids, index, cache, context)

    start = keras.ops.full((source_ids.shape[0],), START_ID, "int32")
    if beam_size == 1:
        ids, scores = decoding.greedy_search(step_fn, start, cache,
                                             max_length, **kwargs)
        return _numpy(ids)[:, None], _numpy(scores)[:, None]
    ids, scores = decoding.beam_search(step_fn, start, cache, max_length,
                                       beam_size=beam_size, **kwargs)
    return _numpy(ids), _numpy(scores)


class _IdTokenizer:
    """Space-separated ids -> the ids: a tokenizer for `make_dataset`."""

    def tokenize(self, texts):
        import tensorflow as tf

        return tf.strings.to_number(tf.strings.split(texts), tf.int32)


def _fit_losses(model, pairs):
    """Losses logged by three `fit` steps on the package's pipeline.

    With the package's loss and accuracy, but plain SGD: Adam's first
    steps move every weight by about +-lr whatever the size of its
    gradient, so gradients that are float noise around 0 (and differ in
    sign between backends) would move the weights apart by ~lr; an SGD
    step keeps a rounding difference a rounding difference.
    """
    from keras_transformer.data import make_dataset
    from keras_transformer.training import (
        MaskedAccuracy,
        MaskedSparseCategoricalCrossentropy,
    )

    model.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=MaskedSparseCategoricalCrossentropy(0.1),
                  metrics=[MaskedAccuracy()])

    dataset = make_dataset(pairs, _IdTokenizer(), _IdTokenizer(),
                           batch_tokens=256, max_length=16, shuffle=False)
    losses = []

    class Log(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))

    model.fit(dataset.take(3), epochs=1, verbose=0, shuffle=False,
              callbacks=[Log()])
    return np.array(losses, np.float32)


def parity(directory):
    from keras_transformer.training import compile_transformer

    backend = keras.backend.backend()
    inputs = dict(np.load(os.path.join(directory, "inputs.npz")))
    model = keras.models.load_model(os.path.join(directory, "model.keras"))
    features = {"encoder_inputs": inputs["source"],
                "decoder_inputs": inputs["decoder"]}
    out = {"logits": _numpy(model(features))}
    for name, beam_size in (("greedy", 1), ("beam", 3)):
        for suffix, rules in (("", {}), ("_rules", RULES)):
            ids, scores = search(model, inputs["source"], 9, beam_size,
                                 **rules)
            out[f"{name}{suffix}_ids"] = ids
            out[f"{name}{suffix}_scores"] = scores
    compile_transformer(model, model.config)
    metrics = model.evaluate(features, inputs["labels"], verbose=0,
                             batch_size=len(inputs["labels"]),
                             return_dict=True)
    out["loss"] = np.float32(metrics["loss"])
    out["accuracy"] = np.float32(metrics["masked_accuracy"])
    pairs = [tuple(pair) for pair in inputs["pairs"].tolist()]
    out["fit_losses"] = _fit_losses(model, pairs)
    out["fitted_logits"] = _numpy(model(features))
    model.save(os.path.join(directory, f"{backend}.keras"))
    np.savez(os.path.join(directory, f"{backend}.npz"), **out)


def copy(directory):
    """The forward, cached steps and searches of a copy-attention model."""
    import keras_transformer.model  # noqa: F401 (registers the classes)

    backend = keras.backend.backend()
    inputs = dict(np.load(os.path.join(directory, "inputs.npz")))
    model = keras.models.load_model(os.path.join(directory, "copy.keras"))
    source, decoder = inputs["source"], inputs["decoder"]
    out = {"log_probs": _numpy(model({"encoder_inputs": source,
                                      "decoder_inputs": decoder}))}
    memory, memory_mask = model.encode(source)
    cache, context = model.initial_cache(memory, memory_mask,
                                         decoder.shape[1], source)
    steps = []
    for index in range(decoder.shape[1]):
        log_probs, cache = model.decode_step(
            keras.ops.convert_to_tensor(decoder[:, index]), index, cache,
            context)
        steps.append(_numpy(log_probs))
    out["steps"] = np.stack(steps, axis=1)
    for name, beam_size in (("greedy", 1), ("beam", 3)):
        out[f"{name}_ids"], out[f"{name}_scores"] = search(
            model, source, 9, beam_size)
    np.savez(os.path.join(directory, f"copy_{backend}.npz"), **out)


def train_run(directory, corpus):
    """`keras-transformer train` on this backend, then its search ids."""
    from keras_transformer.cli import main
    from keras_transformer.config import TransformerConfig
    from keras_transformer.contract import SearchSettings

    run = os.path.join(directory, "run")
    code = main(["train", "--data", corpus, "--run", run, "--preset",
                 "tiny", "--epochs", "1", "--steps", "3",
                 "--vocab-size", "300", "--backend", keras.backend.backend(),
                 "--batch-tokens", "2048", "--average-last", "1",
                 "--set", "d_model=32", "--set", "max_length=24",
                 "--set", "dropout_rate=0", "--set", "num_layers=1"])
    if code:
        raise SystemExit(code)
    with open(os.path.join(run, "config.json"), encoding="utf-8") as file:
        config = TransformerConfig.from_dict(json.load(file))
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    rng = np.random.default_rng(1)
    source = rng.integers(4, config.source_vocab_size, (4, 6)).astype(
        "int32")
    source[:, -1] = 3  # [END], as the tokenizer's ids end
    source[1, 3:] = 0
    source[1, 2] = 3
    settings = SearchSettings.for_config(config)
    length = min(6 + settings.extra_length, config.target_length)
    rules = {"min_length": settings.min_length,
             "no_repeat_ngram_size": settings.no_repeat_ngram_size}
    greedy, _ = search(model, source, length, 1, **rules)
    beam, _ = search(model, source, length, settings.beam_size,
                     length_penalty=settings.length_penalty, **rules)
    np.savez(os.path.join(directory, "run_search.npz"), source=source,
             greedy=greedy[:, 0], beam=beam[:, 0],
             backend=keras.backend.backend())


if __name__ == "__main__":
    if sys.argv[1] == "parity":
        parity(sys.argv[2])
    elif sys.argv[1] == "copy":
        copy(sys.argv[2])
    else:
        train_run(sys.argv[2], sys.argv[3])
