"""NumPy references for the training maths (float64, written from the paper).

Independent of Keras: each formula is spelled out as the paper or the cited
work states it.
"""

import numpy as np


def learning_rate(step, d_model, warmup_steps):
    """Eq. 3 of section 5.3 at the paper's 1-based `step`."""
    step = float(step)
    return d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def smoothed_targets(labels, vocabulary_size, label_smoothing):
    """Szegedy et al. (2016): q' = (1 - eps) * one_hot + eps / K."""
    one_hot = np.eye(vocabulary_size)[labels]
    return (1.0 - label_smoothing) * one_hot + (
        label_smoothing / vocabulary_size)


def token_losses(labels, logits, label_smoothing):
    """Cross-entropy H(q', p) of every position: (B, T)."""
    targets = smoothed_targets(labels, np.shape(logits)[-1], label_smoothing)
    return -(targets * log_softmax(logits)).sum(axis=-1)


def token_weights(labels, pad_id=0, sample_weight=None):
    labels = np.asarray(labels)
    weights = np.ones(labels.shape) if pad_id is None else (
        labels != pad_id).astype(np.float64)
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, np.float64)
        if sample_weight.ndim == 1:
            sample_weight = sample_weight[:, None]
        weights = weights * sample_weight
    return weights


def masked_loss(labels, logits, label_smoothing, pad_id=0,
                sample_weight=None):
    """Sum of the losses of real tokens over their (weighted) number."""
    weights = token_weights(labels, pad_id, sample_weight)
    losses = token_losses(labels, logits, label_smoothing)
    return float((losses * weights).sum() / weights.sum())


def masked_accuracy(labels, logits, pad_id=0, sample_weight=None):
    weights = token_weights(labels, pad_id, sample_weight)
    correct = (np.argmax(logits, axis=-1) == labels).astype(np.float64)
    return float((correct * weights).sum() / weights.sum())
