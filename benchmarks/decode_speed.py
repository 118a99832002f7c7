"""Decoding runtimes at a forced output length, all on one random model.

Runtimes (greedy unless noted, beam 4 where the runtime has a beam):

- "ours": `Translator.translate_tokens_greedy` / `translate_tokens`
  (tf.function graphs, the package's cached search);
- "ours_xla": `Translator(jit_compile=True).search_tokens`, the same
  greedy search as one XLA program per input shape (greedy only: the
  Translator keeps beam search a graph);
- "saved_model": the exported SavedModel, reloaded, same functions;
- "onnx": the exported ONNX search graphs in ONNX Runtime (the default
  export: onnxruntime's fused operators in the decoder step);
- "onnx_standard": the same searches in standard ONNX operators only
  (`export_onnx(operators="standard")`, what onnxruntime-web runs);
- "onnx_int8": the same graphs exported with `quantize="int8"`
  (`export/onnx/quantize.py`: int8 MatMul weights, dynamic uint8
  activations, Loop body included);
- "onnx_beam_op": the opt-in `beam_ort.onnx` (beam only): onnxruntime's
  BeamSearch op driving our encoder and decoder-step graphs
  (`export/onnx/beam_op.py`);
- "ct2_float32", "ct2_int8": `export/ctranslate2/` conversions run by
  CTranslate2 (tokens in, tokens out) in a process of its own
  (`keras_transformer.benchmarks.ct2_worker`);
- "hub", "hub_xla": keras-hub layers, cached greedy loop, without / with
  XLA;
- "tutorial": the tutorial-style model, no cache (greedy only).

Our model, keras-hub's and the tutorial's get their [END] logit pinned to
0 (see `benchmarks.ours`), so every search runs to the requested length;
each cell checks that the output really has that length.
"""

import contextlib
import os
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

from keras_transformer.benchmarks import (
    keras_hub_peer,
    ours,
    reference_tutorial,
    timing,
)
from keras_transformer.text import END_ID

RUNTIMES = ("ours", "ours_xla", "saved_model", "onnx", "onnx_standard",
            "onnx_int8",
            "onnx_beam_op", "ct2_float32", "ct2_int8", "hub", "hub_xla",
            "tutorial")
LABELS = {
    "ours": "ours, tf.function (Translator)",
    "ours_xla": "ours, XLA (Translator jit_compile)",
    "saved_model": "ours, SavedModel",
    "onnx": "ours, ONNX Runtime",
    "onnx_standard": "ours, ONNX Runtime, standard operators",
    "onnx_int8": "ours, ONNX Runtime int8",
    "onnx_beam_op": "ours, ONNX Runtime BeamSearch op",
    "ct2_float32": "CTranslate2 float32",
    "ct2_int8": "CTranslate2 int8",
    "hub": "keras-hub cached, tf.function",
    "hub_xla": "keras-hub cached, XLA jit",
    "tutorial": "tutorial-style, no cache",
}
# The float32 runtimes the package ships (targets against float32 peers).
SHIPPED = ("ours", "ours_xla", "saved_model", "onnx")
# What runs without TensorFlow (issue 13 compares these with CTranslate2),
# and its float32 part (issue 22's targets; int8 rows beside).
PORTABLE = ("onnx", "onnx_standard", "onnx_int8", "onnx_beam_op")
PORTABLE_FLOAT32 = ("onnx", "onnx_standard", "onnx_beam_op")
GREEDY_ONLY = ("ours_xla", "hub", "hub_xla", "tutorial")
BEAM_ONLY = ("onnx_beam_op",)


class DecodingBench:
    """Builds the models and exports once; times (runtime, mode, B, N)."""

    def __init__(self, config, settings: dict, workdir: str | None = None,
                 log=lambda message: None):
        self.config = config
        self.settings = settings
        self.log = log
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kt-bench-")
            workdir = self._tmp.name
        self.workdir = workdir
        self.tokenizer = ours.synthetic_tokenizer(config.target_vocab_size)
        self.vocabulary = self.tokenizer.vocabulary
        self.model = ours.build_model(config)
        ours.suppress_token(self.model, END_ID)
        self.source_length = settings["source_length"]
        self.unavailable = {}
        self.export_seconds = {}
        self.file_bytes = {}
        self._cache = {}
        self._rng = np.random.default_rng(1)
        self._sources = {}

    def close(self):
        """Stops the CTranslate2 worker; deletes the temporary exports."""
        for key, value in self._cache.items():
            if isinstance(key, tuple) and key[0] == "ct2_worker":
                value.close()
        self._cache.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- lazily built runtimes -------------------------------------------

    def _once(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def translator(self, length: int):
        """Our Translator whose maximum output is `length` tokens.

        The paper's rule gives source length + `extra_length`; sources
        have `source_length` tokens, so `extra_length` = length - that.
        """
        return self._once(("translator", length), lambda: (
            ours.make_translator(self.model, self.tokenizer,
                                 extra_length=length - self.source_length)))

    def _saved_model(self, length):
        from keras_transformer.export.saved_model import export_saved_model

        path = os.path.join(self.workdir, f"saved_model_{length}")
        with _timed(self.export_seconds, f"saved_model ({length} tokens)"):
            export_saved_model(self.translator(length), path)
        return tf.saved_model.load(path)

    def _onnx(self, length, mode, quantize=None, beam_op=False,
              operators="onnxruntime"):
        from keras_transformer.contract import ONNX_BEAM_OP_GRAPH
        from keras_transformer.export.onnx import export_onnx
        from keras_transformer.export.onnx.runtime import make_session

        suffix = (f"_{quantize}" if quantize else "_op" if beam_op
                  else "_standard" if operators == "standard" else "")
        path = os.path.join(self.workdir, f"onnx_{length}_{mode}{suffix}")
        with _timed(self.export_seconds,
                    f"onnx{suffix} {mode} ({length} tokens)"):
            report = export_onnx(self.translator(length), path,
                                 modes=(mode,), verify=False,
                                 quantize=quantize, beam_op=beam_op,
                                 operators=operators)
        name = ONNX_BEAM_OP_GRAPH if beam_op else f"{mode}.onnx"
        self.file_bytes[f"onnx{suffix} {mode} ({length} tokens)"] = (
            report["files"][name])
        return make_session(os.path.join(path, name))

    def _ct2(self, quantization):
        """Converts the model; returns its directory (timed elsewhere)."""
        from keras_transformer.export.ctranslate2 import convert_model

        path = os.path.join(self.workdir, f"ct2_{quantization or 'f32'}")
        with _timed(self.export_seconds,
                    f"ct2_{quantization or 'float32'}"):
            convert_model(self.model, self.vocabulary, self.vocabulary,
                          path, quantization)
        return path

    def _measure_ct2(self, runtime, beam, source, length):
        from keras_transformer.benchmarks.ct2_worker import Worker

        quantization = None if runtime == "ct2_float32" else "int8"
        path = self._once(runtime, lambda: self._ct2(quantization))
        # One process per model: after int8 decoding, float32 decoding in
        # the same process ran up to 5x slower (CTranslate2 4.8, oneDNN).
        worker = self._once(("ct2_worker", runtime), Worker)
        tokens = [[self.vocabulary[i] for i in row] for row in source]
        answer = worker.measure({
            "model_dir": path, "tokens": tokens, "beam": beam,
            "length": length, "repeats": self.settings["repeats"],
            "warmup": self.settings["warmup"],
            "min_repeat_seconds": self.settings["min_repeat_seconds"]})
        return answer["seconds"], answer["output_length"]

    def _hub(self):
        peer = keras_hub_peer.build(self.config)
        keras_hub_peer.suppress_token(peer, END_ID)
        return peer

    def _tutorial(self):
        model = reference_tutorial.build(self.config)
        reference_tutorial.suppress_token(model, END_ID)
        return model

    def source(self, batch: int) -> np.ndarray:
        """The random source ids (B, source_length) ending with [END]."""
        if batch not in self._sources:
            source = ours.random_ids(self._rng, batch, self.source_length,
                                     self.config.source_vocab_size)
            source[:, -1] = END_ID
            self._sources[batch] = source
        return self._sources[batch]

    def runner(self, runtime: str, beam: int, batch: int, length: int):
        """A no-argument callable decoding one batch; returns ids (B, N).

        CTranslate2 runtimes have none: they are timed in their own
        process (`keras_transformer.benchmarks.ct2_worker`).
        """
        if runtime in GREEDY_ONLY and beam != 1:
            raise ValueError(f"{runtime} has no beam search")
        if runtime in BEAM_ONLY and beam == 1:
            raise ValueError(f"{runtime} has only a beam search")
        if length < self.source_length:
            raise ValueError(
                f"Output lengths start at the source length "
                f"({self.source_length}). Received: length={length}")
        source = self.source(batch)
        tensor = tf.constant(source)
        if runtime == "ours":
            translator = self.translator(length)
            fn = (translator.translate_tokens_greedy if beam == 1
                  else translator.translate_tokens)
            return lambda: fn(tensor)["target_ids"]
        if runtime == "ours_xla":
            translator = self._once(("translator_xla", length), lambda: (
                ours.make_translator(
                    self.model, self.tokenizer,
                    extra_length=length - self.source_length,
                    jit_compile=True)))
            return lambda: translator.search_tokens(tensor, beam)[0][:, 0]
        if runtime == "saved_model":
            loaded = self._once(("saved_model", length),
                                lambda: self._saved_model(length))
            fn = (loaded.translate_tokens_greedy if beam == 1
                  else loaded.translate_tokens)
            return lambda: fn(tensor)["target_ids"]
        if runtime in ("onnx", "onnx_standard", "onnx_int8", "onnx_beam_op"):
            from keras_transformer.export.onnx.runtime import run_search

            mode = "greedy" if beam == 1 else "beam"
            quantize = "int8" if runtime == "onnx_int8" else None
            operators = ("standard" if runtime == "onnx_standard"
                         else "onnxruntime")
            session = self._once((runtime, length, mode), lambda: self._onnx(
                length, mode, quantize, beam_op=runtime == "onnx_beam_op",
                operators=operators))
            return lambda: run_search(session, source)["target_ids"]
        if runtime in ("hub", "hub_xla"):
            peer = self._once("hub", self._hub)
            jit = runtime == "hub_xla"
            greedy = self._once(("hub_greedy", length, jit), lambda: (
                keras_hub_peer.make_greedy(peer, length, jit)))
            return lambda: greedy(tensor)
        if runtime == "tutorial":
            model = self._once("tutorial", self._tutorial)
            greedy = self._once(("tutorial_greedy", length), lambda: (
                reference_tutorial.make_greedy(model, length)))
            return lambda: greedy(tensor)
        raise ValueError(f"`runtime` must be one of {RUNTIMES}. "
                         f"Received: runtime={runtime!r}")

    def measure(self, runtime: str, beam: int, batch: int,
                length: int) -> dict | None:
        """Times one cell; None (with a reason) if the runtime failed."""
        if runtime in self.unavailable:
            return None
        try:
            if runtime.startswith("ct2_"):
                seconds, produced = self._measure_ct2(
                    runtime, beam, self.source(batch), length)
            else:
                seconds, produced = self._measure_here(runtime, beam, batch,
                                                       length)
        except Exception as error:  # noqa: BLE001 - reported, not hidden
            self.unavailable[runtime] = f"{type(error).__name__}: {error}"
            self.log(f"  {runtime} unavailable: "
                     f"{self.unavailable[runtime][:300]}")
            return None
        return {"runtime": runtime, "beam": beam, "batch": batch,
                "length": length, "output_length": produced,
                "seconds": seconds,
                "tokens_per_second": batch * length / seconds["median"]}

    def _measure_here(self, runtime, beam, batch, length):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = self.runner(runtime, beam, batch, length)
            output = run()
            measurement = timing.measure(
                run, repeats=self.settings["repeats"],
                warmup=self.settings["warmup"],
                min_repeat_seconds=self.settings["min_repeat_seconds"])
        return measurement.to_dict(), _output_length(output)


def _output_length(output) -> int:
    return int(np.asarray(output).shape[-1])


@contextlib.contextmanager
def _timed(store: dict, key: str):
    """Adds the seconds the block took to `store[key]`."""
    start = time.perf_counter()
    yield
    store[key] = time.perf_counter() - start
