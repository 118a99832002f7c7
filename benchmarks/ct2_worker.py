"""Times CTranslate2 in a process of its own (no TensorFlow loaded).

The harness starts `python -m keras_transformer.benchmarks.ct2_worker` once
and sends one JSON request per line: {"model_dir", "tokens" (list of token
lists), "beam", "length", "repeats", "warmup", "min_repeat_seconds"}; each
answer is one JSON line {"seconds": Measurement dict, "output_length"} or
{"error": text}. CTranslate2 then runs as it would in production, with
nothing else in its process. The harness starts one worker per converted
model: in one process, float32 decoding after int8 decoding ran up to 5x
slower than on its own (CTranslate2 4.8 on this CPU).
"""

import json
import os
import subprocess
import sys

from keras_transformer.benchmarks import timing


def _serve(stdin, stdout):
    import ctranslate2

    translators = {}
    for line in stdin:
        request = json.loads(line)
        try:
            path = request["model_dir"]
            if path not in translators:
                translators[path] = ctranslate2.Translator(
                    path, device="cpu", inter_threads=1,
                    intra_threads=os.cpu_count() or 0)
            translator = translators[path]

            def run(request=request, translator=translator):
                results = translator.translate_batch(
                    request["tokens"], beam_size=request["beam"],
                    max_decoding_length=request["length"])
                return [r.hypotheses[0] for r in results]

            output = run()
            measurement = timing.measure(
                run, repeats=request["repeats"], warmup=request["warmup"],
                min_repeat_seconds=request["min_repeat_seconds"])
            answer = {"seconds": measurement.to_dict(),
                      "output_length": max(len(row) for row in output)}
        except Exception as error:  # noqa: BLE001 - sent to the harness
            answer = {"error": f"{type(error).__name__}: {error}"}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


class Worker:
    """The parent's handle on one worker process."""

    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(
            [root] + ([os.environ["PYTHONPATH"]]
                      if os.environ.get("PYTHONPATH") else []))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keras_transformer.benchmarks.ct2_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=root, env=dict(os.environ, PYTHONPATH=path))

    def measure(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("The CTranslate2 worker process ended.")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


if __name__ == "__main__":
    _serve(sys.stdin, sys.stdout)
