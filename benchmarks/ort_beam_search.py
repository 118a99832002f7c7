"""Experiment: onnxruntime's own beam search against our beam graph.

`export.onnx.beam_op` writes the beam search as onnxruntime's
`com.microsoft.BeamSearch` contrib op driving two graphs of our model
(encoder with the first step; decoder step with a growing cache). It
ranks finished hypotheses by score / length^alpha, not the GNMT penalty,
so ids can only be compared with ours at alpha = 0.

    python -m keras_transformer.benchmarks.ort_beam_search [--repeats N]

exports our beam graph and the BeamSearch graph (both at alpha = 0) of
one random "small" model ([END] suppressed, so every search runs 64
tokens, as in `keras-transformer bench`), checks their ids in a second
process (no TensorFlow), and times both there, interleaved, at batch 1
and 32. It prints one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

LENGTH, SOURCE_LENGTH, BEAM = 64, 16, 4


def export(workdir):
    """Writes beam.onnx and the BeamSearch graph, both at alpha 0."""
    import numpy as np

    from keras_transformer.benchmarks import harness, ours
    from keras_transformer.config import TransformerConfig
    from keras_transformer.contract import SearchSettings
    from keras_transformer.export.onnx import export_onnx
    from keras_transformer.text import END_ID
    from keras_transformer.translator import Translator

    config = TransformerConfig.from_dict(harness.full_settings()["config"])
    model = ours.build_model(config)
    ours.suppress_token(model, END_ID)
    tokenizer = ours.synthetic_tokenizer(config.target_vocab_size)
    settings = SearchSettings(beam_size=BEAM, length_penalty=0.0,
                              extra_length=LENGTH - SOURCE_LENGTH)
    translator = Translator(model, tokenizer, tokenizer, settings=settings)
    export_onnx(translator, os.path.join(workdir, "ours"), modes=("beam",),
                verify=False)
    export_onnx(translator, os.path.join(workdir, "op"), modes=("beam",),
                verify=False, beam_op=True)
    rng = np.random.default_rng(1)
    for batch in (1, 32):
        source = ours.random_ids(rng, batch, SOURCE_LENGTH,
                                 config.source_vocab_size)
        source[:, -1] = END_ID
        np.save(os.path.join(workdir, f"source_{batch}.npy"), source)


def measure(workdir, repeats):
    """Ids and interleaved times of both graphs (no TensorFlow here)."""
    import time

    import numpy as np

    from keras_transformer.contract import ONNX_BEAM_OP_GRAPH, ONNX_GRAPHS
    from keras_transformer.export.onnx.runtime import make_session

    ours = make_session(os.path.join(workdir, "ours", ONNX_GRAPHS["beam"]))
    theirs = make_session(os.path.join(workdir, "op", ONNX_BEAM_OP_GRAPH))

    def run_ours(source):
        return ours.run(["target_ids"], {"source_ids": source})[0]

    def run_theirs(source):
        return theirs.run(["target_ids"], {"source_ids": source})[0]

    result = {}
    for batch in (1, 32):
        source = np.load(os.path.join(workdir, f"source_{batch}.npy"))
        ids = {"ours": run_ours(source), "ort": run_theirs(source)}
        times = {"ours": [], "ort": []}
        for _ in range(repeats):
            for name, run in (("ours", run_ours), ("ort", run_theirs)):
                start = time.perf_counter()
                run(source)
                times[name].append(time.perf_counter() - start)
        medians = {k: float(np.median(v)) for k, v in times.items()}
        result[f"batch_{batch}"] = {
            "ids_identical_rows": int((ids["ours"] == ids["ort"]).all(
                axis=1).sum()) if ids["ours"].shape == ids["ort"].shape
            else 0,
            "rows": batch,
            "shapes": [list(ids["ours"].shape), list(ids["ort"].shape)],
            "ms_median": {k: round(v * 1000, 1) for k, v in medians.items()},
            "ms_min_max": {k: [round(min(v) * 1000, 1),
                               round(max(v) * 1000, 1)]
                           for k, v in times.items()},
            "ort_over_ours": round(medians["ort"] / medians["ours"], 3)}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="kt-ort-beam-") as workdir:
        export(workdir)
        answer = subprocess.run(
            [sys.executable, "-m", __spec__.name, "--measure", workdir,
             "--repeats", str(args.repeats)],
            check=True, capture_output=True, text=True)
        print(answer.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
