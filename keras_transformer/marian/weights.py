"""Reading a Marian checkpoint and writing it into a `Transformer`.

Formats:

- `model.safetensors` (what Hugging Face writes today, and what OPUS-MT
  folders carry): read with the `safetensors` package into NumPy, no deep
  learning framework needed.
- `pytorch_model.bin` (older folders): a pickled PyTorch state dict; only
  PyTorch can read it safely (`torch.load(weights_only=True)`), so it
  needs `torch`, and the error says so when it is missing.
- `tf_model.h5` is not read: its layout is that of Hugging Face's removed
  TensorFlow classes, and every OPUS-MT folder that has one has one of
  the two above too.

`assign_weights` copies the tensors with the rows of every vocabulary
matrix permuted into the package's id order (`marian.vocabulary`): the
embedding, the tied output projection and `final_logits_bias`.
"""

import os

import numpy as np

SAFETENSORS = "model.safetensors"
PYTORCH = "pytorch_model.bin"
TENSORFLOW = "tf_model.h5"

_PREFIX = "model."


def checkpoint_file(folder: str) -> str:
    """The weights file of a Marian folder (safetensors first)."""
    for name in (SAFETENSORS, PYTORCH):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    if os.path.exists(os.path.join(folder, TENSORFLOW)):
        raise ValueError(
            f"`src` holds only {TENSORFLOW}, which is not read: convert it "
            f"to {SAFETENSORS} with transformers (`MarianMTModel."
            "from_pretrained(src, from_tf=True).save_pretrained(dst)` in "
            f"a transformers 4 install). Received: src={folder!r}")
    raise FileNotFoundError(
        f"`src` has no weights: neither {SAFETENSORS} nor {PYTORCH}. "
        f"Received: src={folder!r}")


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Tensor name -> float32 NumPy array, without the "model." prefix."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        try:
            tensors = load_file(path)
        except (TypeError, ValueError):
            # NumPy has no bfloat16: read those through ml_dtypes' view.
            tensors = _load_bfloat16(path)
    else:
        try:
            import torch
        except ImportError as error:
            raise ModuleNotFoundError(
                f"Reading {os.path.basename(path)} needs PyTorch (a pickled "
                "state dict is only safe to read with torch.load): pip "
                "install torch, or give a folder with model.safetensors. "
                f"Received: {path!r}") from error
        state = torch.load(path, map_location="cpu", weights_only=True)
        tensors = {name: value.float().numpy() for name, value
                   in state.items()}
    return {(name[len(_PREFIX):] if name.startswith(_PREFIX) else name):
            np.asarray(value, dtype=np.float32)
            for name, value in tensors.items()}


def _load_bfloat16(path):
    import ml_dtypes
    from safetensors import safe_open
    tensors = {}
    with safe_open(path, framework="numpy") as file:
        for name in file.keys():
            tensors[name] = file.get_tensor(name)
    return {name: value.astype(np.float32) if value.dtype
            == ml_dtypes.bfloat16 else value
            for name, value in tensors.items()}


def _get(tensors, name, shape):
    if name not in tensors:
        raise ValueError(
            f"The checkpoint has no tensor `{name}` (is it a MarianMTModel "
            f"of this config?). Received: {len(tensors)} tensors")
    value = tensors[name]
    if tuple(value.shape) != tuple(shape):
        raise ValueError(
            f"The checkpoint's `{name}` has shape {tuple(value.shape)}, "
            f"the config asks for {tuple(shape)}.")
    return value


def embedding_matrix(tensors: dict, vocab_size: int, d_model: int
                     ) -> np.ndarray:
    """The one shared (V, D) matrix; every copy of it must agree.

    Hugging Face stores the shared embedding as `shared.weight` and may
    also store its tied copies (the encoder's and decoder's
    `embed_tokens`, `lm_head`); they must be equal, or the model is not
    one the package can represent (tied embeddings and projection).
    """
    names = [name for name in ("shared.weight", "encoder.embed_tokens.weight",
                               "decoder.embed_tokens.weight",
                               "lm_head.weight") if name in tensors]
    if not names:
        raise ValueError(
            "The checkpoint has no embedding matrix (shared.weight).")
    matrix = _get(tensors, names[0], (vocab_size, d_model))
    for name in names[1:]:
        if not np.array_equal(_get(tensors, name, (vocab_size, d_model)),
                              matrix):
            raise ValueError(
                f"The checkpoint's `{name}` differs from `{names[0]}`: the "
                "package imports tied embeddings and output projection only"
                " (tie_word_embeddings and share_encoder_decoder_"
                "embeddings).")
    return matrix


def check_positions(tensors: dict, table: np.ndarray) -> float | None:
    """Compares stored position embeddings with the sinusoidal table.

    Returns the largest difference, or None when none are stored. A
    larger one than 1e-4 means learned positions: an error.
    """
    worst = None
    for side in ("encoder", "decoder"):
        name = f"{side}.embed_positions.weight"
        if name not in tensors:
            continue
        stored = tensors[name]
        rows = min(len(stored), len(table))
        difference = float(np.max(np.abs(stored[:rows] - table[:rows])))
        if stored.shape[1] != table.shape[1] or difference > 1e-4:
            raise ValueError(
                f"The checkpoint's `{name}` is not Marian's sinusoidal "
                f"table (largest difference {difference:.3g}): learned "
                "positions cannot be imported.")
        worst = difference if worst is None else max(worst, difference)
    return worst


def _assign(variable, value):
    if tuple(variable.shape) != value.shape:
        raise ValueError(
            f"Internal shape mismatch for {variable.path}: "
            f"{tuple(variable.shape)} against {value.shape}")
    variable.assign(value.astype(np.float32))


def _linear(dense, tensors, name, d_in, d_out, layout):
    """A torch Linear (out, in) into an EinsumDense or Dense kernel."""
    weight = _get(tensors, f"{name}.weight", (d_out, d_in))
    bias = _get(tensors, f"{name}.bias", (d_out,))
    kernel = weight.T
    if layout == "heads_out":  # (D, H * K) -> (D, H, K)
        kernel = kernel.reshape(dense.kernel.shape)
        bias = bias.reshape(dense.bias.shape)
    elif layout == "heads_in":  # (H * K, D) -> (H, K, D)
        kernel = kernel.reshape(dense.kernel.shape)
    _assign(dense.kernel, kernel)
    _assign(dense.bias, bias)


def _attention(attention, residual, tensors, name, norm_name, d_model):
    for ours, theirs in (("query_dense", "q_proj"), ("key_dense", "k_proj"),
                         ("value_dense", "v_proj")):
        _linear(getattr(attention, ours), tensors, f"{name}.{theirs}",
                d_model, d_model, "heads_out")
    _linear(attention.output_dense, tensors, f"{name}.out_proj", d_model,
            d_model, "heads_in")
    _layer_norm(residual, tensors, norm_name, d_model)


def _layer_norm(residual, tensors, name, d_model):
    _assign(residual.layer_norm.gamma,
            _get(tensors, f"{name}.weight", (d_model,)))
    _assign(residual.layer_norm.beta, _get(tensors, f"{name}.bias",
                                           (d_model,)))


def _feed_forward(block, tensors, prefix, d_model, d_ff):
    _linear(block.feed_forward.inner_dense, tensors, f"{prefix}.fc1",
            d_model, d_ff, "dense")
    _linear(block.feed_forward.output_dense, tensors, f"{prefix}.fc2",
            d_ff, d_model, "dense")
    _layer_norm(block.feed_forward_residual, tensors,
                f"{prefix}.final_layer_norm", d_model)


def assign_weights(model, tensors: dict, order: list[int]) -> dict:
    """Writes a Marian checkpoint into a built `Transformer`.

    Args:
        model: a `Transformer` of the config `marian_spec` made.
        tensors: `read_checkpoint`'s dict.
        order: `marian_order(...)`: the Marian row of each package id.

    Returns:
        A report: tensors read, tensors not used, position table check.
    """
    config = model.config
    d_model, d_ff = config.d_model, config.d_ff
    vocab = len(order) - 1
    order = np.asarray(order)
    used = set()

    class Tracked(dict):
        def __getitem__(self, key):
            used.add(key)
            return dict.__getitem__(self, key)

    tensors = Tracked(tensors)
    matrix = embedding_matrix(tensors, vocab, d_model)
    for name in ("shared.weight", "encoder.embed_tokens.weight",
                 "decoder.embed_tokens.weight", "lm_head.weight"):
        if name in tensors:
            used.add(name)
    _assign(model.target_embedding.embeddings, matrix[order])
    bias = tensors.get("final_logits_bias")
    if bias is not None:
        used.add("final_logits_bias")
        bias = np.asarray(bias).reshape(-1)
        if bias.shape != (vocab,):
            raise ValueError(
                f"The checkpoint's `final_logits_bias` has {bias.shape[0]}"
                f" entries, the vocabulary {vocab}.")
        _assign(model.output_bias.bias, bias[order])
    positions = check_positions(tensors, model.positional_encoding.table)
    used.update(name for name in tensors if name.endswith("embed_positions"
                                                          ".weight"))
    for index, block in enumerate(model.encoder.blocks):
        prefix = f"encoder.layers.{index}"
        _attention(block.self_attention, block.self_attention_residual,
                   tensors, f"{prefix}.self_attn",
                   f"{prefix}.self_attn_layer_norm", d_model)
        _feed_forward(block, tensors, prefix, d_model, d_ff)
    for index, block in enumerate(model.decoder.blocks):
        prefix = f"decoder.layers.{index}"
        _attention(block.self_attention, block.self_attention_residual,
                   tensors, f"{prefix}.self_attn",
                   f"{prefix}.self_attn_layer_norm", d_model)
        _attention(block.cross_attention, block.cross_attention_residual,
                   tensors, f"{prefix}.encoder_attn",
                   f"{prefix}.encoder_attn_layer_norm", d_model)
        _feed_forward(block, tensors, prefix, d_model, d_ff)
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(
            f"The checkpoint holds tensors the package has no place for: "
            f"{unused[:5]}{' ...' if len(unused) > 5 else ''} (is it a "
            "different architecture, e.g. more layers than the config?)")
    return {"tensors": len(tensors),
            "parameters": int(sum(value.size for value in tensors.values())),
            "position_table_difference": positions}
