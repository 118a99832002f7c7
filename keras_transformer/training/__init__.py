"""Training: the paper's schedule, loss, checkpoint averaging and `train()`.

Public API:
    TransformerSchedule(d_model, warmup_steps=4000)   eq. 3, section 5.3
    LinearDecaySchedule(peak, warmup_steps, total_steps)
    make_schedule(config, total_steps=None)
    make_optimizer(config, total_steps=None) -> keras.optimizers.Adam
    MaskedSparseCategoricalCrossentropy(label_smoothing=0.1, pad_id=0)
    MaskedAccuracy(pad_id=0)
    label_smoothed_crossentropy(y_true, logits, label_smoothing) -> (B, T)
    checkpoint_paths(directory), average_checkpoints(model, paths),
    average_last_checkpoints(model, directory, num_checkpoints=5)
    compile_transformer(model, config, total_steps=None),
    train(model_or_config, train_ds, valid_ds, run_dir, *, epochs, ...)
    get_strategy(name), is_chief(strategy), worker_run_dir(run_dir, strategy)
"""

from keras_transformer.training.averaging import (
    average_checkpoints,
    average_last_checkpoints,
    checkpoint_paths,
)
from keras_transformer.training.distribute import (
    get_strategy,
    is_chief,
    worker_run_dir,
)
from keras_transformer.training.losses import (
    MaskedAccuracy,
    MaskedSparseCategoricalCrossentropy,
    label_smoothed_crossentropy,
)
from keras_transformer.training.schedule import (
    LinearDecaySchedule,
    TransformerSchedule,
    make_optimizer,
    make_schedule,
)
from keras_transformer.training.trainer import (
    compile_transformer,
    train,
)

__all__ = [
    "LinearDecaySchedule",
    "make_schedule",
    "MaskedAccuracy",
    "MaskedSparseCategoricalCrossentropy",
    "TransformerSchedule",
    "average_checkpoints",
    "average_last_checkpoints",
    "checkpoint_paths",
    "compile_transformer",
    "get_strategy",
    "is_chief",
    "label_smoothed_crossentropy",
    "make_optimizer",
    "train",
    "worker_run_dir",
]
