"""`import_marian` against Hugging Face's own Marian implementation.

A tiny random MarianMTModel (built here with transformers; nothing is
downloaded, see benchmarks/marian_folder.py) is imported, then:

- teacher-forced logits equal MarianMTModel's within 1e-4 (float32);
- greedy ids equal `generate(num_beams=1)` with its bad-words rule;
- beam ids equal our own beam search run over MarianMTModel's logits;
- CTranslate2's own Transformers converter, on the same folder, gives
  the same greedy tokens as the import;
- every config field the package cannot represent is an error naming it.
"""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

from keras_transformer import cli  # noqa: E402
from keras_transformer.benchmarks.marian_folder import (  # noqa: E402
    make_marian_folder,
)  # noqa: E402
from keras_transformer.marian.config import FIELDS, marian_spec  # noqa: E402
from keras_transformer.marian.importer import import_marian  # noqa: E402
from keras_transformer.text.special_tokens import (  # noqa: E402
    END_ID,
    PAD_ID,
    START_ID,
)

SENTENCES = [
    "The package provides a library for parsing configuration files.",
    "This is the documentation for the command line tool.",
    "Café, naïve: accents and the umlauts of Größe.",
    "我喜欢猫",
    "مرحبا بالعالم",
    "Tools 🎉 for the web and for the shell",
]


@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    """(folder, run directory, import report, transformers' model and
    tokenizer, package id of each Marian id)."""
    from transformers import MarianMTModel, MarianTokenizer
    folder, _ = make_marian_folder(str(tmp_path_factory.mktemp("marian")))
    run_dir = str(tmp_path_factory.mktemp("imported"))
    report = import_marian(folder, run_dir, check=True)
    model = MarianMTModel.from_pretrained(folder).eval()
    tokenizer = MarianTokenizer.from_pretrained(folder)
    vocab = json.load(open(os.path.join(folder, "vocab.json")))
    from keras_transformer.marian.vocabulary import marian_order
    order = marian_order(vocab, len(vocab) - 1, 0)
    package_of = {}
    for package_id in reversed(range(len(order))):
        package_of[order[package_id]] = package_id
    return {"folder": folder, "run": run_dir, "report": report,
            "model": model, "tokenizer": tokenizer, "order": order,
            "package_of": package_of}


@pytest.fixture(scope="module")
def marian_translator(marian):
    from keras_transformer.runs import load_translator
    return load_translator(marian["run"])


def _package(marian, ids):
    return [marian["package_of"][int(i)] for i in ids]


def test_import_writes_a_run_and_checks_itself(marian):
    report = marian["report"]
    assert report["check"]["ids_identical"] == report["check"]["sentences"]
    assert report["check"]["max_logit_difference"] < 1e-4
    assert report["vocab_size"] == report["marian_vocab_size"] + 1
    for name in ("config.json", "tokenizer.json", "source.model",
                 "target.model", "model.keras", "samples.txt",
                 "metrics.json"):
        assert os.path.exists(os.path.join(marian["run"], name)), name
    metrics = json.load(open(os.path.join(marian["run"], "metrics.json")))
    fields = metrics["import"]["fields"]
    assert fields["activation_function"].startswith("mapped")
    assert fields["bad_words_ids"].startswith("mapped")


def test_logits_equal_transformers(marian, marian_translator):
    """Teacher forced, on sentences of every script, with padding."""
    tokenizer, model = marian["tokenizer"], marian["model"]
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    theirs_ids = batch["input_ids"].numpy()
    ours = marian_translator.source_ids(np.asarray(SENTENCES, object)).numpy()
    for row, their_row in zip(ours, theirs_ids):
        real = [i for i in their_row if i != tokenizer.pad_token_id]
        assert [i for i in row if i != PAD_ID] == _package(marian, real)
    decoder = np.concatenate(
        [np.full((len(SENTENCES), 1), marian["order"][START_ID]),
         theirs_ids[:, :-1]], axis=1)
    with torch.no_grad():
        expected = model(**batch, decoder_input_ids=torch.tensor(
            decoder)).logits.numpy()[:, :, marian["order"]]
    decoder_ours = np.concatenate(
        [np.full((len(SENTENCES), 1), START_ID), ours[:, :-1]], axis=1)
    width = ours.shape[1]
    got = np.asarray(marian_translator.model({
        "encoder_inputs": ours.astype(np.int32),
        "decoder_inputs": decoder_ours.astype(np.int32)}))
    real = ours != PAD_ID
    difference = np.abs(got - expected[:, :width])[real]
    assert difference.max() < 1e-4


def _hf_greedy(marian, sentence, max_new_tokens):
    tokenizer, model = marian["tokenizer"], marian["model"]
    inputs = tokenizer([sentence], return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, num_beams=1, do_sample=False,
                                max_new_tokens=max_new_tokens)[0].tolist()
    return _package(marian, output[1:])  # without the decoder start


def test_greedy_equals_generate(marian, marian_translator):
    ids = marian_translator.source_ids(np.asarray(SENTENCES, object))
    outputs, _ = marian_translator.search_tokens(ids, beam_size=1)
    outputs = outputs.numpy()[:, 0]
    limit = marian_translator.max_output_length(ids)
    compared = 0
    for sentence, row in zip(SENTENCES, outputs):
        row = [int(i) for i in row if i != PAD_ID]
        assert PAD_ID not in row and START_ID not in row
        # transformers forces </s> as the last token at its length limit
        # (forced_eos_token_id); the package's search stops there instead:
        # one more step for transformers, then its forced </s> dropped.
        theirs = _hf_greedy(marian, sentence, int(limit) + 1)
        if theirs[-1] == END_ID and END_ID not in theirs[:-1] and (
                END_ID not in row):
            theirs = theirs[:-1]
        assert row == theirs
        compared += 1
    assert compared == len(SENTENCES)


def test_beam_equals_our_search_over_transformers_logits(marian,
                                                         marian_translator):
    """Our beam search run over MarianMTModel's logits (no cache: each
    step reruns the decoder on the prefix) gives the Translator's ids."""
    import tensorflow as tf

    from keras_transformer import decoding
    model, order = marian["model"], np.asarray(marian["order"])
    ids = marian_translator.source_ids(np.asarray(SENTENCES[:3], object))
    beam = marian_translator.settings.beam_size
    max_length = int(marian_translator.max_output_length(ids))
    expected, _ = marian_translator.search_tokens(ids, beam_size=beam)
    marian_source = order[ids.numpy()]
    mask = ids.numpy() != PAD_ID
    with torch.no_grad():
        memory = model.get_encoder()(
            input_ids=torch.tensor(marian_source),
            attention_mask=torch.tensor(mask)).last_hidden_state
    memory = memory.repeat_interleave(beam, 0)
    mask = torch.tensor(mask).repeat_interleave(beam, 0)

    def step_fn(step_ids, index, cache):
        prefix = tf.tensor_scatter_nd_update(
            tf.transpose(cache["prefix"]), [[index]], [step_ids])
        prefix = tf.transpose(prefix)
        decoder = order[prefix.numpy()[:, :int(index) + 1]]
        with torch.no_grad():
            hidden = model.model.decoder(
                input_ids=torch.tensor(decoder),
                encoder_hidden_states=memory,
                encoder_attention_mask=mask).last_hidden_state[:, -1]
            logits = (model.lm_head(hidden)
                      + model.final_logits_bias).numpy()[:, order]
        logits[:, [PAD_ID, START_ID]] = -1e9  # bad_words_ids=[[pad]]
        return tf.constant(logits), {"prefix": prefix}

    start = tf.fill([ids.shape[0]], START_ID)
    prefix = tf.zeros([ids.shape[0], max_length + 1], tf.int32)
    got, _ = decoding.beam_search(
        step_fn, start, {"prefix": prefix}, max_length, beam_size=beam,
        length_penalty=marian_translator.settings.length_penalty)
    got = got.numpy()
    for row in range(ids.shape[0]):
        ours = [int(i) for i in expected.numpy()[row, 0] if i != PAD_ID]
        theirs = [int(i) for i in got[row, 0] if i != PAD_ID]
        assert ours == theirs


def test_ctranslate2_converter_gives_the_same_greedy_tokens(
        marian, marian_translator, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    out = str(tmp_path / "ct2")
    converter = ctranslate2.converters.TransformersConverter(
        marian["folder"])
    converter.convert(out, force=True)
    ct2 = ctranslate2.Translator(out, device="cpu")
    tokenizer = marian["tokenizer"]
    ids = marian_translator.source_ids(np.asarray(SENTENCES, object))
    ours, _ = marian_translator.search_tokens(ids, beam_size=1)
    limit = int(marian_translator.max_output_length(ids))
    vocabulary = marian_translator.target_tokenizer.vocabulary
    seen = set()
    for index, sentence in enumerate(SENTENCES):
        tokens = tokenizer.convert_ids_to_tokens(
            tokenizer(sentence)["input_ids"])
        result = ct2.translate_batch([tokens], beam_size=1,
                                     max_decoding_length=limit)
        theirs = [{"<unk>": "[UNK]"}.get(token, token)
                  for token in result[0].hypotheses[0]]
        mine = [vocabulary[int(i)] for i in ours.numpy()[index, 0]
                if i not in (PAD_ID, END_ID)]
        assert mine == theirs
        seen.update(mine)
    assert len(seen) > 3  # the outputs are not all one token


def test_cli_imports_and_translates(marian, marian_translator, tmp_path,
                                    capsys):
    run = str(tmp_path / "cli_run")
    assert cli.main(["import-marian", marian["folder"], "--run", run,
                     "--check", "no"]) in (0, None)
    printed = json.loads(capsys.readouterr().out)
    assert printed["check"] == "not checked: check=False"
    assert os.path.exists(os.path.join(run, "model.keras"))
    assert cli.main(["translate", "--run", run, "--greedy",
                     SENTENCES[0]]) in (0, None)
    translation = capsys.readouterr().out.strip()
    expected = marian_translator.translate_greedy(
        np.asarray([SENTENCES[0]], object))["translation"].numpy()[0]
    assert translation == expected.decode("utf-8") and translation
    with pytest.raises(FileExistsError, match="run_dir"):
        import_marian(marian["folder"], run, check=False)


def _config(folder):
    return json.load(open(os.path.join(folder, "config.json")))


@pytest.mark.parametrize("field, value", [
    ("normalize_before", True),
    ("normalize_embedding", True),
    ("static_position_embeddings", False),
    ("add_final_layer_norm", True),
    ("decoder_vocab_size", 99),
    ("share_encoder_decoder_embeddings", False),
    ("tie_word_embeddings", False),
    ("activation_function", "tanh"),
    ("decoder_layers", 3),
    ("decoder_attention_heads", 2),
    ("decoder_ffn_dim", 16),
    ("decoder_start_token_id", 0),
    ("bad_words_ids", [[5]]),
    ("model_type", "bart"),
])
def test_unsupported_fields_are_refused_by_name(marian, field, value):
    values = dict(_config(marian["folder"]), **{field: value})
    with pytest.raises(ValueError, match=f"`{field}`"):
        marian_spec(values)


def test_every_field_of_a_marian_config_is_handled(marian):
    from transformers import MarianConfig
    keys = set(MarianConfig().to_dict())
    assert keys - set(FIELDS) == set()


def test_spec_maps_the_differences(marian):
    generation = json.load(open(os.path.join(marian["folder"],
                                             "generation_config.json")))
    config = marian_spec(_config(marian["folder"]), generation).config
    assert (config.activation, config.positional_layout,
            config.layer_norm_epsilon, config.output_bias,
            config.suppress_reserved, config.scale_embeddings) == (
        "swish", "split", 1e-5, True, True, True)
    # bad_words_ids in config.json (older folders) counts as well.
    in_config = dict(_config(marian["folder"]),
                     bad_words_ids=generation["bad_words_ids"])
    assert marian_spec(in_config).config.suppress_reserved
    assert not marian_spec(_config(marian["folder"])).config.suppress_reserved


def test_bad_sources_are_clear_errors(marian, tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download"):
        import_marian("Helsinki-NLP/opus-mt-en-de", str(tmp_path / "r"))
    folder = tmp_path / "tf_only"
    shutil.copytree(marian["folder"], folder)
    os.remove(folder / "model.safetensors")
    (folder / "tf_model.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="tf_model.h5"):
        import_marian(str(folder), str(tmp_path / "r2"))
    os.remove(folder / "vocab.json")
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        import_marian(str(folder), str(tmp_path / "r3"))


def test_imported_run_exports_to_every_format(marian, tmp_path):
    """SavedModel, ONNX token and text graphs, the web folder (checked
    in Node.js when its npm files are installed) and CTranslate2: each
    export's own check against the Translator passes on sentences that
    hit pieces missing from Marian's vocabulary."""
    from keras_transformer.export import export_run
    # Hebrew is a target-side script only: unknown to the source model.
    texts = SENTENCES[:4] + ["שלום עולם"]
    # Standard operators: the web folder reuses the graphs instead of
    # converting the searches a second time (the fused graphs are tested
    # on the package's own models).
    report = export_run(marian["run"], str(tmp_path / "all"), "all",
                        texts=texts, onnx_operators="standard")
    saved_model = report["saved_model"]
    assert saved_model["identical"] == saved_model["comparisons"] > 0
    assert set(report["onnx"]["verification"]["agreement"].values()) == {1.0}
    web = report["web"]
    if "verification" in web or os.environ.get(
            "KERAS_TRANSFORMER_REQUIRE_WEB"):
        identical = web["verification"]["identical"]
        assert identical == {"beam": len(texts), "greedy": len(texts)}
    ct2 = export_run(marian["run"], str(tmp_path / "ct2"), "ctranslate2",
                     texts=texts)
    assert ct2["ctranslate2"]["identical"] == len(texts)
    assert ct2["ctranslate2"]["text_identical"] == len(texts)


def test_fine_tuning_starts_from_the_imported_model(marian, tmp_path):
    """`train --init-from`: the imported tokenizers and config, training
    from the imported weights (at a learning rate of 1e-9 they stay
    where they were; a model trained from scratch would not be near
    them), then a finished run that translates."""
    import keras

    data = tmp_path / "pairs.tsv"
    data.write_text("".join(
        f"{source}\t{target}\n" for source, target in [
            ("The package provides a tool.", "Das Paket bietet ein Werkzeug."),
            ("This is the documentation.", "Das ist die Dokumentation."),
            ("Save your changes.", "Speichern Sie Ihre Änderungen."),
            ("Where is the station?", "Wo ist der Bahnhof?")] * 8),
        encoding="utf-8")
    run = str(tmp_path / "tuned")
    assert cli.main(["train", "--data", str(data), "--run", run,
                     "--init-from", marian["run"], "--epochs", "1",
                     "--steps", "3", "--batch-tokens", "256",
                     "--average-last", "0", "--precision", "float32",
                     "--learning-rate", "1e-9",
                     "--set", "dropout_rate=0.0"]) in (0, None)
    imported = keras.models.load_model(
        os.path.join(marian["run"], "model.keras"))
    tuned = keras.models.load_model(os.path.join(run, "model.keras"))
    worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(imported.weights, tuned.weights))
    assert worst < 1e-5
    config = json.load(open(os.path.join(run, "config.json")))
    assert config["positional_layout"] == "split"
    assert config["dropout_rate"] == 0.0
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["data"]["init_from"] == os.path.abspath(marian["run"])
    for name in ("source.model", "target.model"):
        assert open(os.path.join(run, name), "rb").read() == open(
            os.path.join(marian["run"], name), "rb").read()


def test_fine_tuning_keeps_the_architecture(marian, tmp_path):
    from keras_transformer.runs import train_run
    with pytest.raises(ValueError, match="d_model"):
        train_run("bundled", str(tmp_path / "a"), init_from=marian["run"],
                  d_model=64)
    with pytest.raises(ValueError, match="preset"):
        train_run("bundled", str(tmp_path / "b"), init_from=marian["run"],
                  preset="tiny")
    with pytest.raises(FileNotFoundError, match="init_from"):
        train_run("bundled", str(tmp_path / "c"),
                  init_from=str(tmp_path))


def test_pytorch_checkpoint_reads_like_safetensors(marian, tmp_path):
    """An older folder's pytorch_model.bin (read with torch.load,
    weights_only) gives the same tensors as model.safetensors."""
    from keras_transformer.marian.weights import (
        checkpoint_file,
        read_checkpoint,
    )
    folder = tmp_path / "bin"
    shutil.copytree(marian["folder"], folder)
    expected = read_checkpoint(str(folder / "model.safetensors"))
    torch.save(marian["model"].state_dict(), folder / "pytorch_model.bin")
    os.remove(folder / "model.safetensors")
    path = checkpoint_file(str(folder))
    assert path.endswith("pytorch_model.bin")
    got = read_checkpoint(path)
    assert set(expected) <= set(got)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
    # Its stored sinusoidal tables are checked against the package's.
    report = import_marian(str(folder), str(tmp_path / "run"), check=False)
    assert report["checkpoint"] == "pytorch_model.bin"
    assert report["position_table_difference"] < 1e-5
