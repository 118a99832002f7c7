"""A quiet TensorFlow start-up: which variable silences which line.

Importing TensorFlow 2.21 on a machine without a GPU prints, on stderr
(measured on x86-64 Linux, TF 2.21.0):

    WARNING: All log messages before absl::InitializeLog() is called are
        written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your
        machine, GPU will not be used.
    I0000 ... cpu_feature_guard.cc:227] This TensorFlow binary is optimized
        to use available CPU instructions ...
    E0000 ... cuda_platform.cc:52] failed call to cuInit: ... (303)

The first three are written twice (when `_pywrap_cpu_feature_guard` loads
TensorFlow's libraries, and again when `profiler_client` loads
`_pywrap_profiler_plugin`, which holds its own copy of absl logging) from
C++ static initializers, before anything reads the environment, so no variable
silences them: not `TF_CPP_MIN_LOG_LEVEL` (0 to 3), `TF_CPP_MAX_VLOG_LEVEL`,
`GLOG_minloglevel`, `ABSL_MIN_LOG_LEVEL` or `CUDA_VISIBLE_DEVICES`.
`TF_ENABLE_ONEDNN_OPTS=0` drops the oneDNN line only by turning oneDNN off,
which changes speed and numerics, so it is not used. `TF_CPP_MIN_LOG_LEVEL`
>= 1 silences the `cpu_feature_guard` line, and 3 the `cuInit` line, which
is written when the devices are first listed.

So `import_tensorflow` redirects file descriptor 2 into a temporary file
while it imports TensorFlow and lists its devices, then restores it and
writes back every captured line except those start-up notes that rank
below `TF_CPP_MIN_LOG_LEVEL`. Python warnings and anything else written in
that window are therefore kept, only delayed until the import ends.
"""

import logging
import os
import re
import sys
import warnings

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"

# The value of TF_CPP_MIN_LOG_LEVEL before this package set its default:
# None when the user set none; `_UNSET` until `set_default_log_level` runs.
_UNSET = object()
_user_level = _UNSET

# One line of C++ (absl / TSL) logging: severity, date, time, thread,
# file:line. Before absl::InitializeLog the "time" is 00:00:<epoch seconds>.
_LOG_LINE = re.compile(
    r"^(?P<severity>[IWEF])\d{4} \d+:\d+:\d+\.\d+\s+\d+ [^\]]*\] ")
_SEVERITIES = {"I": 0, "W": 1, "E": 2, "F": 3}
# Start-up notes and their rank, compared with TF_CPP_MIN_LOG_LEVEL. The
# absl banner only announces the INFO lines that follow it. TensorFlow logs
# the failed cuInit of a machine without a GPU driver, and duplicate CUDA
# plug-in registrations, as errors; they rank as warnings here.
_STARTUP_NOTES = (
    ("All log messages before absl::InitializeLog() is called", 0),
    ("failed call to cuInit", 1),
    ("Unable to register cuDNN factory", 1),
    ("Unable to register cuFFT factory", 1),
    ("Unable to register cuBLAS factory", 1),
)


def set_default_log_level() -> None:
    """Sets `TF_CPP_MIN_LOG_LEVEL` to 2 unless the user set it.

    Remembers the user's value (or its absence) the first time, for
    `user_log_level`.
    """
    global _user_level
    if _user_level is _UNSET:
        _user_level = os.environ.get(LEVEL_VARIABLE)
    os.environ.setdefault(LEVEL_VARIABLE, DEFAULT_LEVEL)


def user_log_level() -> str | None:
    """`TF_CPP_MIN_LOG_LEVEL` as the user set it, or None if unset."""
    if _user_level is _UNSET:
        return os.environ.get(LEVEL_VARIABLE)
    return _user_level


def _min_level() -> int:
    try:
        return int(os.environ.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


def is_startup_note(line: str, min_level: int) -> bool:
    """Whether `line` is a TensorFlow start-up note ranked below `min_level`.

    Args:
        line: str, one line of stderr.
        min_level: int, the `TF_CPP_MIN_LOG_LEVEL` in force: 0 keeps every
            line, 1 drops notes (INFO), 2 also warnings, 3 also errors.

    Returns:
        True for a line to drop.
    """
    for text, rank in _STARTUP_NOTES:
        if text in line:
            return rank < min_level
    match = _LOG_LINE.match(line)
    if match is None:
        return False
    return _SEVERITIES[match.group("severity")] < min_level


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow, without its start-up lines unless `verbose`.

    TensorFlow's devices are listed in the same quiet window, since listing
    them first logs the failed `cuInit` of a machine without a GPU. When
    TensorFlow is already imported, this only returns it.

    Args:
        verbose: bool, let every start-up line through; when the user did
            not set `TF_CPP_MIN_LOG_LEVEL`, it is set to 0 (every log line),
            which takes effect only if TensorFlow is not imported yet.

    Returns:
        The `tensorflow` module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if verbose:
        if user_log_level() is None:
            os.environ[LEVEL_VARIABLE] = "0"
        import tensorflow

        return tensorflow
    set_default_log_level()
    with _CapturedStderr() as captured:
        import tensorflow

        tensorflow.config.list_physical_devices()
    min_level = _min_level()
    kept = [line for line in captured.lines
            if not is_startup_note(line.decode("utf-8", "replace"),
                                   min_level)]
    if kept:
        sys.stderr.flush()
        os.write(2, b"".join(kept))
    return tensorflow


class _CapturedStderr:
    """Points file descriptor 2 at a temporary file; `lines` on exit.

    The lines are written back by the caller after filtering; on an
    exception they are written back unfiltered, before the traceback.
    """

    def __init__(self):
        self.lines = []
        self._file = None
        self._saved = None

    def __enter__(self):
        import tempfile

        try:
            self._file = tempfile.TemporaryFile()
            sys.stderr.flush()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except (OSError, ValueError, AttributeError):
            # No usable fd 2 (or no sys.stderr): import without capturing.
            self._close()
        return self

    def __exit__(self, error_type, error, traceback):
        if self._saved is None:
            return False
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(self._saved, 2)
        self._file.seek(0)
        self.lines = self._file.read().splitlines(keepends=True)
        self._close()
        if error_type is not None and self.lines:
            os.write(2, b"".join(self.lines))
            self.lines = []
        return False

    def _close(self):
        if self._saved is not None:
            os.close(self._saved)
            self._saved = None
        if self._file is not None:
            self._file.close()
            self._file = None


def configure(verbose: bool = False) -> None:
    """Sets up logging for the command line, then imports TensorFlow.

    Call it before anything imports TensorFlow (or Keras). Without
    `verbose`: no TensorFlow start-up lines, TensorFlow's Python logger at
    ERROR, and Keras's "Your input ran out of data" warning hidden. With
    `verbose`: every C++ log line (unless `TF_CPP_MIN_LOG_LEVEL` was set by
    the user) and TensorFlow's Python log at INFO. A user-set
    `TF_CPP_MIN_LOG_LEVEL` is always kept.

    Args:
        verbose: bool, show TensorFlow's start-up and log lines.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # TensorFlow's own notes on saving and tracing are not for CLI users.
    logging.getLogger("tensorflow").setLevel(
        logging.INFO if verbose else logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore",
                                message="Your input ran out of data")
        set_default_log_level()
        if user_log_level() is None:
            # The command line shows no C++ log at all by default: TensorFlow
            # logs harmless notes as errors at run time too (e.g. "oneDNN
            # supports DT_INT64 only on platforms with AVX-512"); failures
            # still reach the user as Python exceptions.
            os.environ[LEVEL_VARIABLE] = "3"
    import_tensorflow(verbose=verbose)
