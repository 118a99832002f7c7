"""A tiny copy task and the training runs that tests start as subprocesses.

Importable (the task and config are shared with in-process tests), and
runnable: `python tests/training_script.py MODE ...` with MODE one of

    train RUN_DIR EPOCHS STEPS LOG    train(); appends to LOG one JSON line
                                      per epoch begun (with the optimizer
                                      step) and one per batch run
    mirrored OUT_JSON                 MirroredStrategy on 2 logical CPUs
    multi_worker RUN_DIR OUT_JSON     one worker of a MultiWorkerMirrored
                                      run; the cluster comes from TF_CONFIG

A process that configures devices must do so before TensorFlow starts,
hence the subprocesses.
"""

import json
import os
import sys
import time

import numpy as np

VOCAB = 16  # 0 pad, 1 unk, 2 start, 3 end, 4..15 symbols


def copy_task_arrays(num_examples=256, max_length=6, seed=0):
    """Returns (encoder_inputs, decoder_inputs, labels) of a copy task.

    The target is the source followed by [END]; the decoder input is the
    target shifted right behind [START]; padding is 0.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_length + 1, size=num_examples)
    source = rng.integers(4, VOCAB, size=(num_examples, max_length))
    source = np.where(np.arange(max_length) < lengths[:, None], source, 0)
    labels = np.concatenate(
        [source, np.zeros((num_examples, 1), source.dtype)], axis=1)
    labels[np.arange(num_examples), lengths] = 3
    decoder = np.concatenate(
        [np.full((num_examples, 1), 2), labels[:, :-1]], axis=1)
    decoder = np.where(decoder == 3, 0, decoder)
    return (source.astype("int32"), decoder.astype("int32"),
            labels.astype("int32"))


def copy_task_dataset(batch_size=32, repeat=True, **kwargs):
    import tensorflow as tf

    source, decoder, labels = copy_task_arrays(**kwargs)
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"encoder_inputs": source, "decoder_inputs": decoder}, labels))
    dataset = dataset.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    dataset = dataset.with_options(options)
    return dataset.repeat() if repeat else dataset


def tiny_config(**overrides):
    from keras_transformer.config import TransformerConfig

    values = dict(source_vocab_size=VOCAB, target_vocab_size=VOCAB,
                  num_layers=1, d_model=32, num_heads=2, d_ff=64,
                  dropout_rate=0.0, warmup_steps=100, max_length=16)
    values.update(overrides)
    return TransformerConfig.from_preset("tiny", **values)


def _log_callback(log_path, sleep_s):
    import keras

    class Log(keras.callbacks.Callback):
        def _write(self, record):
            with open(log_path, "a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")

        def on_epoch_begin(self, epoch, logs=None):
            iterations = int(self.model.optimizer.iterations.numpy())
            self._write({"pid": os.getpid(), "epoch": epoch,
                         "iterations": iterations})

        def on_train_batch_end(self, batch, logs=None):
            self._write({"pid": os.getpid(), "batch": batch})
            time.sleep(sleep_s)  # leaves the test time to kill mid-epoch

    return Log()


def run_train(run_dir, epochs, steps, log_path):
    import keras

    from keras_transformer.training import train

    keras.utils.set_random_seed(0)
    train(tiny_config(), copy_task_dataset(), None, run_dir,
          epochs=int(epochs), steps_per_epoch=int(steps), backup_every=3,
          callbacks=[_log_callback(log_path, 0.05)])


def _all_weights(model):
    return [np.asarray(w).tolist() for w in model.get_weights()]


def run_mirrored(out_path):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from keras_transformer.training import get_strategy, train

    keras.utils.set_random_seed(0)
    strategy = get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    run_dir = os.path.join(os.path.dirname(out_path), "run")
    model, history = train(
        tiny_config(), copy_task_dataset(batch_size=16), None, run_dir,
        epochs=4, steps_per_epoch=8, average_last=None, strategy=strategy)
    # One batch whose two halves (one per replica) hold 12 and 2 tokens.
    source, decoder, labels = copy_task_arrays(num_examples=4, seed=1)
    labels[2:, 1:] = 0
    decoder[2:, 2:] = 0
    inputs = {"encoder_inputs": source, "decoder_inputs": decoder}
    loss, accuracy = model.evaluate(inputs, labels, batch_size=4, verbose=0)
    logits = model.predict(inputs, batch_size=4, verbose=0)
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump({"replicas": strategy.num_replicas_in_sync,
                   "history": history, "loss": loss, "accuracy": accuracy,
                   "logits": logits.tolist(), "labels": labels.tolist()},
                  file)


def run_multi_worker(run_dir, out_path):
    import keras

    from keras_transformer.training import get_strategy, is_chief, train

    strategy = get_strategy("multi_worker")
    keras.utils.set_random_seed(0)
    model, history = train(
        tiny_config(), copy_task_dataset(batch_size=16), None, run_dir,
        epochs=2, steps_per_epoch=4, average_last=2, strategy=strategy)
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump({"replicas": strategy.num_replicas_in_sync,
                   "chief": is_chief(strategy), "history": history,
                   "weights": _all_weights(model)}, file)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    mode, *arguments = sys.argv[1:]
    {"train": run_train, "mirrored": run_mirrored,
     "multi_worker": run_multi_worker}[mode](*arguments)
