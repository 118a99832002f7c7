"""Rewritten Marian SentencePiece models tokenize as `MarianTokenizer` does.

Two tiny unigram models (source and target, no byte fallback, as OPUS-MT's)
and a shared `vocab.json` laid out as Hugging Face's converter writes it
(`</s>` 0, `<unk>` 1, the pieces of both models, `<pad>` last), less a few
pieces of the source model ("missing" pieces: text still segments into
them, and they read as `<unk>`). `MarianTokenizer`'s ids, mapped to package
ids, must equal the ids of every runtime of the package: TensorFlow's
`SentencePieceTokenizer`, the `sentencepiece` package, the ONNX text graph
(onnxruntime-extensions, in `marian_tokenizer_worker.py`) and the web
page's translator.js (SentencePiece in WebAssembly, in Node.js).
"""

import io
import json
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import sentencepiece as spm
from onnx import TensorProto, helper, numpy_helper
from sentencepiece import sentencepiece_model_pb2

from keras_transformer.contract import known_token_ids
from keras_transformer.marian.tokenizers import rewrite_sentencepiece
from keras_transformer.marian.vocabulary import (
    marian_order,
    package_vocabulary,
)
from keras_transformer.text.sentencepiece_model import (
    model_info,
    model_vocab_size,
)
from keras_transformer.text.special_tokens import (
    END_ID,
    PAD_ID,
    RESERVED_TOKENS,
    UNK_ID,
)

transformers = pytest.importorskip("transformers")
# MarianTokenizer's punctuation normalizer (sacremoses) is not installed:
# the identity, as the package's tokenizers.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Recommended. pip install sacremoses")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "marian_tokenizer_worker.py")
WEB = os.path.join(ROOT, "export", "web")
SIDES = ("source", "target")
_PIECE = sentencepiece_model_pb2.ModelProto.SentencePiece

# Both corpora share their characters but for a few (German letters on the
# target side): the texts below use shared characters or none of either.
_WORDS = {
    "source": (["the cat", "a dog", "my friend", "the teacher", "José",
                "our neighbour", "the old man", "children", "a naïve one"],
               ["sees", "likes", "bought", "will visit", "painted",
                "is reading", "found", "remembers"],
               ["the house", "three apples", "a red car", "the garden",
                "42 books", "the river", "an entrée", "the café"]),
    "target": (["die Katze", "ein Hund", "mein Freund", "der Lehrer",
                "José", "unser Nachbar", "der alte Mann", "Kinder"],
               ["sieht", "mag", "kaufte", "wird besuchen", "malte",
                "liest", "fand", "erinnert sich an"],
               ["das Haus", "drei Äpfel", "ein rotes Auto", "den Garten",
                "42 Bücher", "den Fluss", "die Straße", "das Café"]),
}
_ENDINGS = ["today.", "yesterday!", "in Paris?", "with joy.", "at 7:30.",
            "again, slowly.", "(maybe)", "- really.", "\"quickly\"",
            "for 15 euros."]
# Source pieces left out of vocab.json (multi-character pieces of this
# sentence that the target model lacks).
_MISSING_FROM = "The teacher painted the garden with joy."
TEXTS = {
    "source": [
        "The teacher painted the garden with joy.",
        "the cat sees three apples today.",
        "My friend bought 42 books at 7:30.",
        "José found an entrée in Paris? (maybe)",
        "A naïve one remembers the river - really.",
        "painted painted garden garden",
        "",
        "   ",
        "1234567890 2024",
        "我喜欢猫",
        "the cat 我喜欢猫 sees",
        "مرحبا بالعالم",
        "שלום עולם",
        "🐱 the cat 👍🏽",
        "caf\u00e9 cafe\u0301",
        "Teacher,garden;joy!",
    ],
    "target": [
        "Die Katze sieht drei Äpfel today.",
        "Der Lehrer malte den Garten with joy.",
        "Jürgen liest 42 Bücher at 7:30.",
        "Das Café, die Straße (maybe)",
        "",
        "1234567890",
        "我喜欢猫",
        "مرحبا بالعالم und שלום",
        "🐱 die Katze 👍🏽",
        "Kinder fand den Fluss again, slowly.",
    ],
}


def _corpus(side: str, count: int = 300) -> list[str]:
    rng = random.Random(side)
    subjects, verbs, objects = _WORDS[side]
    return [f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} "
            f"{rng.choice(objects)} {rng.choice(_ENDINGS)}"
            for _ in range(count)]


def _learn(texts: list[str]) -> bytes:
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=writer, vocab_size=150,
        model_type="unigram", character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=3)
    return writer.getvalue()


def _pieces(proto: bytes) -> list:
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    return list(model.pieces)


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """The Marian folder's files, MarianTokenizer and the rewritten models.
    """
    folder = tmp_path_factory.mktemp("marian")
    spms = {side: _learn(_corpus(side)) for side in SIDES}
    source = spm.SentencePieceProcessor(model_proto=spms["source"])
    target = spm.SentencePieceProcessor(model_proto=spms["target"])
    missing = [piece for piece in source.encode(_MISSING_FROM, out_type=str)
               if len(piece.lstrip("▁")) > 1
               and target.piece_to_id(piece) == target.unk_id()][:4]
    assert len(missing) == 4, missing
    tokens = ["</s>", "<unk>"]
    for side in SIDES:
        tokens += [p.piece for p in _pieces(spms[side])
                   if p.type == _PIECE.NORMAL and p.piece not in tokens
                   and p.piece not in missing]
    vocab = {token: i for i, token in enumerate([*tokens, "<pad>"])}
    for side in SIDES:
        (folder / f"{side}.spm").write_bytes(spms[side])
    (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    hf = transformers.MarianTokenizer(
        str(folder / "source.spm"), str(folder / "target.spm"),
        str(folder / "vocab.json"))
    order = marian_order(vocab, vocab["<pad>"], vocab["</s>"])
    vocabulary = package_vocabulary(vocab, order)
    package_id = {}
    for index, marian_id in enumerate(order):  # <pad>: 0, not 2.
        package_id.setdefault(marian_id, index)
    return {"folder": folder, "spm": spms, "hf": hf, "vocab": vocab,
            "order": order, "vocabulary": vocabulary, "missing": missing,
            "package_id": package_id,
            "processors": {"source": source, "target": target},
            "models": {side: rewrite_sentencepiece(spms[side], vocabulary)
                       for side in SIDES}}


def marian_ids(marian, side: str, texts: list[str]) -> list[list[int]]:
    """MarianTokenizer's ids of `texts`, as package ids, without `</s>`."""
    hf = marian["hf"]
    encoded = (hf(texts) if side == "source" else hf(text_target=texts))
    rows = []
    for row in encoded["input_ids"]:
        ids = [marian["package_id"][i] for i in row]
        assert ids[-1] == END_ID
        rows.append(ids[:-1])
    return rows


@pytest.fixture(scope="module")
def expected(marian):
    return {side: marian_ids(marian, side, TEXTS[side]) for side in SIDES}


@pytest.fixture(scope="module")
def tf_tokenizers(marian):
    from keras_transformer.text.sentencepiece_tokenizer import (
        SentencePieceTokenizer,
    )

    return {side: SentencePieceTokenizer(marian["models"][side])
            for side in SIDES}


def test_texts_hit_missing_and_unknown_pieces(marian, expected):
    # The cases the rule is for occur: missing pieces, unknown characters.
    pieces = [piece for text in TEXTS["source"] for piece in
              marian["processors"]["source"].encode(text, out_type=str)]
    assert set(marian["missing"]) <= set(pieces)
    assert sum(row.count(UNK_ID) for row in expected["source"]) >= 10
    assert sum(row.count(UNK_ID) for row in expected["target"]) >= 3


def test_rewritten_model_layout(marian):
    vocabulary = marian["vocabulary"]
    for side in SIDES:
        pieces = _pieces(marian["models"][side])
        original = {p.piece: p for p in _pieces(marian["spm"][side])}
        assert [p.piece for p in pieces[:len(vocabulary)]] == vocabulary
        assert [p.type for p in pieces[:4]] == [
            _PIECE.CONTROL, _PIECE.UNKNOWN, _PIECE.CONTROL, _PIECE.CONTROL]
        for piece in pieces[4:len(vocabulary)]:
            if piece.piece in original:
                assert (piece.type, piece.score) == (
                    original[piece.piece].type, original[piece.piece].score)
            else:  # The other side's piece.
                assert piece.type == _PIECE.UNUSED
        extra = pieces[len(vocabulary):]
        assert {p.piece for p in extra} == {
            p for p in original if p not in vocabulary
            and original[p].type == _PIECE.NORMAL}
        assert all(p.score == original[p.piece].score for p in extra)
        if side == "source":
            assert set(marian["missing"]) <= {p.piece for p in extra}
        model, first = (sentencepiece_model_pb2.ModelProto(),
                        sentencepiece_model_pb2.ModelProto())
        model.ParseFromString(marian["models"][side])
        first.ParseFromString(marian["spm"][side])
        assert model.normalizer_spec == first.normalizer_spec
        assert model.trainer_spec.model_type == first.trainer_spec.model_type
        assert model_vocab_size(marian["models"][side]) == len(vocabulary)
        info = model_info(marian["models"][side])
        assert info["vocab_size"] == len(vocabulary)
        # "pieces" only where the model holds more pieces than ids.
        assert info.get("pieces") == (len(pieces) if extra else None)


def test_vocab_size_and_vocabulary_report_the_model_ids(marian,
                                                        tf_tokenizers):
    # What run checks and the CTranslate2 vocabulary read.
    for side in SIDES:
        tokenizer = tf_tokenizers[side]
        assert tokenizer.vocab_size == len(marian["vocab"]) + 1
        assert tokenizer.vocabulary == marian["vocabulary"]
        assert tokenizer.config["vocab_size"] == tokenizer.vocab_size


@pytest.mark.parametrize("side", SIDES)
def test_tensorflow_ids_match_marian(marian, expected, tf_tokenizers, side):
    ids = tf_tokenizers[side].tokenize(TEXTS[side]).to_list()
    assert ids == expected[side]


def test_saved_model_ids_match_marian(expected, tf_tokenizers, tmp_path):
    # The rule is part of the traced graph (the SavedModel's tokenizer).
    import tensorflow as tf

    path = str(tmp_path / "tokenizer")
    tf.saved_model.save(tf_tokenizers["source"], path)
    loaded = tf.saved_model.load(path)
    ids = loaded.tokenize(tf.constant(TEXTS["source"])).to_list()
    assert ids == expected["source"]


@pytest.mark.parametrize("side", SIDES)
def test_sentencepiece_package_ids_match_marian(marian, expected, side):
    model = marian["models"][side]
    processor = spm.SentencePieceProcessor(model_proto=model)
    size = model_vocab_size(model)
    ids = [known_token_ids(row, size) for row in
           processor.encode(TEXTS[side])]
    assert ids == expected[side]
    # Piece strings looked up in the vocabulary, unknown ones [UNK], as
    # the CTranslate2 runtime does.
    index = {token: i for i, token in enumerate(marian["vocabulary"])}
    by_string = [[index.get(piece, UNK_ID) for piece in row]
                 for row in processor.encode(TEXTS[side], out_type=str)]
    assert by_string == expected[side]
    # The original model cuts every text into the same pieces.
    original = marian["processors"][side]
    assert (processor.encode(TEXTS[side], out_type=str)
            == original.encode(TEXTS[side], out_type=str))


@pytest.mark.parametrize("ids_side, side", [
    ("source", "source"), ("target", "target"),
    # Source ids read by the target model: tokens the target model lacks
    # are unused pieces there, decoded as their text.
    ("source", "target")])
def test_detokenize_matches_marian_decode(marian, expected, tf_tokenizers,
                                          ids_side, side):
    # MarianTokenizer.decode reads a shared vocabulary with the source model.
    hf = marian["hf"]
    rows = expected[ids_side]
    decoded = [hf.decode([marian["order"][i] for i in row],
                         skip_special_tokens=True) for row in rows]
    ours = [text.decode("utf-8") for text in tf_tokenizers[side].detokenize(
        tf_ragged(rows)).numpy()]
    assert_same_text(ours, decoded, rows)


def assert_same_text(ours, decoded, rows):
    """The same texts, but for spaces at the ends of a text with [UNK]s.

    MarianTokenizer strips the text it decodes: a word marker next to an
    `<unk>` it skips leaves no space there; the package keeps it.
    """
    assert [text.strip() for text in ours] == decoded
    for text, row in zip(ours, rows):
        assert text == text.strip() or UNK_ID in row, text
    assert sum(a == b for a, b in zip(ours, decoded)) >= len(decoded) - 3


def tf_ragged(rows):
    import tensorflow as tf

    return tf.ragged.constant(rows, dtype=tf.int32, ragged_rank=1,
                              inner_shape=())


def _echo_search() -> onnx.ModelProto:
    """A token "search" that returns its source ids, score their sum."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["source_ids"], ["target_ids"]),
         helper.make_node("Cast", ["source_ids"], ["ids_float"],
                          to=TensorProto.FLOAT),
         helper.make_node("ReduceSum", ["ids_float", "axes"], ["score"],
                          keepdims=0)],
        "echo",
        [helper.make_tensor_value_info("source_ids", TensorProto.INT32,
                                       ["batch", "length"])],
        [helper.make_tensor_value_info("target_ids", TensorProto.INT32,
                                       ["batch", "length"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT,
                                       ["batch"])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    return helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)])


def test_onnx_text_graph_ids_match_marian(marian, expected, tmp_path):
    from keras_transformer.export.onnx.text_graph import build_text_model

    runs = []
    for side in SIDES:
        model = marian["models"][side]
        text_model = build_text_model(
            _echo_search(), model, model, max_source_tokens=256,
            source_vocab_size=model_vocab_size(model))
        path = tmp_path / f"{side}.onnx"
        onnx.save(text_model, str(path))
        runs.append({"model": str(path), "texts": TEXTS[side]})
    (tmp_path / "job.json").write_text(json.dumps({"runs": runs}), "utf-8")
    subprocess.run([sys.executable, WORKER, str(tmp_path / "job.json"),
                    str(tmp_path / "result.json")], check=True, timeout=120)
    result = json.loads((tmp_path / "result.json").read_text("utf-8"))
    assert result["modules"] == []
    hf = marian["hf"]
    for side, answer in zip(SIDES, result["runs"]):
        assert answer["ids"] == expected[side], side
        if side == "target":  # The echo decodes with the target model.
            assert_same_text(answer["translation"], [
                hf.decode([marian["order"][i] for i in row],
                          skip_special_tokens=True)
                for row in expected[side]], expected[side])


_NODE_SCRIPT = """
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
const request = JSON.parse(await readFile(process.argv[2], "utf-8"));
const { Translator, tokenizerClass } = await import(
  pathToFileURL(request.module).href);
const Tokenizer = tokenizerClass(await import(
  pathToFileURL(request.tokenizer).href));
const answer = {};
for (const [side, { model, texts }] of Object.entries(request.sides)) {
  const bytes = await readFile(model);
  const tokenizer = await Tokenizer.fromSentencePiece(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  const translator = new Translator(request.manifest[side], {}, tokenizer,
                                    tokenizer, null, 100000);
  answer[side] = translator.sourceIds(texts)
    .map((row) => row.slice(0, row.indexOf(request.manifest[side].end_id)));
  tokenizer.dispose();
}
process.stdout.write(JSON.stringify(answer));
"""


def test_web_translator_ids_match_marian(marian, expected, tmp_path):
    from keras_transformer.export.web.export import RUNTIME_FILES, STATIC_DIR

    package, path = RUNTIME_FILES["web-tokenizers.js"]
    installed = os.path.join(WEB, "node_modules", package, path)
    if shutil.which("node") is None or not os.path.isfile(installed):
        pytest.skip("needs Node.js and the npm packages of export/web")
    # Copied beside each other as a web export holds them (the tokenizer
    # as a CommonJS file, the module as an ES module).
    tokenizer = shutil.copyfile(installed, tmp_path / "web-tokenizers.js")
    module = shutil.copyfile(os.path.join(STATIC_DIR, "translator.js"),
                             tmp_path / "translator.mjs")
    sides = {}
    manifest = {}
    for side in SIDES:
        model = tmp_path / f"{side}.model"
        model.write_bytes(marian["models"][side])
        sides[side] = {"model": str(model), "texts": TEXTS[side]}
        manifest[side] = {"max_source_tokens": 256, "end_id": END_ID,
                          "pad_id": PAD_ID, "unk_id": UNK_ID,
                          "source_vocab_size": model_vocab_size(
                              marian["models"][side])}
    request = {"module": str(module), "tokenizer": str(tokenizer),
               "sides": sides, "manifest": manifest}
    (tmp_path / "request.json").write_text(json.dumps(request), "utf-8")
    script = tmp_path / "ids.mjs"
    script.write_text(_NODE_SCRIPT, "utf-8")
    process = subprocess.run(
        ["node", str(script), str(tmp_path / "request.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr[-2000:]
    answer = json.loads(process.stdout)
    for side in SIDES:
        assert answer[side] == expected[side], side


def test_known_difference_unknown_text_of_the_other_side(marian,
                                                         tf_tokenizers):
    # "ß" is a piece of the target model only: the source model does not
    # know it (SentencePiece's <unk>), MarianTokenizer looks its text up in
    # the shared vocab.json and finds the target's token; the package reads
    # [UNK] (see keras_transformer.marian.tokenizers).
    source = marian["processors"]["source"]
    assert source.piece_to_id("ß") == source.unk_id()
    (hf_row,) = marian_ids(marian, "source", ["the straße"])
    ours = tf_tokenizers["source"].tokenize(["the straße"]).to_list()[0]
    found = [i for i, (a, b) in enumerate(zip(hf_row, ours)) if a != b]
    assert len(hf_row) == len(ours) and len(found) == 1
    assert marian["vocabulary"][hf_row[found[0]]] == "ß"
    assert ours[found[0]] == UNK_ID
    # Piece strings looked up in the vocabulary (the CTranslate2 runtime)
    # find the target's token, as MarianTokenizer does.
    processor = spm.SentencePieceProcessor(model_proto=marian["models"][
        "source"])
    index = {token: i for i, token in enumerate(marian["vocabulary"])}
    assert [index.get(piece, UNK_ID) for piece in processor.encode(
        "the straße", out_type=str)] == hf_row


def test_known_token_ids():
    assert known_token_ids([0, 5, 7, 8, 120], 8) == [0, 5, 7, UNK_ID, UNK_ID]
    assert known_token_ids([], 8) == []
    with pytest.raises(ValueError, match="`vocab_size`"):
        known_token_ids([1], 0)


def test_bpe_and_other_models_are_refused(marian):
    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus("source")), model_writer=writer,
        vocab_size=120, model_type="bpe", hard_vocab_limit=False,
        minloglevel=3)
    with pytest.raises(ValueError, match="`spm_proto` must be a unigram"):
        rewrite_sentencepiece(writer.getvalue(), marian["vocabulary"])


@pytest.mark.parametrize("spm_proto, vocabulary, error, match", [
    ("model", None, TypeError, "`spm_proto` must be bytes"),
    (b"\x00\x01not a model", None, ValueError, "`spm_proto` must be a"),
    (None, "[PAD]", TypeError, "`vocabulary` must be a list"),
    (None, ["[PAD]", "[UNK]", "[START]", "[END]", 5], TypeError,
     r"vocabulary\[4\]=5"),
    (None, ["[PAD]", "[UNK]", "[START]", "[END]", ""], ValueError,
     r"vocabulary\[4\]=''"),
    (None, ["[UNK]", "[PAD]", "[START]", "[END]", "a"], ValueError,
     "`vocabulary` must start with"),
    (None, list(RESERVED_TOKENS), ValueError, "`vocabulary` must start"),
    (None, [*RESERVED_TOKENS, "▁a", "b", "▁a"], ValueError,
     "`vocabulary` must hold each token once. Received: vocabulary with "
     "'▁a' twice"),
])
def test_argument_errors(marian, spm_proto, vocabulary, error, match):
    spm_proto = marian["spm"]["source"] if spm_proto is None else spm_proto
    vocabulary = marian["vocabulary"] if vocabulary is None else vocabulary
    with pytest.raises(error, match=match):
        rewrite_sentencepiece(spm_proto, vocabulary)


def test_model_without_one_unknown_piece_is_refused(marian):
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(marian["spm"]["source"])
    model.pieces[0].type = _PIECE.CONTROL
    with pytest.raises(ValueError, match="`spm_proto` must have one unknown"):
        rewrite_sentencepiece(model.SerializeToString(),
                              marian["vocabulary"])
