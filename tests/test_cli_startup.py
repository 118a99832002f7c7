"""A quiet, fast command line: lazy imports, help texts, TF start-up lines.

Start-up behaviour is checked in fresh interpreters (subprocesses): this
test process has imported Keras and TensorFlow already (conftest.py).
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

import keras_transformer as kt
from keras_transformer import _logging
from keras_transformer.cli import build_parser, main

HEAVY_MODULES = ("tensorflow", "keras", "numpy")
STARTUP_MARKERS = ("absl::InitializeLog", "oneDNN", "cuda")


def _environment():
    env = dict(os.environ)
    # conftest.py sets TF_CPP_MIN_LOG_LEVEL; test the package's own default.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


def _start_python(code, *args):
    """Starts `python -c code args` (concurrently with others)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_environment())


def _finish(process, timeout=120):
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode,
                                       stdout, stderr)


def _run_python(code, *args):
    return _finish(_start_python(code, *args))


def _startup_lines(stderr):
    return [line for line in stderr.splitlines()
            if any(marker.lower() in line.lower()
                   for marker in STARTUP_MARKERS)]


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise AssertionError("the parser has no subcommands")


def test_import_is_lazy():
    result = _run_python("""
        import json, sys
        import keras_transformer as kt
        names = dir(kt)
        before = [m for m in ("tensorflow", "keras", "numpy")
                  if m in sys.modules]
        config = kt.TransformerConfig  # config.py is pure Python.
        after = [m for m in ("tensorflow", "keras") if m in sys.modules]
        print(json.dumps({"before": before, "after": after,
                          "dir": names, "config": config.__module__}))
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["before"] == []
    assert report["after"] == []
    assert report["config"] == "keras_transformer.config"
    assert {"TransformerConfig", "build_transformer", "layers",
            "Translator", "__version__"} <= set(report["dir"])
    assert _startup_lines(result.stderr) == []


def test_keras_classes_register_when_keras_is_loaded_first():
    # `import keras; import keras_transformer; keras.models.load_model(...)`
    # needs the registered classes without touching a lazy name.
    result = _run_python("""
        import sys
        import keras
        import keras_transformer
        registered = keras.saving.get_registered_object(
            "keras_transformer>TokenEmbedding")
        print(registered is not None,
              "keras_transformer.model" in sys.modules)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_help_imports_no_tensorflow_and_is_fast():
    result = _run_python("""
        import json, sys, time
        start = time.perf_counter()
        from keras_transformer.cli import build_parser, main
        commands = [None] + sorted(
            next(a for a in build_parser()._actions
                 if a.dest == "command").choices)
        codes = {}
        for command in commands:
            argv = ["--help"] if command is None else [command, "--help"]
            try:
                main(argv)
            except SystemExit as exit:
                codes[command or ""] = exit.code
        seconds = time.perf_counter() - start
        heavy = [m for m in ("tensorflow", "keras", "numpy")
                 if m in sys.modules]
        print(json.dumps({"codes": codes, "heavy": heavy,
                          "seconds": seconds}), file=sys.stderr)
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert set(report["codes"]) == {"", "quickstart", "train", "translate",
                                    "summarize", "evaluate", "export",
                                    "bench", "serve-web", "import-marian"}
    assert set(report["codes"].values()) == {0}
    assert report["heavy"] == []
    assert report["seconds"] < 2.0, report
    assert "--verbose" in result.stdout
    assert _startup_lines(result.stdout + result.stderr) == []


def test_every_option_has_help():
    parser = build_parser()
    subparsers = _subparsers(parser)
    assert set(subparsers.choices) == {"quickstart", "train", "translate",
                                       "summarize", "evaluate", "export",
                                       "bench", "serve-web",
                                       "import-marian"}
    # The subcommand list itself: one help line per command.
    helps = {action.dest: action.help
             for action in subparsers._choices_actions}
    assert set(helps) == set(subparsers.choices)
    assert all(text and text.strip() for text in helps.values()), helps
    missing = []
    for name, sub in [("", parser)] + sorted(subparsers.choices.items()):
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not (action.help and action.help.strip()):
                flag = action.option_strings or action.dest
                missing.append(f"{name} {flag}")
    assert missing == []


def test_flags_and_defaults_are_unchanged():
    parse = build_parser().parse_args
    train = parse(["train", "--data", "d.tsv", "--run", "r"])
    assert (train.preset, train.epochs, train.steps, train.batch_tokens,
            train.vocab_size, train.average_last, train.strategy,
            train.set) == (None, 10, None, 4096, 8000, 5, "default", [])
    # None: the task's defaults (runs.default_preset, the length policy),
    # the preset's schedule fields, no time budget.
    assert (train.task, train.length_policy) == (None, None)
    assert (train.time_budget, train.schedule, train.learning_rate,
            train.warmup_steps) == (None, None, None, None)
    assert not train.separate_vocab
    assert train.subword_model == "unigram"
    assert train.vocab_sample == 1_000_000
    translate = parse(["translate", "--run", "r", "a", "b"])
    assert (translate.text, translate.file, translate.beam, translate.greedy,
            translate.nbest, translate.batch_size) == (
        ["a", "b"], None, None, False, 1, 64)
    evaluate = parse(["evaluate", "--run", "r", "--data", "d"])
    assert (evaluate.split, evaluate.beam, evaluate.greedy) == (
        "test", None, False)
    export = parse(["export", "--run", "r", "--out", "o"])
    assert export.format == "all"
    quick = parse(["quickstart"])
    assert (quick.run, quick.task, quick.language, quick.epochs) == (
        None, "translation", "fr", None)
    bench = parse(["bench"])
    assert (bench.quick, bench.output) == (False, "benchmarks/RESULTS.md")
    with pytest.raises(SystemExit):
        parse(["translate", "--run", "r", "--beam", "2", "--greedy"])


@pytest.mark.parametrize("argv, verbose", [
    (["bench"], False),
    (["--verbose", "bench"], True),
    (["bench", "--verbose"], True),
    (["--verbose", "bench", "--verbose"], True),
    (["--verbose", "translate", "--run", "r", "text"], True),
    (["translate", "--run", "r", "--verbose", "text"], True),
])
def test_verbose_is_accepted_before_and_after_the_command(argv, verbose):
    assert build_parser().parse_args(argv).verbose is verbose


def test_errors_end_with_one_line_and_status_2(tmp_path, capsys):
    missing = str(tmp_path / "missing.txt")
    assert main(["translate", "--run", str(tmp_path), "--file",
                 missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_lazy_names_resolve_to_their_module_objects():
    for name in kt.__all__:
        module_name = "keras_transformer" + kt._LAZY_NAMES[name]
        if importlib.util.find_spec(module_name) is None:
            continue  # Not written yet.
        module = importlib.import_module(module_name)
        if module_name.endswith("." + name):
            assert getattr(kt, name) is module
        elif hasattr(module, name):
            assert getattr(kt, name) is getattr(module, name), name
        else:
            with pytest.raises(AttributeError, match=name):
                getattr(kt, name)
    assert kt.__version__ == "0.1.0"
    assert set(kt.__all__) <= set(dir(kt))


def test_unknown_and_missing_names_raise_attribute_error(monkeypatch):
    with pytest.raises(AttributeError, match="no_such_name"):
        kt.no_such_name
    assert not hasattr(kt, "no_such_name")
    monkeypatch.setitem(kt._LAZY_NAMES, "Missing", ".no_such_module")
    with pytest.raises(AttributeError, match="no_such_module"):
        kt.Missing
    monkeypatch.setitem(kt._LAZY_NAMES, "Absent", ".config")
    with pytest.raises(AttributeError, match="does not define"):
        kt.Absent


def test_startup_note_filter():
    info = ("I0000 00:00:1795997645.302483    5695 port.cc:153] oneDNN "
            "custom operations are on.")
    error = ("E0000 00:00:1795997741.549414    7299 cuda_platform.cc:52] "
             "failed call to cuInit: INTERNAL: CUDA error")
    other_error = "E0412 10:11:12.345678  99 op.cc:1] Something broke"
    banner = ("WARNING: All log messages before absl::InitializeLog() is "
              "called are written to STDERR")
    for line in (info, banner):
        assert _logging.is_startup_note(line, 1)
        assert not _logging.is_startup_note(line, 0)
    assert _logging.is_startup_note(error, 2)
    assert not _logging.is_startup_note(error, 1)
    assert not _logging.is_startup_note(other_error, 2)
    assert _logging.is_startup_note(other_error, 3)
    assert not _logging.is_startup_note("Traceback (most recent call "
                                        "last):", 3)
    assert not _logging.is_startup_note("UserWarning: oneDNN", 3)


def test_quiet_import_hides_startup_lines_and_keeps_the_rest():
    plain = _start_python("import tensorflow; "
                          "tensorflow.config.list_physical_devices()")
    # A finder that writes to stderr while TensorFlow imports: a fake INFO
    # start-up line (dropped) and two other lines (kept).
    quiet = _start_python("""
        import os, sys

        class Noisy:
            done = False

            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow.python" and not self.done:
                    self.done = True
                    os.write(2, b"I0000 00:00:17.5 1 fake.cc:1] note\\n")
                    os.write(2, b"KEEP-FD\\n")
                    sys.stderr.write("KEEP-PY\\n")
                return None

        sys.meta_path.insert(0, Noisy())
        from keras_transformer import _logging
        tf = _logging.import_tensorflow()
        print("ok", tf.__name__)
    """)
    plain, quiet = _finish(plain), _finish(quiet)
    assert plain.returncode == 0, plain.stderr
    if not _startup_lines(plain.stderr):
        pytest.skip("TensorFlow prints no start-up lines here")
    assert any("absl::InitializeLog" in line
               for line in _startup_lines(plain.stderr))

    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip() == "ok tensorflow"
    assert _startup_lines(quiet.stderr) == [], quiet.stderr
    assert "fake.cc" not in quiet.stderr
    assert "KEEP-FD" in quiet.stderr and "KEEP-PY" in quiet.stderr


def test_cli_is_quiet_unless_verbose(tmp_path):
    code = """
        import sys
        from keras_transformer.cli import main
        sys.exit(main(sys.argv[1:]))
    """
    argv = ["translate", "--run", str(tmp_path), "hello"]
    verbose = _start_python(code, "--verbose", *argv)
    quiet = _start_python(code, *argv)
    verbose, quiet = _finish(verbose), _finish(quiet)
    assert verbose.returncode == 2, verbose.stderr
    assert verbose.stderr.splitlines()[-1].startswith("error: ")
    if not _startup_lines(verbose.stderr):
        pytest.skip("TensorFlow prints no start-up lines here")
    assert quiet.returncode == 2, quiet.stderr
    assert len(quiet.stderr.splitlines()) == 1, quiet.stderr
    assert quiet.stderr.startswith("error: "), quiet.stderr


def test_backend_flag_refuses_a_keras_already_on_another_backend(capsys):
    import keras

    from keras_transformer.cli import main

    other = "jax" if keras.backend.backend() != "jax" else "torch"
    assert main(["train", "--data", "d.tsv", "--run", "r", "--backend",
                 other]) == 2
    assert "`--backend`" in capsys.readouterr().err
