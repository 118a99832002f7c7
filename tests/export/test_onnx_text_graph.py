"""`export.onnx.text_graph`: text -> SentencePiece -> search -> SentencePiece.

A hand-made search graph stands in for the real one (a `Loop` that copies
`source_ids`, so the translation shows what the search was fed), with small
SentencePiece models learned here. Every onnxruntime session runs in
`tests/export/onnx_text_worker.py`, a subprocess that never imports TensorFlow:
onnxruntime-extensions has crashed processes that had.
"""

import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import sentencepiece
from onnx import TensorProto, helper, numpy_helper

from keras_transformer.export.onnx.text_graph import (
    CONTRIB,
    build_text_model,
    text_model_summary,
)

WORKER = os.path.join(os.path.dirname(__file__), "onnx_text_worker.py")
MAX_TOKENS = 40
PAD, UNK, START, END = 0, 1, 2, 3
JUNK = 7  # What the scrambled search writes after [END].
SOURCE_CORPUS = [
    "Das ist ein kleiner Test.", "Ich mag Katzen und Hunde sehr.",
    "café naïve résumé à la crème", "我喜欢猫。我喜欢狗。", "猫が好きです。",
    "مرحبا بالعالم", "שלום עולם", "hello world, how are you today?",
    "Zahlen: eins zwei drei vier fünf sechs sieben acht neun zehn",
]
TARGET_CORPUS = ["the cat sat on the mat", "a dog and a cat", "one two three",
                 "numbers are fun to read aloud"]
TEXTS = [
    "café naïve résumé", "我喜欢猫", "猫が好きです", "مرحبا بالعالم",
    "שלום עולם", "hello 😀 world 🐈", "Ωμέγα жук ᚠᚢᚦ ☃",  # unseen: bytes
    "ｶﾀｶﾅ ① ﬁne Ⅻ", "  Ich   mag\tKatzen  ",  # NFKC and whitespace
    "eins zwei drei vier fünf sechs sieben acht neun zehn " * 3,  # long
    "", " ", "\t\n", "\u3000\u00a0\u2003",  # no token
]


def _train(corpus: list[str], vocab_size: int) -> bytes:
    writer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 10), model_writer=writer,
        vocab_size=vocab_size, model_type="unigram", pad_id=PAD,
        unk_id=UNK, bos_id=START, eos_id=END, pad_piece="[PAD]",
        unk_piece="[UNK]", bos_piece="[START]", eos_piece="[END]",
        byte_fallback=True, hard_vocab_limit=False,
        normalization_rule_name="nmt_nfkc", minloglevel=2)
    return writer.getvalue()


@pytest.fixture(scope="module")
def spm_models():
    return {"source": _train(SOURCE_CORPUS, 420),
            "target": _train(TARGET_CORPUS, 300)}


def make_search(kind: str = "identity", trips: int = 3, start: int = START,
                pad: int = PAD, word: int | None = None) -> onnx.ModelProto:
    """A search graph: a `Loop` copies `source_ids` in `trips` trips.

    `kind` "identity": `target_ids` = `source_ids`; "scrambled": `start`,
    `pad`, `word` (if given), `source_ids`, `pad`, then `JUNK`. `score` is
    minus the number of non-zero source ids. Like a search that cannot run
    on an empty batch, it fails on one (it gathers row 0). Dims are named as
    by tf2onnx.
    """
    const = numpy_helper.from_array
    body = helper.make_graph(
        [helper.make_node("Add", ["ids_in", "zero"], ["ids_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "copy",
        [helper.make_tensor_value_info("trip", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("ids_in", TensorProto.INT32,
                                       ["unk__11", "unk__14"])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("ids_out", TensorProto.INT32, None)])
    nodes = [
        helper.make_node("Loop", ["trips", "", "source_ids"], ["copied"],
                         name="copy_loop", body=body),
        helper.make_node("Equal", ["copied", "zero"], ["is_zero"]),
        helper.make_node("Not", ["is_zero"], ["not_zero"]),
        helper.make_node("Cast", ["not_zero"], ["count"],
                         to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["count", "axis_1"], ["total"],
                         keepdims=0),
        # Row 0 times 0: an error on an empty batch, else nothing.
        helper.make_node("Gather", ["count", "zero"], ["row_0"], axis=0),
        helper.make_node("ReduceSum", ["row_0"], ["row_0_sum"], keepdims=0),
        helper.make_node("Mul", ["row_0_sum", "zero_float"], ["nothing"]),
        helper.make_node("Sub", ["nothing", "total"], ["score"]),
    ]
    weights = [const(np.array(trips, np.int64), "trips"),
               const(np.array(0, np.int32), "zero"),
               const(np.array(0, np.float32), "zero_float"),
               const(np.array([1], np.int64), "axis_1")]
    if kind == "identity":
        nodes.append(helper.make_node("Identity", ["copied"], ["target_ids"]))
    else:
        columns = {"start": start, "pad": pad, "junk": JUNK}
        if word is not None:
            columns["word"] = word
        nodes += [
            helper.make_node("Shape", ["copied"], ["rows"], end=1),
            helper.make_node("Concat", ["rows", "axis_1"], ["column"],
                             axis=0),
            *[helper.make_node("Expand", [f"{n}_id", "column"], [n])
              for n in columns],
            helper.make_node("Concat", ["start", "pad", *["word"] * (
                word is not None), "copied", "pad", "junk"], ["target_ids"],
                             axis=1),
        ]
        weights += [const(np.array(v, np.int32), f"{n}_id")
                    for n, v in columns.items()]
    graph = helper.make_graph(
        nodes, "search",
        [helper.make_tensor_value_info("source_ids", TensorProto.INT32,
                                       ["unk__11", "unk__12"])],
        [helper.make_tensor_value_info("target_ids", TensorProto.INT32,
                                       ["unk__11", "unk__13"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT,
                                       ["unk__11"])],
        weights,
        value_info=[helper.make_tensor_value_info(
            "copied", TensorProto.INT32, ["unk__11", "unk__12"])])
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def expected(text, source: bytes, target: bytes,
             source_vocab_size: int = 10_000,
             word: int | None = None) -> tuple[str, float]:
    """What the stand-in search gives, computed with sentencepiece."""
    sp_source = sentencepiece.SentencePieceProcessor(model_proto=source)
    sp_target = sentencepiece.SentencePieceProcessor(model_proto=target)
    ids = [i if i < source_vocab_size else UNK
           for i in sp_source.encode(text)[:MAX_TOKENS]]
    if not ids:
        return "", 0.0
    size = sp_target.get_piece_size()
    kept = [word] * (word is not None) + ids
    return (sp_target.decode([i if i < size else UNK for i in kept]),
            -float(len(ids) + 1))


def translate(tmp_path, runs: list[tuple[onnx.ModelProto, list]]) -> list:
    """Runs the worker once: [(model, texts)] -> [result dict]."""
    job = {"runs": []}
    for index, (model, texts) in enumerate(runs):
        path = str(tmp_path / f"model_{index}.onnx")
        onnx.save(model, path)
        job["runs"].append({"model": path, "texts": [
            base64.b64encode(t if isinstance(t, bytes) else t.encode())
            .decode("ascii") for t in texts]})
    (tmp_path / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, WORKER, str(tmp_path / "job.json"),
                    str(tmp_path / "result.json")], check=True, timeout=120)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["tensorflow_loaded"] is False
    for run in result["runs"]:
        assert "error" not in run, run["error"]
    return result["runs"]


def build(spm_models, search=None, target="source", **kwargs):
    kwargs = {"max_source_tokens": MAX_TOKENS, "source_vocab_size": 10_000,
              **kwargs}
    return build_text_model(search or make_search(), spm_models["source"],
                            spm_models[target], **kwargs)


def test_identity_search_gives_the_normalized_text(spm_models, tmp_path):
    model = build(spm_models)
    runs = translate(tmp_path, [(model, TEXTS)] + [(model, [t])
                                                   for t in TEXTS])
    source = spm_models["source"]
    want = [expected(t, source, source) for t in TEXTS]
    assert runs[0]["translation"] == [w[0] for w in want]
    assert runs[0]["score"] == [w[1] for w in want]
    assert runs[0]["dtypes"] == ["object", "float32"]
    for run, (text, score) in zip(runs[1:], want):  # Alone as in a batch.
        assert (run["translation"], run["score"]) == ([text], [score])
    by_text = dict(zip(TEXTS, runs[0]["translation"]))
    assert by_text["我喜欢猫"] == "我喜欢猫"
    assert by_text["ｶﾀｶﾅ ① ﬁne Ⅻ"] == "カタカナ 1 fine XII"
    assert by_text["  Ich   mag\tKatzen  "] == "Ich mag Katzen"
    assert by_text["Ωμέγα жук ᚠᚢᚦ ☃"] == "Ωμέγα жук ᚠᚢᚦ ☃"  # Bytes.
    assert runs[0]["translation"][-4:] == [""] * 4
    assert runs[0]["score"][-4:] == [0.0] * 4


def test_long_text_is_truncated_before_end(spm_models, tmp_path):
    text = TEXTS[9]
    sp = sentencepiece.SentencePieceProcessor(model_proto=spm_models["source"])
    pieces = sp.encode(text)
    assert len(pieces) > MAX_TOKENS + 5
    [run] = translate(tmp_path, [(build(spm_models), [text, "eins"])])
    # The search was fed max_source_tokens tokens, then [END].
    assert run["translation"][0] == sp.decode(pieces[:MAX_TOKENS])
    assert run["translation"][0] != sp.decode(pieces)
    assert run["score"] == [-(MAX_TOKENS + 1.0), -(len(sp.encode("eins")) + 1)]


def test_empty_batch_and_empty_rows(spm_models, tmp_path):
    model = build(spm_models)
    empty, blank, mixed = translate(tmp_path, [
        (model, []), (model, ["", " \t", "\u2028"]), (model, ["", "猫", " "])])
    assert empty["shapes"] == [[0], [0]]
    assert empty["translation"] == [] and empty["score"] == []
    assert blank["translation"] == ["", "", ""]
    assert blank["score"] == [0.0, 0.0, 0.0]
    assert mixed["translation"] == ["", "猫", ""]
    assert mixed["score"][0] == mixed["score"][2] == 0.0
    assert mixed["score"][1] < 0


def test_end_pad_and_start_in_the_search_output(spm_models, tmp_path):
    """`start_id` and `pad_id` are skipped, everything from the first
    [END] on is dropped (the scrambled search writes JUNK after it)."""
    source = spm_models["source"]
    sp = sentencepiece.SentencePieceProcessor(model_proto=source)
    word = sp.encode("hello")[0]
    texts = ["hello world", "猫", "", "a much longer sentence than the others"]
    # Byte pieces, not control pieces: decoded unless skipped.
    start, pad = 5, 4
    runs = translate(tmp_path, [
        (build(spm_models, make_search("scrambled", trips=1, word=word)),
         texts),
        (build(spm_models, make_search("scrambled", start=start, pad=pad,
                                       word=word),
               start_id=start, pad_id=pad), texts)])
    want = [expected(t, source, source, word=word) for t in texts]
    assert want[0][0] != sp.decode(sp.encode(texts[0])) and not want[2][0]
    for run in runs:
        assert run["translation"] == [w[0] for w in want]
    assert runs[0]["score"] == [w[1] for w in want]
    assert sp.decode([JUNK]) == "\x03" and sp.decode([pad]) == "\x00"


def test_other_target_model_and_out_of_vocabulary_ids(spm_models, tmp_path):
    source, target = spm_models["source"], spm_models["target"]
    sizes = [sentencepiece.SentencePieceProcessor(model_proto=m)
             .get_piece_size() for m in (source, target)]
    assert sizes[0] > sizes[1]  # Identity ids beyond the target vocabulary.
    texts = ["the cat sat", "我喜欢猫", "Katzen und Hunde", ""]
    small = 300  # Source ids >= 300 become [UNK] before the search.
    runs = translate(tmp_path, [
        (build(spm_models, target="target"), texts),
        (build(spm_models, source_vocab_size=small), texts)])
    assert runs[0]["translation"] == [expected(t, source, target)[0]
                                      for t in texts]
    assert runs[1]["translation"] == [expected(t, source, source, small)[0]
                                      for t in texts]
    assert runs[0]["translation"] != runs[1]["translation"]
    assert any("\u2047" in t for t in runs[1]["translation"])  # [UNK]


def test_invalid_utf8_becomes_replacement_characters(spm_models, tmp_path):
    model = build(spm_models)
    texts = [b"caf\xe9 ok", b"x\xff\xfey", b"\xe6\x88 cut"]
    runs = translate(tmp_path, [(model, [t]) for t in texts] + [
        (model, ["a\x00b c"])])
    source = spm_models["source"]
    for run, text in zip(runs, texts):
        assert run["translation"] == [expected(text, source, source)[0]]
        assert "\ufffd" in run["translation"][0]
    assert runs[0]["translation"] == ["caf\ufffd ok"]
    # onnxruntime's strings end at NUL: the text after it is not seen.
    assert runs[3]["translation"] == ["a"]


def test_graph_structure(spm_models):
    search = make_search()
    before = search.SerializeToString()
    model = build(spm_models, search)
    assert search.SerializeToString() == before
    onnx.checker.check_model(model, full_check=True)
    summary = text_model_summary(model)
    assert summary["inputs"] == {"text": ["batch"]}
    assert summary["outputs"] == {"translation": ["batch"],
                                  "score": ["batch"]}
    assert summary["ops"][CONTRIB] == {"SentencepieceTokenizer": 1,
                                       "SentencepieceDecoder": 1}
    assert summary["ops"]["ai.onnx"]["Loop"] == 2  # Search and decoding.
    assert summary["nodes"] == len(model.graph.node) + 2 + 5
    assert {o.domain: o.version for o in model.opset_import} == {
        "": 17, CONTRIB: 1}
    names = [t.name for t in model.graph.initializer]
    assert len(names) == len(set(names))
    assert sorted(n for n in names if n.startswith("search/")) == [
        "search/axis_1", "search/trips", "search/zero", "search/zero_float"]
    values = {v.name: [d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in model.graph.value_info}
    assert values["search/source_ids"] == ["search_batch", "source_length"]
    assert values["search/target_ids"] == ["search_batch", "target_length"]
    assert values["search/copied"] == ["search_batch", "source_length"]
    assert values["text/source_ids"] == ["batch", "source_length"]
    [loop] = [n for n in model.graph.node if n.name == "search/copy_loop"]
    body = loop.attribute[0].g
    # A dim name used once says nothing: it becomes an unknown dim.
    assert [(d.dim_param, d.HasField("dim_param")) for d in
            body.input[2].type.tensor_type.shape.dim] == [
        ("search_batch", True), ("", False)]
    assert [list(n.input) for n in body.node] == [
        ["search/ids_in", "search/zero"], ["search/cond_in"]]


def test_summary_of_an_unbuilt_model():
    summary = text_model_summary(make_search("scrambled"))
    assert summary["inputs"] == {"source_ids": ["unk__11", "unk__12"]}
    assert summary["ops"] == {"ai.onnx": {
        "Expand": 3, "ReduceSum": 2, "Concat": 2, "Loop": 1, "Equal": 1,
        "Not": 1, "Cast": 1, "Gather": 1, "Mul": 1, "Sub": 1, "Shape": 1,
        "Add": 1, "Identity": 1}}
    with pytest.raises(TypeError, match="`model`"):
        text_model_summary(b"bytes")


def _search_with(inputs=None, outputs=None, opset=17):
    model = make_search()
    graph = model.graph
    if inputs is not None:
        del graph.input[:]
        graph.input.extend(inputs)
    if outputs is not None:
        del graph.output[:]
        graph.output.extend(outputs)
    model.opset_import[0].version = opset
    return model


_INT32, _FLOAT = TensorProto.INT32, TensorProto.FLOAT
_VI = helper.make_tensor_value_info


@pytest.mark.parametrize("kwargs, error, arg", [
    (dict(search=b"model"), TypeError, "search"),
    (dict(search=_search_with([_VI("ids", _INT32, None)])), ValueError,
     "search"),
    (dict(search=_search_with([_VI("source_ids", TensorProto.INT64, None)])),
     ValueError, "search"),
    (dict(search=_search_with(outputs=[_VI("target_ids", _INT32, None)])),
     ValueError, "search"),
    (dict(search=_search_with(outputs=[
        _VI("target_ids", _INT32, None), _VI("score", _FLOAT, None),
        _VI("copied", _INT32, None)])), ValueError, "search"),
    (dict(search=_search_with(opset=13)), ValueError, "search"),
    (dict(source_model="model"), TypeError, "source_model"),
    (dict(source_model=b"not a sentencepiece model"), ValueError,
     "source_model"),
    (dict(target_model=b""), ValueError, "target_model"),
    (dict(max_source_tokens=0), ValueError, "max_source_tokens"),
    (dict(max_source_tokens=True), TypeError, "max_source_tokens"),
    (dict(max_source_tokens=2.0), TypeError, "max_source_tokens"),
    (dict(source_vocab_size=0), ValueError, "source_vocab_size"),
    (dict(source_vocab_size=1), ValueError, "source_vocab_size"),  # UNK 1
    (dict(end_id=-1), ValueError, "end_id"),
    (dict(end_id=10_000), ValueError, "end_id"),
    (dict(end_id=0), ValueError, "end_id"),
    (dict(pad_id="0"), TypeError, "pad_id"),
    (dict(start_id=None), TypeError, "start_id"),
    (dict(name=""), ValueError, "name"),
])
def test_argument_errors(spm_models, kwargs, error, arg):
    args = dict(search=make_search(), source_model=spm_models["source"],
                target_model=spm_models["source"],
                max_source_tokens=MAX_TOKENS, source_vocab_size=10_000)
    args.update(kwargs)
    with pytest.raises(error, match=f"`{arg}`.*Received: {arg}"):
        build_text_model(**args)


def test_module_imports_only_numpy_onnx_and_tensorflow_free_modules():
    import ast
    import subprocess
    import sys

    from keras_transformer.export.onnx import text_graph

    with open(text_graph.__file__, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    imported = {alias.name for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} <= {
        "collections", "numpy", "onnx", "keras_transformer"}, imported
    assert {name for name in imported if name.startswith("keras_")} == {
        "keras_transformer.checks", "keras_transformer.export.onnx.graph",
        "keras_transformer.text.special_tokens"}
    # And it imports where TensorFlow cannot be imported.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, *args):\n"
            "        if name.split('.')[0] in ('tensorflow', 'keras'):\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import keras_transformer.export.onnx.text_graph\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
