"""CTranslate2 export: greedy ids, log-probs and texts equal the Translator's.

The runtime (`export/ctranslate2/runtime.py`) is also run in a process
where TensorFlow and Keras cannot be imported, with the README's examples.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ctranslate2")
pytest.importorskip("sentencepiece")

import tensorflow as tf  # noqa: E402

from keras_transformer.config import TransformerConfig  # noqa: E402
from keras_transformer.contract import (
    SearchSettings,  # noqa: E402
    gnmt_penalty,  # noqa: E402
)
from keras_transformer.export import verification_texts  # noqa: E402
from keras_transformer.export.ctranslate2 import (  # noqa: E402
    convert as ct2_export,
)
from keras_transformer.export.ctranslate2.runtime import (  # noqa: E402
    CTranslate2Translator,
)
from keras_transformer.model import build_transformer  # noqa: E402
from keras_transformer.text.sentencepiece_model import (  # noqa: E402
    learn_tokenizer_models,
)
from keras_transformer.text.sentencepiece_tokenizer import (  # noqa: E402
    SentencePieceTokenizer,
)
from keras_transformer.translator import Translator  # noqa: E402
from tests.readme import python_block  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
README_DIR = "exported/ctranslate2"
# The README's examples, as written there (README_DIR is replaced).
README_RUNTIME = python_block('CTranslate2Translator("exported/ctranslate2")')
README_RAW = python_block("translator.translate_batch(")
# Runs the runtime, the README's examples, and reports what it imported.
_WORKER = '''
import json, sys

# `import tensorflow` (or keras) fails, as where it is not installed.
for name in ("tensorflow", "keras", "tensorflow_text"):
    sys.modules[name] = None
try:
    import tensorflow  # noqa: F401
    raise SystemExit("tensorflow was imported")
except ImportError:
    pass
model_dir, texts = sys.argv[1], json.loads(sys.argv[2])
from keras_transformer.export.ctranslate2.runtime import CTranslate2Translator

ct2 = CTranslate2Translator(model_dir)
answer = {"greedy": ct2(texts, greedy=True), "beam": ct2(texts),
          "exact": CTranslate2Translator(model_dir, exact_beam=True)(texts),
          "empty": ct2([]), "single": ct2(texts[0])}
runtime, raw = {}, {}
exec(sys.argv[3], runtime)
exec(sys.argv[4], raw)
answer["readme"] = {"pairs": runtime["pairs"], "best": runtime["best"],
                    "texts": raw["texts"],
                    "translations": raw["translations"]}
answer["modules"] = sorted(
    name for name, module in sys.modules.items() if module is not None
    and name.split(".")[0] in ("tensorflow", "keras", "tensorflow_text"))
print(json.dumps(answer))
'''
LONG_TEXT = " ".join(["nine hundred and ninety-nine"] * 60)

# A small parallel corpus for the untrained-model tests.
_WORDS = ("one two three four five six seven eight nine ten eleven twelve "
          "twenty thirty forty fifty hundred and").split()
_GERMAN = ("eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf "
           "zwanzig dreißig vierzig fünfzig hundert und").split()


@pytest.fixture(scope="module")
def sentencepiece_tokenizers():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, len(_WORDS), size=rng.integers(1, 6))
            for _ in range(200)]
    source, target = learn_tokenizer_models(
        [" ".join(_WORDS[i] for i in row) for row in rows],
        [" ".join(_GERMAN[i] for i in row) for row in rows], vocab_size=320)
    return SentencePieceTokenizer(source), SentencePieceTokenizer(target)


def _config(tokenizers, **overrides):
    values = dict(num_layers=1, d_model=16, num_heads=2, d_ff=32,
                  max_length=16)
    values.update(overrides)
    return TransformerConfig.from_preset(
        "tiny", source_vocab_size=tokenizers[0].vocab_size,
        target_vocab_size=tokenizers[1].vocab_size, **values)


@pytest.fixture
def exported(ctranslate2_export):
    """The float32 export of the trained run, verified: written once per
    pytest run (`tests/export/conftest.py`)."""
    return ctranslate2_export


@pytest.mark.slow
def test_float32_export_matches_translator(exported, translator,
                                           trained_run):
    report = exported
    texts = verification_texts(trained_run)
    assert report["sentences"] == len(texts) >= 50
    assert report["identical"] == report["sentences"]
    assert report["text_identical"] == report["sentences"]
    assert report["max_log_prob_difference"] < 1e-4
    assert report["max_score_difference"] < 1e-3
    assert report["quantization"] == "float32"
    path = report["path"]
    assert {"model.bin", "config.json", "source.model", "target.model",
            "keras_transformer.json"} <= set(os.listdir(path))
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert (config["bos_token"], config["eos_token"], config["unk_token"],
            config["decoder_start_token"]) == (
        "[START]", "[END]", "[UNK]", "[START]")
    assert config["add_source_eos"] is False
    assert config["layer_norm_epsilon"] == pytest.approx(1e-6)
    with open(os.path.join(path, "keras_transformer.json"),
              encoding="utf-8") as f:
        ours = json.load(f)
    assert ours["max_source_tokens"] == translator.source_limit
    assert ours["max_length"] == translator.max_length
    assert ours["target_limit"] == translator.target_limit
    assert ours["search_settings"] == translator.settings.to_dict()
    assert [ours[f"{name}_id"] for name in ("pad", "unk", "start", "end")
            ] == [0, 1, 2, 3]
    assert ours["end_token"] == "[END]"
    for side in ("source", "target"):
        with open(os.path.join(path, f"{side}.model"), "rb") as f:
            assert f.read() == getattr(translator,
                                       f"{side}_tokenizer").model_proto


@pytest.mark.slow
def test_int8_export_is_smaller_and_mostly_agrees(exported, translator,
                                                  trained_run, tmp_path):
    small = ct2_export.export_ctranslate2(
        translator, tmp_path / "int8", quantization="int8",
        texts=verification_texts(trained_run))
    assert small["quantization"] == "int8"
    size = os.path.getsize(os.path.join(small["path"], "model.bin"))
    assert size < 0.5 * os.path.getsize(
        os.path.join(exported["path"], "model.bin"))
    # int8 rounding may flip a close call; most sentences stay identical.
    assert small["agreement"] >= 0.8
    assert small["text_agreement"] >= 0.8


@pytest.mark.slow
def test_concatenated_sinusoids_are_caught(translator, trained_run,
                                           tmp_path):
    # The converter must carry the paper's interleaved table: a table with
    # sines and cosines concatenated gives other translations.
    layer = translator.model.get_layer("positional_encoding")
    table = layer.table
    layer.table = np.concatenate([table[:, 0::2], table[:, 1::2]], axis=1)
    try:
        with pytest.raises(ValueError, match="min_agreement"):
            ct2_export.export_ctranslate2(
                translator, tmp_path / "bad",
                texts=verification_texts(trained_run))
    finally:
        layer.table = table


@pytest.mark.slow
def test_runtime_follows_the_input_rules(exported, translator,
                                         trained_run):
    ct2 = CTranslate2Translator(exported["path"])
    assert ct2([]) == [] and ct2([], greedy=True) == []
    blank = ["", " \t\u3000\n ", "\u200b"]
    assert ct2(blank) == ct2(blank, greedy=True) == [("", 0.0)] * 3
    # A long source is truncated to max_source_tokens, then [END].
    tokens = ct2.source_tokens([LONG_TEXT])[0]
    assert len(tokens) == ct2.max_source_tokens + 1 == translator.max_length
    assert tokens[-1] == "[END]"
    texts = ["forty-two", "", LONG_TEXT, "seven"]
    ids = translator.source_ids(tf.constant(texts)).numpy()
    vocabulary = translator.source_tokenizer.vocabulary
    assert [[vocabulary[i] for i in row if i] for row in ids] == (
        ct2.source_tokens(texts))
    expected = translator.translate_greedy(tf.constant(texts))
    got = ct2(texts, greedy=True)
    assert [t for t, _ in got] == [
        s.decode() for s in expected["translation"].numpy()]
    np.testing.assert_allclose([s for _, s in got],
                               expected["score"].numpy(), atol=1e-3)
    text, score = ct2("forty-two", greedy=True)
    assert (text, score) == pytest.approx(got[0])
    # Beam search: exact_beam reranks every hypothesis CTranslate2 ended
    # on its way to the maximum length: the Translator's choice. The
    # default stops as CTranslate2 does and reranks a subset of those
    # hypotheses: never a better GNMT score, often the same translation.
    texts = verification_texts(trained_run)[:32] + [""]
    beam = translator(texts)
    exact = CTranslate2Translator(exported["path"], exact_beam=True)(texts)
    assert [t for t, _ in exact] == [t for t, _ in beam]
    np.testing.assert_allclose([s for _, s in exact], [s for _, s in beam],
                               atol=1e-4)
    approximate = ct2(texts)
    assert all(s <= b + 1e-4 for (_, s), (_, b) in zip(approximate, beam))
    assert sum(a == b for (a, _), (b, _) in zip(approximate, beam)) > 16


@pytest.mark.slow
def test_runtime_and_readme_run_without_tensorflow(exported, translator):
    path = str(exported["path"])
    texts = ["forty-two", "", "nine hundred and five", LONG_TEXT]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    process = subprocess.run(
        [sys.executable, "-c", _WORKER, path, json.dumps(texts),
         README_RUNTIME.replace(README_DIR, path),
         README_RAW.replace(README_DIR, path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert process.returncode == 0, process.stderr[-3000:]
    answer = json.loads(process.stdout)
    assert answer["modules"] == []
    greedy = translator(texts, beam_size=1)
    beam = translator(texts)
    assert [t for t, _ in answer["greedy"]] == [t for t, _ in greedy]
    assert [t for t, _ in answer["exact"]] == [t for t, _ in beam]
    np.testing.assert_allclose([s for _, s in answer["greedy"]],
                               [s for _, s in greedy], atol=1e-3)
    assert answer["greedy"][1] == answer["beam"][1] == ["", 0.0]
    assert answer["empty"] == []
    # (Scores change in the last digits with the batch.)
    _assert_same([answer["single"]], answer["beam"][:1])
    readme = answer["readme"]
    _assert_same(readme["pairs"], [answer["beam"][0], ["", 0.0]])
    _assert_same([readme["best"]], answer["greedy"][:1])
    assert readme["translations"] == [
        t for t, _ in translator(readme["texts"], beam_size=1)]


def _assert_same(got, expected, atol=1e-4):
    """Equal translations, scores within `atol`."""
    assert [text for text, _ in got] == [text for text, _ in expected]
    np.testing.assert_allclose([score for _, score in got],
                               [score for _, score in expected], atol=atol)


@pytest.mark.parametrize("overrides", [
    {},
    {"norm_first": True, "activation": "gelu",
     "tie_output_projection": False, "share_embeddings": True},
    # Imported Marian models' options (the output bias zeros here;
    # tests/export/test_export_options.py sets it).
    {"activation": "swish", "positional_layout": "split",
     "scale_embeddings": False, "output_bias": True,
     "suppress_reserved": True, "layer_norm_epsilon": 1e-5,
     "tie_output_projection": False},
])
def test_random_model_variants_score_identically(
        overrides, sentencepiece_tokenizers, tmp_path):
    tokenizers = sentencepiece_tokenizers
    config = _config(tokenizers, num_layers=2, d_model=32, num_heads=4,
                     d_ff=64, max_length=32, **overrides)
    model = build_transformer(config)
    translator = Translator(model, *tokenizers,
                            settings=SearchSettings(extra_length=6))
    vocabulary = tokenizers[1].vocabulary
    size = tokenizers[0].vocab_size
    source = np.random.default_rng(0).integers(4, size, size=(6, 9))
    source[:, -1] = 3
    source[0, 5:] = 0  # a padded row
    source[0, 4] = 3
    path = ct2_export.convert_model(model, tokenizers[0].vocabulary,
                                    vocabulary, tmp_path / "ct2")
    # An untrained model's logits are nearly flat, so greedy ids may flip
    # on float32 round-off; the teacher-forced log-probabilities may not.
    report = ct2_export.verify_ctranslate2(path, translator, source)
    assert report["max_log_prob_difference"] < 1e-4
    target = np.random.default_rng(1).integers(4, size, size=(6, 7))
    difference = ct2_export.max_log_prob_difference(
        path, model, source, target, tokenizers[0].vocabulary, vocabulary)
    assert difference < 1e-4
    # The check can fail: scores of another model differ.
    other = build_transformer(config)
    assert ct2_export.max_log_prob_difference(
        path, other, source, target, tokenizers[0].vocabulary,
        vocabulary) > 0.01


def test_tied_projection_is_stored_once(sentencepiece_tokenizers):
    model = build_transformer(_config(sentencepiece_tokenizers))
    spec = ct2_export.build_spec(model, sentencepiece_tokenizers[0].vocabulary,
                                 sentencepiece_tokenizers[1].vocabulary)
    embedding = model.get_layer("target_embedding").embeddings.numpy()
    np.testing.assert_array_equal(spec.decoder.projection.weight.numpy(),
                                  embedding)
    np.testing.assert_array_equal(
        spec.decoder.position_encodings.encodings.numpy()[3],
        model.get_layer("positional_encoding").table[3])
    spec.optimize()  # What the converter does before saving.
    assert spec.decoder.projection.weight == "decoder/embeddings/weight"


def test_previous_token_model_is_refused(sentencepiece_tokenizers):
    """CTranslate2's encoder input has no previous-token projection: the
    converter refuses the model rather than drop it."""
    tokenizers = sentencepiece_tokenizers
    config = _config(tokenizers, previous_source_token=True)
    with pytest.raises(ValueError, match="previous_source_token=True"):
        ct2_export.build_spec(build_transformer(config),
                              tokenizers[0].vocabulary,
                              tokenizers[1].vocabulary)


def test_gnmt_penalty_is_the_translators():
    from keras_transformer.decoding import gnmt_length_penalty

    for length in (1, 7, 60):
        assert gnmt_penalty(length, 0.6) == pytest.approx(
            float(gnmt_length_penalty(length, 0.6)))
    assert gnmt_penalty(1, 0.6) == 1.0


@pytest.mark.parametrize("arguments, match", [
    ({"quantization": "float16"}, "`quantization`"),
    ({"source_vocabulary": ["[PAD]"]}, "`source_vocabulary`"),
    ({"target_vocabulary": "duplicates"}, "`target_vocabulary`"),
    ({"target_vocabulary": "abc"}, "`target_vocabulary`"),
])
def test_bad_arguments_name_the_argument(arguments, match, tmp_path,
                                         sentencepiece_tokenizers):
    tokenizers = sentencepiece_tokenizers
    model = build_transformer(_config(tokenizers))
    values = {"source_vocabulary": tokenizers[0].vocabulary,
              "target_vocabulary": tokenizers[1].vocabulary,
              "quantization": None}
    if arguments.get("target_vocabulary") == "duplicates":
        vocabulary = tokenizers[1].vocabulary
        arguments = {"target_vocabulary": vocabulary[:-1] + vocabulary[-2:-1]}
    values.update(arguments)
    with pytest.raises((ValueError, TypeError), match=match):
        ct2_export.convert_model(model, out_dir=tmp_path / "x", **values)


def test_bad_runtime_arguments_name_the_argument(tmp_path,
                                                 sentencepiece_tokenizers):
    model = build_transformer(_config(sentencepiece_tokenizers))
    with pytest.raises(TypeError, match="`translator`"):
        ct2_export.export_ctranslate2(Translator(model, object(), object()),
                                      tmp_path / "x")
    with pytest.raises(ValueError, match="`model_dir`"):
        CTranslate2Translator(tmp_path)
    translator = Translator(model, *sentencepiece_tokenizers)
    path = ct2_export.export_ctranslate2(translator, tmp_path / "ct2")["path"]
    with pytest.raises(TypeError, match="`exact_beam`"):
        CTranslate2Translator(path, exact_beam="yes")
    ct2 = CTranslate2Translator(path)
    for texts in (42, [1], None):
        with pytest.raises(TypeError, match="`texts`"):
            ct2(texts)
    # Untrained, but the input rules hold.
    assert ct2(["", "one two"], greedy=True)[0] == ("", 0.0)
