"""Shared fixtures: dtype-policy isolation and small deterministic inputs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate_keras_state():
    """Every test starts with the float32 policy and leaves it so.

    (No global seeding here: `keras.utils.set_random_seed` clears
    TensorFlow's kernel cache and slows every following call; tests that
    need fixed values seed their own NumPy generator.)
    """
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# One tiny trained run for every test that needs a trained model (translator,
# exports, CLI): trained once per test session, in seconds, on numbers below
# 1,000 from the bundled corpus.
FIXTURE_SETTINGS = dict(preset="tiny", epochs=6, batch_tokens=1024,
                        vocab_size=500, average_last=2, d_model=64,
                        max_length=48, dropout_rate=0.0, warmup_steps=100,
                        precision="float32")


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory):
    from keras_transformer.data import write_bundled_tsv

    return write_bundled_tsv(tmp_path_factory.mktemp("corpus"), "de",
                             max_number=999, train_size=700,
                             valid_size=100, test_size=100)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus_files):
    from keras_transformer.runs import train_run

    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    keras.utils.set_random_seed(0)
    train_run(str(corpus_files["train"]), run_dir,
              valid_data=str(corpus_files["validation"]), verbose=0,
              seed=0, **FIXTURE_SETTINGS)
    return run_dir


@pytest.fixture(scope="session")
def translator(trained_run):
    from keras_transformer.runs import load_translator

    return load_translator(trained_run)


# Fixtures that train or export a model (here, in tests/export/conftest.py
# and in test modules). A test that requests one, directly or through
# another fixture, must be marked slow: `-m "not slow"` trains nothing.
TRAINING_FIXTURES = frozenset({
    "trained_run", "translator", "summarization_run", "saved_model_export",
    "onnx_export", "ctranslate2_export", "reverse_digits",
    "reverse_digits_onnx", "int8_export"})


def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if item.get_closest_marker("slow") is None
                and TRAINING_FIXTURES & set(getattr(item, "fixturenames",
                                                    ()))]
    if unmarked:
        raise pytest.UsageError(
            "These tests train or export a model (through "
            f"{sorted(TRAINING_FIXTURES)}) but are not marked "
            "@pytest.mark.slow: " + ", ".join(unmarked))
