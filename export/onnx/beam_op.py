"""An opt-in beam search graph driven by onnxruntime's own BeamSearch op.

`convert_beam_op(translator)` builds `ONNX_BEAM_OP_GRAPH`: the same interface
as the token graph `beam.onnx` (`source_ids` int32 (B, S) in,
`target_ids` int32 (B, L) and `score` float32 (B,) out), but the search
loop is onnxruntime's `com.microsoft.BeamSearch` contrib op
(`model_type=1`, the encoder-decoder layout of its T5 support) instead of
an ONNX Loop. It calls two graphs traced from the model's own layers:

- "encoder": `encoder_input_ids`, `encoder_attention_mask`,
  `decoder_input_ids` -> the first step's `logits`,
  `encoder_hidden_states`, `present_key_self_i` / `present_value_self_i`
  (B, H, 1, K) and `present_key_cross_i` / `present_value_cross_i`
  (B, H, S, K) of each decoder layer i;
- "decoder": `input_ids` (B, 1), `encoder_attention_mask`, the past self
  keys/values (B, H, t, K) and the cross ones -> `logits` and the self
  keys/values grown by one position (onnxruntime reorders them for the
  beams itself).

Both use the formulas of `Transformer.decode_step` with a concatenated
cache instead of the fixed one (its output bias and, with
`suppress_reserved`, its -1e9 logits of [PAD] and [START] included).
Around the op, two small converted TensorFlow functions give the
Translator's input rules (truncation, the id check, the maximum output
length, and the source mask: the op's own masks left padding only) and
output rules ([END] written back, which the op leaves out; the
empty-input rule; no all-padding columns).

Differences from `beam.onnx`, which is why this file is opt-in: the op
ranks finished hypotheses by log P / length^alpha, not by the GNMT
penalty of the paper, so its translations equal the Translator's only at
`length_penalty` 0 (the graph input `length_penalty` defaults to the
translator's alpha; `verify_beam_op` compares at 0, where the two agree
on most but not all sentences: the op's scorer can stop a row earlier);
it runs on
onnxruntime only (a contrib op), and it supports neither `min_length` nor
`no_repeat_ngram_size` of the search settings. Measured on the benchmark
model ("small", 64 tokens, beam 4): about 0.85 of `beam.onnx`'s time at
batch 1 and 32 (`benchmarks/ort_beam_search.py`, `benchmarks/RESULTS.md`).

References:
    onnxruntime contrib operators, "com.microsoft.BeamSearch",
    https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md
"""

import dataclasses
import time
import warnings

import numpy as np
import onnx
import tensorflow as tf
from onnx import TensorProto, helper, numpy_helper

from keras_transformer.contract import BEAM_OP_MIN_AGREEMENT, SCORE_TOLERANCE
from keras_transformer.export.onnx.convert import function_to_onnx
from keras_transformer.export.onnx.graph import compact, name_dims
from keras_transformer.export.onnx.lean import lean_search
from keras_transformer.export.onnx.runtime import make_session
from keras_transformer.masks import attention_bias
from keras_transformer.text.special_tokens import END_ID, PAD_ID, START_ID

_IDS = tf.TensorSpec([None, None], tf.int32, name="source_ids")


def _step(model, ids, index, past, cross, memory_bias):
    """One decoder position with a growing self-attention cache.

    Returns `(logits float32 (B, 1, V), present)`: `present` the `past`
    (key, value) pairs of each layer with this position appended.
    """
    hidden = model.target_embedding(ids)
    hidden = model.positional_encoding(hidden, start_index=index)
    present = []
    for layer, (past_key, past_value), (key, value) in zip(
            model.decoder.blocks, past, cross):
        attention = layer.self_attention
        normed = layer.self_attention_residual.normalize_input(hidden)
        new_key, new_value = attention.compute_key_value(normed)
        keys = tf.concat([past_key, new_key], axis=2)
        values = tf.concat([past_value, new_value], axis=2)
        present.append((keys, values))
        out, _ = attention.attend(normed, keys, values)
        hidden = layer.self_attention_residual(hidden, out)
        hidden, _ = layer.cross_and_feed_forward(hidden, key, value,
                                                 memory_bias)
    hidden = model.decoder.finish(hidden)
    # [PAD] and [START] at -1e9 with `suppress_reserved`, as decode_step.
    return model.suppress_reserved(
        tf.cast(model.project(hidden), tf.float32)), present


def _subgraph_functions(model):
    """The encoder (with the first step) and decoder tf.functions."""
    config = model.config
    layers = config.num_layers
    heads, key_dim = config.num_heads, config.d_model // config.num_heads

    def memory_bias(mask):
        return attention_bias(tf.cast(mask, tf.bool)[:, None, None, :])

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.int32, name="encoder_input_ids"),
        tf.TensorSpec([None, None], tf.int32, name="encoder_attention_mask"),
        tf.TensorSpec([None, 1], tf.int32, name="decoder_input_ids")])
    def encoder(encoder_input_ids, encoder_attention_mask,
                decoder_input_ids):
        memory, _ = model.encode(encoder_input_ids)
        cross = [layer.cross_attention.compute_key_value(memory)
                 for layer in model.decoder.blocks]
        empty = tf.zeros([tf.shape(encoder_input_ids)[0], heads, 0,
                          key_dim], memory.dtype)
        logits, present = _step(model, decoder_input_ids, 0,
                                [(empty, empty)] * layers, cross,
                                memory_bias(encoder_attention_mask))
        outputs = {"logits": logits,
                   "encoder_hidden_states": tf.cast(memory, tf.float32)}
        for i, ((k, v), (ck, cv)) in enumerate(zip(present, cross)):
            outputs.update({f"present_key_self_{i}": k,
                            f"present_value_self_{i}": v,
                            f"present_key_cross_{i}": ck,
                            f"present_value_cross_{i}": cv})
        return outputs

    names = [f"past_{kind}_{side}_{i}" for side in ("self", "cross")
             for i in range(layers) for kind in ("key", "value")]
    specs = [tf.TensorSpec([None, 1], tf.int32, name="input_ids"),
             tf.TensorSpec([None, None], tf.int32,
                           name="encoder_attention_mask")]
    specs += [tf.TensorSpec([None, heads, None, key_dim], tf.float32,
                            name=name) for name in names]

    @tf.function(input_signature=specs)
    def decoder(input_ids, encoder_attention_mask, *caches):
        past = [(caches[2 * i], caches[2 * i + 1]) for i in range(layers)]
        cross = [(caches[2 * (layers + i)], caches[2 * (layers + i) + 1])
                 for i in range(layers)]
        logits, present = _step(model, input_ids, tf.shape(caches[0])[2],
                                past, cross,
                                memory_bias(encoder_attention_mask))
        outputs = {"logits": logits}
        for i, (k, v) in enumerate(present):
            outputs.update({f"present_key_self_{i}": k,
                            f"present_value_self_{i}": v})
        return outputs

    self_names = [f"present_{kind}_self_{i}" for i in range(layers)
                  for kind in ("key", "value")]
    cross_names = [f"present_{kind}_cross_{i}" for i in range(layers)
                   for kind in ("key", "value")]
    return ((encoder, ["logits", "encoder_hidden_states", *self_names,
                       *cross_names]),
            (decoder, ["logits", *self_names]))


def _convert(function, outputs_order, opset):
    """tf2onnx conversion keeping the functions' input and output names."""
    model = function_to_onnx(function, opset, "keras-transformer")
    compact(model.graph)
    lean_search(model)
    if outputs_order is not None:  # onnxruntime reads them by position.
        by_name = {o.name: o for o in model.graph.output}
        ordered = [by_name[name] for name in outputs_order]
        del model.graph.output[:]
        model.graph.output.extend(ordered)
    return model


def _check_settings(translator):
    if translator.model.config.copy_attention:
        raise ValueError(
            "onnxruntime's BeamSearch graph has no copy path: a model with "
            "`copy_attention=True` would lose it. Export the token graphs "
            "(beam.onnx) instead. Received: model with copy_attention=True")
    settings = translator.settings
    if settings.min_length or settings.no_repeat_ngram_size:
        raise ValueError(
            "onnxruntime's BeamSearch graph supports neither `min_length` "
            "nor `no_repeat_ngram_size`. Received: search settings "
            f"min_length={settings.min_length}, no_repeat_ngram_size="
            f"{settings.no_repeat_ngram_size}")


def convert_beam_op(translator, opset: int = 17) -> onnx.ModelProto:
    """The Translator's beam search as a com.microsoft.BeamSearch graph.

    Args:
        translator: a `keras_transformer.Translator` whose settings have
            `min_length` 0 and `no_repeat_ngram_size` 0.
        opset: int, the ONNX opset of the graphs (17 or 18).

    Returns:
        An `onnx.ModelProto`: input `source_ids` int32 (B, S) and the
        optional `length_penalty` float32 (1,) (the op's alpha, default
        the translator's); outputs `target_ids` int32 (B, L), `score`
        float32 (B,), log P / length^alpha.

    Raises:
        ValueError: settings the op cannot follow.
    """
    _check_settings(translator)
    model = translator.model
    (encoder, encoder_order), (decoder, decoder_order) = (
        _subgraph_functions(model))
    with warnings.catch_warnings():
        # Keras warns of the first step's softmax over one position.
        warnings.filterwarnings("ignore", "You are using a softmax")
        encoder_graph = _convert(encoder, encoder_order, opset).graph
    decoder_graph = _convert(decoder, decoder_order, opset).graph

    @tf.function(input_signature=[_IDS])
    def before(source_ids):
        ids = translator.checked_ids(source_ids)
        # The op's sequences start with [START]: one position more.
        limit = translator.max_output_length(ids) + 1
        # Given explicitly: the op's own mask hides left padding only.
        mask = tf.cast(ids != PAD_ID, tf.int32)
        return {"input_ids": ids, "max_length": tf.reshape(limit, [1]),
                "attention_mask": mask}

    @tf.function(input_signature=[
        _IDS, tf.TensorSpec([None, None, None], tf.int32, name="sequences"),
        tf.TensorSpec([None, None], tf.float32, name="sequences_scores")])
    def after(source_ids, sequences, sequences_scores):
        ids = sequences[:, 0, 1:]
        # The op leaves [END] out of a finished hypothesis: a row shorter
        # than the limit ended there.
        length = tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32), axis=1)
        columns = tf.range(tf.shape(ids)[1])[None, :]
        ended = (columns == length[:, None]) & (
            length[:, None] < tf.shape(ids)[1])
        ids = tf.where(ended, END_ID, ids)
        return translator.token_outputs(source_ids, ids,
                                        sequences_scores[:, 0])

    pre = onnx.compose.add_prefix(_convert(before, None, opset), "before/",
                                  rename_inputs=False, rename_outputs=False)
    post = onnx.compose.add_prefix(_convert(after, None, opset), "after/",
                                   rename_inputs=False, rename_outputs=False)
    constants = {
        "min_length": np.array([1], np.int32),  # No constraint.
        "num_beams": np.array([translator.beam_size], np.int32),
        "num_return_sequences": np.array([1], np.int32),
        "repetition_penalty": np.array([1.0], np.float32),
        "length_penalty": np.array([translator.settings.length_penalty],
                                   np.float32)}
    node = helper.make_node(
        "BeamSearch",
        ["input_ids", "max_length", "min_length", "num_beams",
         "num_return_sequences", "length_penalty", "repetition_penalty",
         "", "", "attention_mask"],
        ["sequences", "sequences_scores"], domain="com.microsoft",
        name="beam_search", eos_token_id=END_ID, pad_token_id=PAD_ID,
        decoder_start_token_id=START_ID, no_repeat_ngram_size=0,
        early_stopping=0, model_type=1, encoder=encoder_graph,
        decoder=decoder_graph)
    graph = helper.make_graph(
        [*pre.graph.node, node, *post.graph.node], "beam_op_search",
        [*pre.graph.input,
         # An initializer that is also an input: a default to override.
         helper.make_tensor_value_info("length_penalty", TensorProto.FLOAT,
                                       [1])],
        list(post.graph.output),
        [*pre.graph.initializer, *post.graph.initializer,
         *(numpy_helper.from_array(v, k) for k, v in constants.items())])
    result = helper.make_model(
        graph, producer_name="keras-transformer",
        opset_imports=[helper.make_opsetid("", opset),
                       helper.make_opsetid("com.microsoft", 1)])
    result.ir_version = pre.ir_version
    # Each subgraph keeps its own copy of the decoder weights: read from
    # the main graph instead (as `compact` would hoist them), the first
    # step's scores came out wrong on onnxruntime 1.32 (the ids did not).
    name_dims(result.graph)
    onnx.checker.check_model(result)
    return result


def verify_beam_op(path, translator, source_ids, batch_size: int = 32,
                   score_tolerance: float = SCORE_TOLERANCE,
                   min_agreement: float = BEAM_OP_MIN_AGREEMENT) -> dict:
    """Compares the file's ids with the Translator's at length_penalty 0.

    Both rank by plain log-probability at alpha = 0, yet the searches are
    not the same program: the op's (Hugging Face's beam scorer) can stop a
    row with a finished hypothesis where ours goes on to a likelier,
    longer one (seen on a tiny test model; never on the 205 sentences of
    a real English-German model). So the file passes when at least
    `min_agreement` of the sentences give the same ids (and scores within
    `score_tolerance`).

    Returns:
        {"sentences", "identical", "max_score_difference" (over the
        identical ones), "mismatches" (up to 5, as `export.parity`
        describes them), "onnxruntime_seconds", "parity" (the
        `export.parity` report)}.

    Raises:
        ValueError: too few sentences agree, naming the first difference.
    """
    from keras_transformer.contract import ONNX_BEAM_OP_GRAPH
    from keras_transformer.export import parity
    from keras_transformer.translator import Translator

    session = make_session(path)
    reference = Translator(
        translator.model, translator.source_tokenizer,
        translator.target_tokenizer,
        settings=dataclasses.replace(translator.settings,
                                     length_penalty=0.0))
    source_ids = np.asarray(source_ids, np.int32)
    rows = {"got": [], "expected": [], "got_scores": [],
            "expected_scores": []}
    seconds = 0.0
    for start in range(0, len(source_ids), batch_size):
        batch = source_ids[start:start + batch_size]
        timer = time.perf_counter()
        ids, score = session.run(
            ["target_ids", "score"],
            {"source_ids": batch,
             "length_penalty": np.array([0.0], np.float32)})
        seconds += time.perf_counter() - timer
        expected = reference.translate_tokens(batch)
        rows["got"] += list(ids)
        rows["got_scores"] += score.tolist()
        rows["expected"] += list(expected["target_ids"].numpy())
        rows["expected_scores"] += expected["score"].numpy().tolist()
    result = parity.check(
        parity.compare(**rows, inputs=[parity.token_row(row)
                                       for row in source_ids],
                       min_agreement=min_agreement,
                       score_tolerance=score_tolerance),
        ONNX_BEAM_OP_GRAPH,
        "the Translator's beam search (at length_penalty 0)")
    return {"sentences": result["rows"], "identical": result["identical"],
            "max_score_difference": result["max_score_difference"],
            "mismatches": result["mismatches"],
            "onnxruntime_seconds": seconds, "parity": result}
