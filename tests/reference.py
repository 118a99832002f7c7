"""NumPy references for the maths of the paper, independent of Keras."""

import numpy as np


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (B, T, H, K), k/v (B, S, H, K), mask bool (B, T, S) -> (B, T, H, K)."""
    scores = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask[:, None], scores, -np.inf)
    weights = softmax(scores)
    return np.einsum("bhts,bshk->bthk", weights, v), weights


def multi_head_attention(query, value, weights, mask=None):
    """weights: dict of numpy arrays named as the Keras variables."""
    q = np.einsum("btd,dhk->bthk", query, weights["query"]) + weights["qb"]
    k = np.einsum("bsd,dhk->bshk", value, weights["key"]) + weights["kb"]
    v = np.einsum("bsd,dhk->bshk", value, weights["value"]) + weights["vb"]
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    return np.einsum("bthk,hkd->btd", out, weights["out"]) + weights["ob"]


def positional_encoding(length, d_model):
    """PE(pos, 2i) = sin(pos/10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    pe = np.zeros((length, d_model))
    for pos in range(length):
        for i in range(0, d_model, 2):
            angle = pos / 10000 ** (i / d_model)
            pe[pos, i] = np.sin(angle)
            pe[pos, i + 1] = np.cos(angle)
    return pe


def layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * gamma + beta


def feed_forward(x, w1, b1, w2, b2):
    return np.maximum(0.0, x @ w1 + b1) @ w2 + b2


def pointer_generator(logits, hidden, embedded, attention, source_ids,
                      kernel, bias, min_probability):
    """See et al. (2017), eqs. 8-9: log P (B, T, V), source ids one by one.

    logits (B, T, V), hidden/embedded (B, T, D), attention (B, H, T, S),
    source_ids (B, S), gate kernel (2D, 1) and bias (1,).
    """
    gate = np.concatenate([hidden, embedded], -1) @ kernel + bias
    p_gen = 1.0 / (1.0 + np.exp(-gate))  # (B, T, 1)
    weights = attention.mean(axis=1)  # (B, T, S)
    copy = np.zeros(logits.shape)
    for b in range(source_ids.shape[0]):
        for i in range(source_ids.shape[1]):
            copy[b, :, source_ids[b, i]] += weights[b, :, i]
    probabilities = p_gen * softmax(logits) + (1.0 - p_gen) * copy
    return np.log(np.maximum(probabilities, min_probability))
