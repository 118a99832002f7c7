"""Export a trained keras-transformer run to SavedModel and ONNX.

`export_run(run_dir, out_dir, "all")` writes

    out_dir/saved_model/1/   a SavedModel (the version folder TensorFlow
                             Serving expects), verified in a fresh process
    out_dir/onnx/            the ONNX search graphs and vocabularies,
                             verified with onnxruntime against the Translator
                             (onnxruntime's fused operators unless
                             `onnx_operators="standard"`)

and, with format "ctranslate2" or "ctranslate2-int8", a CTranslate2 model
directory verified by greedy token equality (float32); with format "web"
(and with "all" where the npm runtime files are installed), `out_dir/web/`,
a static folder that translates inside a web page (`export.web`), made from
the verified ONNX export and checked in Node.js where `node` is installed

and returns the verification reports. Nothing is reported as exported
unless its verification passed.
"""

import os

from keras_transformer.checks import check_choice
from keras_transformer.contract import ONNX_OPERATORS
from keras_transformer.run_directory import RunDirectory

FORMATS = ("saved_model", "onnx", "all", "ctranslate2", "ctranslate2-int8",
           "web")
# The formats that write the ONNX graphs (a web export is made from them).
_ONNX_FORMATS = ("onnx", "all", "web")


def verification_texts(run_dir: str, limit: int = 64) -> list[str]:
    """The held-out source sentences saved with the run (samples.txt)."""
    return RunDirectory(run_dir).read_samples(limit)


def export_run(run_dir: str, out_dir: str, format: str = "all",
               texts: list[str] | None = None,
               settings=None, quantize: str | None = None,
               beam_op: bool = False,
               onnx_operators: str | None = None) -> dict:
    """Exports and verifies a run; returns {"saved_model": ..., "onnx": ...}.

    Args:
        run_dir: a trained run directory.
        out_dir: where to write.
        format: "saved_model", "onnx", "all" (both, and "web" when its
            npm runtime files are installed, else `report["web"]` says why
            it was skipped), "web" (the ONNX export and the web folder made
            from it; needs `npm ci`, see `export.web.install_command`), or
            "ctranslate2" / "ctranslate2-int8" (needs the `bench` extra's
            ctranslate2).
        texts: source sentences to verify with; defaults to the run's
            samples.txt (held-out sentences, >= 50 when available).
        settings: `SearchSettings` the exports run with; defaults to
            those of the run's task (`SearchSettings.for_config`).
        quantize: None, "int8" or "float16": ONNX graphs with smaller
            weights (`export_onnx`); only with format "onnx", "all" or
            "web".
        beam_op: bool, also write the opt-in `beam_ort.onnx`
            (onnxruntime's BeamSearch op; `export.onnx.beam_op`); only
            with format "onnx" or "all" and float32.
        onnx_operators: the ONNX token graphs' operators (`export_onnx`'s
            `operators`): "onnxruntime" (fused `com.microsoft` operators)
            or "standard"; defaults to "standard" for format "web" (what
            onnxruntime-web runs) and "onnxruntime" otherwise. The web
            folder always gets standard graphs.
    """
    if format not in FORMATS:
        raise ValueError(
            f"`format` must be one of {FORMATS}. Received: format={format!r}")
    if quantize is not None and format not in _ONNX_FORMATS:
        raise ValueError(
            "`quantize` applies to ONNX exports (format 'onnx', 'all' or "
            "'web'); "
            f"CTranslate2 has 'ctranslate2-int8'. Received: quantize="
            f"{quantize!r}, format={format!r}")
    if beam_op and format not in ("onnx", "all"):
        raise ValueError(
            "`beam_op` applies to ONNX exports (format 'onnx' or 'all'). "
            f"Received: beam_op={beam_op!r}, format={format!r}")
    if onnx_operators is None:
        onnx_operators = "standard" if format == "web" else "onnxruntime"
    check_choice("onnx_operators", onnx_operators, ONNX_OPERATORS)
    if format == "web":  # Before training-sized work: the npm files.
        from keras_transformer.export.web.export import runtime_files
        runtime_files()
    from keras_transformer.runs import load_translator

    translator = load_translator(run_dir, settings=settings)
    texts = list(texts) if texts is not None else verification_texts(run_dir)
    report = {}
    saved_model_dir = None
    if format in ("saved_model", "all"):
        from keras_transformer.export.saved_model import (
            export_saved_model,
            verify_saved_model,
        )
        path = export_saved_model(
            translator, os.path.join(out_dir, "saved_model", "1"))
        report["saved_model"] = dict(
            path=path, **verify_saved_model(path, translator, texts))
        saved_model_dir = path
    if format in _ONNX_FORMATS:
        from keras_transformer.export.onnx import export_onnx
        # Verified against the Translator and, when written, the SavedModel.
        report["onnx"] = export_onnx(translator, os.path.join(out_dir, "onnx"),
                                     texts=texts,
                                     saved_model_dir=saved_model_dir,
                                     quantize=quantize, beam_op=beam_op,
                                     operators=onnx_operators)
    if format in ("web", "all"):
        from keras_transformer.export.web.verify import export_web_checked
        report["web"] = export_web_checked(
            translator, os.path.join(out_dir, "onnx"),
            os.path.join(out_dir, "web"), texts, required=format == "web")
    if format.startswith("ctranslate2"):
        from keras_transformer.export.ctranslate2 import export_ctranslate2
        quantization = "int8" if format.endswith("int8") else None
        report["ctranslate2"] = export_ctranslate2(
            translator, os.path.join(out_dir, format), quantization,
            texts=texts)
    return report
