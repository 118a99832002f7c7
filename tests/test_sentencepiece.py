"""SentencePiece models and `SentencePieceTokenizer` (tensorflow-text)."""

import base64
import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow as tf
from sentencepiece import sentencepiece_model_pb2

from keras_transformer.text import sentencepiece_model as sp_model
from keras_transformer.text.sentencepiece_model import (
    learn_sentencepiece,
    learn_tokenizer_models,
    model_info,
    model_vocab_size,
    with_normalization,
)
from keras_transformer.text.sentencepiece_tokenizer import (
    SentencePieceTokenizer,
)
from keras_transformer.text.special_tokens import RESERVED_TOKENS, UNK_ID

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SOURCES = [
    "Die Größe des Hauses ist beeindruckend.",
    "Ein Café in der Straße, déjà vu!",
    "Ich möchte eine Tasse Kaffee, bitte.",
    "Die Katze schläft auf dem Sofa.",
    "Wir fahren morgen nach München.",
    "Ｆｕｌｌ－ｗｉｄｔｈ ｔｅｘｔ： ＡＢＣ １２３",
] * 8
TARGETS = [
    "我喜欢猫。",
    "今天天气很好：我们去公园吧！",
    "東京は晴れです。",
    "مرحبا بالعالم",
    "שלום עולם",
    "The size of the house is impressive.",
    "👍🏽 ok",
] * 8
# Round trips: (text, what the source tokenizer gives back, what the target
# tokenizer gives back). The second half has characters not in training.
ROUND_TRIPS = [
    ("Größe café déjà vu", "Größe café déjà vu", "Größe café déjà vu"),
    ("我喜欢猫", "我喜欢猫", "我喜欢猫"),
    ("東京は晴れです。", "東京は晴れです。", "東京は晴れです。"),
    ("مرحبا بالعالم", "مرحبا بالعالم", "مرحبا بالعالم"),
    ("שלום עולם", "שלום עולם", "שלום עולם"),
    ("👍🏽 ok", "👍🏽 ok", "👍🏽 ok"),
    ("ｆｕｌｌ：猫", "full:猫", "ｆｕｌｌ：猫"),
    ("  Ωμέγα   ᚠᛇᚻ 🦄 ", "Ωμέγα ᚠᛇᚻ 🦄", "Ωμέγα ᚠᛇᚻ 🦄"),
    ("鬱 Ærøskøbing 𝔘", "鬱 Ærøskøbing U", "鬱 Ærøskøbing 𝔘"),
    ("نحن نحبّ القطط", "نحن نحبّ القطط", "نحن نحبّ القطط"),
    ("יְרוּשָׁלַיִם", "יְרוּשָׁלַיִם", "יְרוּשָׁלַיִם"),
    ("👨‍👩‍👧 🇩🇪 ❤️", "👨‍👩‍👧 🇩🇪 ❤️", "👨‍👩‍👧 🇩🇪 ❤️"),
]


@pytest.fixture(scope="module")
def protos():
    """The models of the tests: joint unigram and separate BPE."""
    source, target = learn_tokenizer_models(SOURCES, TARGETS, 400)
    bpe_source, bpe_target = learn_tokenizer_models(
        SOURCES, TARGETS, 400, model_type="bpe", joint=False)
    return {"source": source, "target": target, "bpe_source": bpe_source,
            "bpe_target": bpe_target}


@pytest.fixture(scope="module")
def tokenizers(protos):
    return {name: SentencePieceTokenizer(proto)
            for name, proto in protos.items()}


def _pieces(model_proto):
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    return [piece.piece for piece in model.pieces]


def _texts(tensor):
    return [text.decode("utf-8") for text in tensor.numpy()]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(vocab_size=260), ValueError, "vocab_size"),
    (dict(vocab_size="8000"), TypeError, "vocab_size"),
    (dict(vocab_size=True), TypeError, "vocab_size"),
    (dict(vocab_size=270), ValueError, r"vocab_size` must be >= \d+ for"),
    (dict(model_type="word"), ValueError, "model_type"),
    (dict(normalization="nfc"), ValueError, "normalization"),
    (dict(max_sentences=0), ValueError, "max_sentences"),
    (dict(max_sentences=1.5), TypeError, "max_sentences"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(character_coverage=0.0), ValueError, "character_coverage"),
    (dict(character_coverage=1.5), ValueError, "character_coverage"),
    (dict(texts="one string"), TypeError, "texts"),
    (dict(texts=[b"bytes"]), TypeError, "texts"),
    (dict(texts=["", "  ", "\t"]), ValueError, "`texts` must contain a non"),
])
def test_learn_sentencepiece_argument_errors(kwargs, error, match):
    kwargs = {"texts": SOURCES + TARGETS, "vocab_size": 400, **kwargs}
    with pytest.raises(error, match=match):
        learn_sentencepiece(**kwargs)


def test_other_argument_errors(protos):
    with pytest.raises(TypeError, match="joint"):
        learn_tokenizer_models(SOURCES, TARGETS, 400, joint="yes")
    with pytest.raises(TypeError, match="sources"):
        learn_tokenizer_models("abc", TARGETS, 400)
    with pytest.raises(ValueError, match="rule"):
        with_normalization(protos["source"], "nfc")
    for function in (model_info, SentencePieceTokenizer):
        with pytest.raises(ValueError, match="model_proto"):
            function(b"not a model")
        with pytest.raises(TypeError, match="model_proto"):
            function("not bytes")
    # A model with SentencePiece's default ids (<unk>=0, <s>=1, </s>=2).
    writer = __import__("io").BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SOURCES), model_writer=writer,
        vocab_size=60, hard_vocab_limit=False, minloglevel=3)
    with pytest.raises(ValueError, match="model_proto"):
        SentencePieceTokenizer(writer.getvalue())


def test_too_small_vocab_names_the_minimum():
    texts = ["abc", "xyz"]  # 6 characters + "▁": 4 + 256 + 7 = 267.
    with pytest.raises(ValueError, match=r"vocab_size` must be >= 267"):
        learn_sentencepiece(texts, vocab_size=266)
    assert model_info(learn_sentencepiece(texts, 267))["vocab_size"] == 267


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_reserved_ids_and_byte_pieces(model_type):
    proto = learn_sentencepiece(SOURCES + TARGETS, 400, model_type)
    pieces = _pieces(proto)
    assert tuple(pieces[:4]) == RESERVED_TOKENS
    assert pieces[4:260] == [f"<0x{byte:02X}>" for byte in range(256)]
    assert model_info(proto) == {
        "vocab_size": len(pieces), "model_type": model_type,
        "normalization": "nmt_nfkc", "byte_fallback": True}
    processor = spm.SentencePieceProcessor(model_proto=proto)
    assert (processor.pad_id(), processor.unk_id(), processor.bos_id(),
            processor.eos_id()) == (0, 1, 2, 3)
    assert processor.decode([UNK_ID]) == ""  # unk_surface is empty.


def test_unigram_and_bpe_differ_and_vocab_size_is_an_upper_bound():
    latin = " ".join(SOURCES[:5]).split()
    texts = [f"{word} {word}s {word}ing" for word in latin] + SOURCES[:5]
    sizes = {}
    for model_type in ("unigram", "bpe"):
        small = learn_sentencepiece(texts, 320, model_type)
        large = learn_sentencepiece(texts, 5000, model_type)
        assert model_info(small)["vocab_size"] == 320
        sizes[model_type] = model_info(large)["vocab_size"]
        assert 320 < sizes[model_type] < 5000, model_type
        assert model_info(large)["model_type"] == model_type
    assert (_pieces(learn_sentencepiece(texts, 320, "unigram"))
            != _pieces(learn_sentencepiece(texts, 320, "bpe")))


def test_sampling_is_seeded_and_bounded():
    # Line i holds the one CJK character U+4E00 + i: a sample of n lines
    # gives a model with exactly n of those characters.
    texts = [f"line {chr(0x4E00 + i)}" for i in range(300)]

    def cjk(proto):
        return {p for p in _pieces(proto) if "\u4e00" <= p[-1] <= "\u9fff"}

    first = learn_sentencepiece(texts, 400, max_sentences=20, seed=1)
    assert first == learn_sentencepiece(texts, 400, max_sentences=20, seed=1)
    other = learn_sentencepiece(texts, 400, max_sentences=20, seed=2)
    assert len(cjk(first)) == len(cjk(other)) == 20
    assert cjk(first) != cjk(other)
    every = learn_sentencepiece(texts, 600, max_sentences=300)
    assert len(cjk(every)) == 300


def test_joint_models_share_ids(protos, tokenizers):
    source, target = protos["source"], protos["target"]
    assert _pieces(source) == _pieces(target)
    assert model_info(source)["normalization"] == "nmt_nfkc"
    assert model_info(target)["normalization"] == "as_written"
    text = ["Größe café 我喜欢猫 👍🏽"]
    assert (tokenizers["source"].tokenize(text).to_list()
            == tokenizers["target"].tokenize(text).to_list())
    # NFKC-normalized sources: "Ｆｕｌｌ" was learned as "Full".
    assert "▁Full" in _pieces(source) or "F" in _pieces(source)
    assert "Ｆ" not in _pieces(source)


def test_separate_models(protos):
    source, target = protos["bpe_source"], protos["bpe_target"]
    assert "猫" in _pieces(target) and "猫" not in _pieces(source)
    assert "ö" in _pieces(source) and "ö" not in _pieces(target)
    assert model_info(source)["normalization"] == "nmt_nfkc"
    assert model_info(target)["normalization"] == "as_written"


def test_with_normalization_keeps_pieces(protos):
    target = protos["target"]
    for rule in ("nmt_nfkc", "nfkc", "as_written", "identity"):
        proto = with_normalization(target, rule)
        assert _pieces(proto) == _pieces(target)
        spec = sentencepiece_model_pb2.ModelProto.FromString(
            proto).normalizer_spec
        assert spec.name == rule
        assert (len(spec.precompiled_charsmap) > 0) == (rule != "identity")
        processor = spm.SentencePieceProcessor(model_proto=proto)
        as_written = rule in ("as_written", "identity")
        expected = "ｆｕｌｌ：" if as_written else "full:"
        assert processor.decode(processor.encode("  ｆｕｌｌ：")) == expected
        # Whitespace of any kind is a space under the two rules we use.
        blank = processor.encode(" \t\n\u3000\u00a0\u200b ")
        assert (blank == []) == (rule in ("nmt_nfkc", "as_written"))


@pytest.mark.parametrize("name", ["source", "target", "bpe_source",
                                  "bpe_target"])
def test_round_trips(tokenizers, name):
    tokenizer = tokenizers[name]
    texts = [text for text, _, _ in ROUND_TRIPS]
    column = 2 if name.endswith("target") else 1
    ids = tokenizer.tokenize(texts)
    assert _texts(tokenizer.detokenize(ids)) == [
        row[column] for row in ROUND_TRIPS]
    flat = ids.flat_values.numpy()
    assert UNK_ID not in flat
    # Unseen characters are spelled in byte pieces (ids 4-259).
    unseen = tokenizer.tokenize([ROUND_TRIPS[7][0]]).flat_values.numpy()
    assert ((unseen >= 4) & (unseen < 260)).any()


def test_target_keeps_full_width_colon(tokenizers):
    text = ["比分是２：１，ｆｕｌｌ！"]
    assert _texts(tokenizers["target"].detokenize(
        tokenizers["target"].tokenize(text))) == text
    assert _texts(tokenizers["source"].detokenize(
        tokenizers["source"].tokenize(text))) == ["比分是2:1,full!"]


def test_invalid_utf8_becomes_replacement_characters(tokenizers, protos):
    strings = [b"a\xffb", b"\xe6\x88 x", b"\xc3(\xed\xa0\x80"]
    expected = ["a\ufffdb", "\ufffd\ufffd x", "\ufffd(\ufffd\ufffd\ufffd"]
    for name, tokenizer in tokenizers.items():
        ids = tokenizer.tokenize(strings)
        assert _texts(tokenizer.detokenize(ids)) == expected, name
        processor = spm.SentencePieceProcessor(model_proto=protos[name])
        assert ids.to_list() == processor.encode(strings)


def test_empty_and_blank_strings(tokenizers):
    for name, tokenizer in tokenizers.items():
        ids = tokenizer.tokenize(["", " ", "    "])
        assert ids.to_list() == [[], [], []], name
        empty = tokenizer.tokenize(tf.constant([], tf.string))
        assert isinstance(empty, tf.RaggedTensor)
        assert empty.shape[0] == 0 and empty.dtype == tf.int32
        assert tokenizer.detokenize(empty).shape == (0,)
    # nmt_nfkc and as_written turn tabs, newlines and exotic spaces into
    # spaces.
    blank = [" \t\n\r\u3000\u00a0\u200b\u2028 "]
    assert tokenizers["source"].tokenize(blank).to_list() == [[]]
    assert tokenizers["target"].tokenize(blank).to_list() == [[]]


def test_detokenize_skips_reserved_ids(tokenizers):
    tokenizer = tokenizers["target"]
    cat, ok = (tokenizer.tokenize(["猫", "ok"]).to_list())
    rows = [[2, *cat, 3, *ok, 0], [0, 2, *ok, 0, *cat, 0, 0],
            [*cat, 1, 10_000, -7, *ok], [3, *cat, 0, 0, 0, 0]]
    width = max(len(row) for row in rows)
    dense = [row + [0] * (width - len(row)) for row in rows]
    expected = ["猫", "ok 猫", "猫 ok", ""]  # Both pieces start with "▁".
    for dtype in (np.int32, np.int64):
        assert _texts(tokenizer.detokenize(np.array(dense, dtype))) == (
            expected)
        assert _texts(tokenizer.detokenize(
            tf.ragged.constant(rows, dtype))) == expected
    pieces = tokenizer.lookup(np.array(dense[1:2], np.int64)).to_list()
    assert pieces == [[b"[PAD]", b"[START]"]
                      + [tokenizer.vocabulary[i].encode() for i in ok]
                      + [b"[PAD]"] + [tokenizer.vocabulary[i].encode()
                                      for i in cat]]
    unknown = tokenizer.lookup(tf.ragged.constant([[-1, 10_000]]))
    assert unknown.to_list() == [[b"[UNK]", b"[UNK]"]]


def test_graph_and_dataset_use(tokenizers):
    tokenizer = tokenizers["source"]
    texts = [text for text, _, _ in ROUND_TRIPS]

    @tf.function
    def round_trip(strings):
        return tokenizer.detokenize(tokenizer.tokenize(strings))

    expected = [row[1] for row in ROUND_TRIPS]
    assert _texts(round_trip(tf.constant(texts))) == expected
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(5)
    dataset = dataset.map(tokenizer.tokenize).map(tokenizer.detokenize)
    assert [t.decode() for b in dataset for t in b.numpy()] == expected


@pytest.mark.parametrize("name", ["source", "target", "bpe_source"])
def test_learned_models_give_an_id_to_every_piece(protos, tokenizers, name):
    # The [UNK] rule of contract.known_token_ids never applies to them:
    # no piece beyond the ids, and no extra op in the tokenize graph.
    pieces = _pieces(protos[name])
    assert model_vocab_size(protos[name]) == len(pieces)
    assert tokenizers[name].vocab_size == len(pieces)
    assert "pieces" not in model_info(protos[name])
    graph = tokenizers[name].tokenize.get_concrete_function().graph
    assert not {"Less", "SelectV2", "Select"} & {
        op.type for op in graph.get_operations()}


def test_recorded_vocab_size_limits_the_ids(protos):
    # trainer_spec.vocab_size below the piece count: later pieces read as
    # [UNK] (a rewritten Marian model, keras_transformer.marian.tokenizers).
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(protos["source"])
    size, limit = len(model.pieces), 300
    model.trainer_spec.vocab_size = limit
    fewer = model.SerializeToString()
    assert model_vocab_size(fewer) == limit
    assert model_info(fewer)["pieces"] == size
    tokenizer = SentencePieceTokenizer(fewer)
    assert tokenizer.vocabulary == _pieces(protos["source"])[:limit]
    texts = ["Die Größe des Hauses", "我喜欢猫 👍🏽", ""]
    plain = spm.SentencePieceProcessor(model_proto=fewer).encode(texts)
    expected = [[i if i < limit else UNK_ID for i in row] for row in plain]
    assert expected != plain
    assert tokenizer.tokenize(texts).to_list() == expected
    model.ClearField("trainer_spec")  # vocab_size unset: every piece.
    assert model_vocab_size(model.SerializeToString()) == size
    model.ParseFromString(protos["source"])
    model.trainer_spec.vocab_size = len(RESERVED_TOKENS)
    with pytest.raises(ValueError, match="`model_proto` must give more"):
        SentencePieceTokenizer(model.SerializeToString())


def test_files_and_properties(tokenizers, protos, tmp_path):
    tokenizer = tokenizers["target"]
    path = tmp_path / "target.model"
    tokenizer.save(path)
    assert path.read_bytes() == protos["target"] == tokenizer.model_proto
    loaded = SentencePieceTokenizer.from_file(path)
    assert loaded.vocabulary == _pieces(protos["target"])
    assert loaded.vocab_size == len(loaded.vocabulary)
    assert loaded.config == model_info(protos["target"])
    assert loaded.config["normalization"] == "as_written"


_SAVED_MODEL_SCRIPT = textwrap.dedent("""
    import base64, json, sys
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (registers the ops)
    request = json.load(sys.stdin)
    module = tf.saved_model.load(request["path"])
    strings = [base64.b64decode(s) for s in request["strings"]]
    ids = module.tokenize(tf.constant(strings))
    dense = ids.to_tensor()
    answer = {
        "ids": ids.to_list(),
        "text": [t.decode() for t in module.detokenize(dense).numpy()],
        "text64": [t.decode() for t in module.detokenize(
            tf.cast(ids, tf.int64)).numpy()],
        "pieces": [[p.decode() for p in row] for row in module.lookup(
            tf.cast(dense, tf.int64)).to_list()],
        "modules": [m for m in ("keras_transformer", "sentencepiece")
                    if m in sys.modules],
    }
    json.dump(answer, sys.stdout)
""")


def test_saved_model_round_trip(tokenizers, tmp_path):
    tokenizer = tokenizers["source"]
    path = str(tmp_path / "tokenizer")
    tf.saved_model.save(tokenizer, path)
    strings = [text.encode() for text, _, _ in ROUND_TRIPS] + [b"x\xffy"]
    request = {"path": path,
               "strings": [base64.b64encode(s).decode() for s in strings]}
    answer = json.loads(_run([sys.executable, "-c", _SAVED_MODEL_SCRIPT],
                             request))
    ids = tokenizer.tokenize(strings)
    assert answer["ids"] == ids.to_list()
    expected = _texts(tokenizer.detokenize(ids))
    assert answer["text"] == answer["text64"] == expected
    assert answer["pieces"] == [
        [tokenizer.vocabulary[i] for i in row] for row in ids.to_list()]
    assert answer["modules"] == []


# Beyond this many bytes the `sentencepiece` package (0.2.x) may cut a text
# of a unigram model differently from tensorflow-text and
# onnxruntime-extensions (which always agree): where two segmentations
# score within ~1e-3 of each other, the package's Viterbi search, whose
# sums reach ~1e3 in a text of a few kB, sometimes keeps the lower-scoring
# one (float32 rounding); tensorflow-text's segmentation is the better one.
LONG = 1500


def parity_strings(count=1200, seed=1234):
    """Test strings over many scripts, whitespace and malformed UTF-8.

    No NUL byte: onnxruntime-extensions cuts a string at its first NUL.
    """
    rng = random.Random(seed)
    pools = {
        "latin": "abcdefghijklmnopqrstuvwxyzABCXYZäöüßéèêàçñøåœÆÅÉÎÕ",
        "chinese": "我喜欢猫狗你好世界中文汉字学习今天气很謝體鬱龘",
        "japanese": "東京は晴れですカタカナひらがなの日本語を話しますー",
        "arabic": "مرحبابالعالمكيفحالكاليومشكرا\u064b\u064e\u0650\u0651",
        "hebrew": "שלוםעולםמהשלומךתודהרבה\u05b0\u05b7\u05bc",
        "punctuation": ".,:;!?()\"'“”«»—–…：，。！？（）、٫",
        "compatibility": "ｆｕｌｌ１２３ﬁ①㍻Ⅻ𝔘ＡＢﾊﾝｶｸ",
        "digits": "0123456789٠١٢",
    }
    emoji = ["👍", "👍🏽", "👨\u200d👩\u200d👧", "🇩🇪", "❤\ufe0f", "🦄", "😀"]
    spaces = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u200b",
              "\u2028", "\v", "\f", "\u2581", " \t "]
    malformed = [b"\xff", b"\xfe", b"\xc3", b"\xe6\x88", b"\x80", b"\xbf\xbf",
                 b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                 b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80"]

    def word(kind):
        if kind == "emoji":
            return "".join(rng.choices(emoji, k=rng.randint(1, 3)))
        return "".join(rng.choices(pools[kind], k=rng.randint(1, 8)))

    kinds = [*pools, "emoji"]
    strings = [b"", b" ", b"\t\n", "\u3000".encode(), b"a", "：".encode()]
    while len(strings) < count:
        mixed = rng.random() < 0.4
        kind = rng.choice(kinds)
        size = rng.choices([rng.randint(1, 12), 100, 300, 3000],
                           weights=[90, 6, 3, 1])[0]  # Up to ~50 kB.
        parts = []
        for _ in range(size):
            parts.append(word(rng.choice(kinds) if mixed else kind))
            parts.append(rng.choice(spaces) if rng.random() < 0.3 else " ")
        data = bytearray("".join(parts[rng.randint(0, 1):]).encode())
        if rng.random() < 0.25:  # Malformed UTF-8, maybe inside a character.
            for _ in range(rng.randint(1, 3)):
                at = rng.randint(0, len(data))
                data[at:at] = rng.choice(malformed)
        if rng.random() < 0.05:  # A character cut in half at the end.
            data = data[:-1]
        strings.append(bytes(data))
    return strings


def _score(model_proto, ids):
    """The unigram score of a segmentation (byte pieces left out)."""
    model = sentencepiece_model_pb2.ModelProto.FromString(model_proto)
    scores = np.array([piece.score for piece in model.pieces], np.float64)
    ids = np.array(ids, np.int64)
    return scores[ids[ids >= 260]].sum()


def _run(command, request):
    result = subprocess.run(
        command, input=json.dumps(request), capture_output=True, text=True,
        timeout=120, cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_parity_with_sentencepiece_and_onnxruntime_extensions(
        tokenizers, protos):
    strings = parity_strings()
    assert len(strings) >= 1000 and b"\x00" not in b"".join(strings)
    lengths = [len(s) for s in strings]
    assert sum(n <= LONG for n in lengths) >= 1000
    assert sum(500 < n <= LONG for n in lengths) >= 20
    assert sum(n > 20_000 for n in lengths) >= 5
    expected, decode, texts = {}, {}, {}
    for name, tokenizer in tokenizers.items():
        ids = tokenizer.tokenize(strings)
        processor = spm.SentencePieceProcessor(model_proto=protos[name])
        expected[name] = ids.to_list()
        python = processor.encode(strings)
        for i, n in enumerate(lengths):
            if n <= LONG or name.startswith("bpe"):
                assert expected[name][i] == python[i], (name, i)
            else:  # Unigram: the same ids or a better-scoring segmentation.
                assert (_score(protos[name], expected[name][i])
                        >= _score(protos[name], python[i])), (name, i)
        decode[name] = expected[name]
        texts[name] = _texts(tokenizer.detokenize(ids))
        assert texts[name] == processor.decode(expected[name]), name
    request = {
        "models": {n: base64.b64encode(p).decode() for n, p in protos.items()},
        "strings": [base64.b64encode(s).decode() for s in strings],
        "decode": decode,
        "vocab": {n: t.vocab_size for n, t in tokenizers.items()},
    }
    answer = json.loads(_run(
        [sys.executable, os.path.join(HERE, "sentencepiece_worker.py")],
        request))
    # onnxruntime_extensions imports transformers where it is installed
    # (the `marian` extra), and transformers imports sentencepiece: the
    # ops are the extensions' own code either way.
    assert set(answer["modules"]) <= {"sentencepiece"}
    for name in protos:
        assert answer["ids"][name] == expected[name], name
        decoded = [base64.b64decode(t).decode("utf-8")
                   for t in answer["decoded"][name]]
        assert decoded == texts[name], name
        probes = answer["probes"][name]
        assert "error" in probes["batch_2d"]  # One sequence at a time.
        assert probes["one_row_2d"]["shape"] == [1]
        assert probes["unk_id"]["text"] == [""]
        assert probes["lone_byte"]["text"] == ["\ufffd"]
        assert "error" in probes["out_of_range"]


def test_model_module_imports_no_tensorflow():
    # Stub packages skip the package's __init__ (which imports TensorFlow).
    script = textwrap.dedent("""
        import sys, types
        for name in ("keras_transformer", "keras_transformer.text"):
            package = types.ModuleType(name)
            package.__path__ = [name.replace(".", "/")]
            sys.modules[name] = package
        import keras_transformer.text.sentencepiece_model as model
        model.learn_sentencepiece(["a b c"], 300)
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    assert result.stderr == ""  # Training is quiet.
    assert sp_model.MIN_VOCAB_SIZE == 261


def test_survives_clearing_tensorflow_kernel_caches(protos):
    # tf.random.set_seed clears the eager kernel caches, which own the
    # model resources of tensorflow-text tokenizers made eagerly.
    import keras

    tokenizer = SentencePieceTokenizer(protos["source"])
    before = tokenizer.tokenize(["hello world"]).to_list()
    text = tokenizer.detokenize(tokenizer.tokenize(["hello world"]))
    keras.utils.set_random_seed(3)
    assert tokenizer.tokenize(["hello world"]).to_list() == before
    assert tokenizer.detokenize(
        tokenizer.tokenize(["hello world"])).numpy().tolist() == \
        text.numpy().tolist()
