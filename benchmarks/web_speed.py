"""The web export's speed: headless Chromium against ONNX Runtime native.

    python -m keras_transformer.benchmarks.web_speed [--repeats N]

The harness's decoding model (preset "small", random weights, [END]
never chosen, sources of 16 tokens, outputs of 64 tokens) is exported to
ONNX and to the web; the same token graphs are timed

- in ONNX Runtime native (Python), with one thread and with its default
  threads;
- in headless Chromium (Debian's `chromium`, driven by Playwright): the
  page served without cross-origin isolation (onnxruntime-web then runs
  one thread) and with it (`serve-web`'s headers), with as many threads
  as cores (`index.html?threads=N`),

for greedy and beam 4 at batch 1 and 8, taking turns (one call each per
round, so that the load of a shared machine falls on all alike). It prints
a Markdown table of milliseconds per batch (the best round) and the ratios
browser / native, the page's load time (navigation until the model is
loaded) and the folder's size. Without chromium or Playwright it prints
why and exits 0: the rows are optional.
"""

import argparse
import http.server
import os
import shutil
import sys
import tempfile
import threading
import time

SOURCE_LENGTH = 16
OUTPUT_LENGTH = 64
POINTS = [(mode, batch) for mode in ("greedy", "beam") for batch in (1, 8)]

# One timed call in the page (milliseconds) and the output length.
_RUN_IN_PAGE = """async ([beam, rows]) => {
  const start = performance.now();
  const out = await webTranslator.translateTokens(rows, {beam});
  return [performance.now() - start, out.targetIds[0].length];
}"""


def missing_tools() -> str | None:
    """Why the browser rows cannot run here, or None."""
    if shutil.which("chromium") is None:
        return "no `chromium` on PATH (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (the `test` extra)"
    from keras_transformer.export.web.export import runtime_files
    try:
        runtime_files()
    except FileNotFoundError as error:
        return str(error)
    return None


def build_exports(workdir: str) -> tuple[str, str, dict]:
    """The harness's random model as ONNX and web exports."""
    from keras_transformer.benchmarks import harness, ours
    from keras_transformer.config import TransformerConfig
    from keras_transformer.export.onnx import export_onnx
    from keras_transformer.export.web import export_web
    from keras_transformer.text import END_ID

    config = TransformerConfig.from_dict(harness._small_config())
    tokenizer = ours.synthetic_tokenizer(config.target_vocab_size)
    model = ours.build_model(config)
    ours.suppress_token(model, END_ID)
    translator = ours.make_translator(
        model, tokenizer, extra_length=OUTPUT_LENGTH - SOURCE_LENGTH)
    onnx_dir = os.path.join(workdir, "onnx")
    # The page runs standard operators; native onnxruntime runs the same.
    export_onnx(translator, onnx_dir, verify=False, operators="standard")
    web_dir = os.path.join(workdir, "web")
    return onnx_dir, web_dir, export_web(onnx_dir, web_dir)


def _native_runner(onnx_dir: str, mode: str, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(os.path.join(onnx_dir, f"{mode}.onnx"),
                                   options,
                                   providers=["CPUExecutionProvider"])

    def run(source):
        start = time.perf_counter()
        ids = session.run(["target_ids"], {"source_ids": source})[0]
        return 1000 * (time.perf_counter() - start), ids.shape[1]
    return run


def _server(directory: str, isolated: bool):
    from keras_transformer.export.web.serve import make_server

    if isolated:
        server = make_server(directory, 0)
    else:
        class Plain(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0),
            lambda *a: Plain(*a, directory=directory))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def measure(onnx_dir: str, web_dir: str, sources: dict,
            repeats: int) -> dict:
    """{runtime: {(mode, batch): best ms}, "pages": page facts}.

    The four runtimes take turns, one call each per round, so that a
    change in the machine's load falls on all of them alike; each keeps
    its best round.
    """
    from playwright.sync_api import sync_playwright

    times = {name: {} for name in RUNTIMES}
    pages = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        servers = []
        for isolated in (False, True):
            server, url = _server(web_dir, isolated)
            servers.append(server)
            page = browser.new_context().new_page()
            start = time.perf_counter()
            # Isolated: as many threads as cores (onnxruntime-web's own
            # default is half of them).
            page.goto(url if not isolated else
                      f"{url}?threads={os.cpu_count()}")
            page.wait_for_selector("body[data-state=ready]",
                                   timeout=300_000)
            pages[isolated] = page
            times["pages", isolated] = {
                "load_seconds": time.perf_counter() - start,
                "isolated": page.evaluate("crossOriginIsolated"),
                "threads": page.evaluate("ort.env.wasm.numThreads")}
        for mode, batch in POINTS:
            native = {threads: _native_runner(onnx_dir, mode, threads)
                      for threads in (1, None)}
            calls = {
                "native_1": lambda: native[1](sources[batch]),
                "native": lambda: native[None](sources[batch]),
                "page_1": lambda: pages[False].evaluate(_RUN_IN_PAGE, [
                    mode == "beam", sources[batch].tolist()]),
                "page_isolated": lambda: pages[True].evaluate(
                    _RUN_IN_PAGE, [mode == "beam", sources[batch].tolist()]),
            }
            for call in calls.values():  # Warm-up.
                call()
            best = {name: float("inf") for name in calls}
            for _ in range(repeats):
                for name, call in calls.items():
                    ms, length = call()
                    assert length == OUTPUT_LENGTH, (name, length)
                    best[name] = min(best[name], ms)
            for name in calls:
                times[name][mode, batch] = best[name]
        browser.close()
        for server in servers:
            server.shutdown()
            server.server_close()
    return times


RUNTIMES = ("native_1", "native", "page_1", "page_isolated")


def report(times: dict, export: dict) -> str:
    one, isolated = times["pages", False], times["pages", True]
    native_1, native = times["native_1"], times["native"]
    page_1, page = times["page_1"], times["page_isolated"]
    lines = [
        "| search | batch | ONNX Runtime native, 1 thread | native, "
        "default threads | Chromium, 1 thread | Chromium, "
        f"{isolated['threads']} threads (isolated) | ratio 1 thread | "
        "ratio threads |", "|---|---|---|---|---|---|---|---|"]
    for key in POINTS:
        lines.append(
            f"| {key[0]} | {key[1]} | {native_1[key]:.1f} | "
            f"{native[key]:.1f} | {page_1[key]:.1f} | {page[key]:.1f} | "
            f"{page_1[key] / native_1[key]:.2f} | "
            f"{page[key] / native[key]:.2f} |")
    lines += [
        "", f"Page load (navigation until the model is loaded): "
        f"{one['load_seconds']:.2f} s (1 thread), "
        f"{isolated['load_seconds']:.2f} s (isolated); folder "
        f"{export['bytes'] / 1e6:.1f} MB in {len(export['files'])} files, "
        f"{export['gzip_bytes'] / 1e6:.1f} MB gzipped."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    why = missing_tools()
    if why:
        print(f"Browser rows skipped: {why}")
        return 0
    import numpy as np

    from keras_transformer.text import END_ID

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="kt-web-bench-") as workdir:
        onnx_dir, web_dir, export = build_exports(workdir)
        sources = {}
        for batch in (1, 8):
            ids = rng.integers(4, 1000, size=(batch, SOURCE_LENGTH))
            ids[:, -1] = END_ID
            sources[batch] = ids.astype(np.int32)
        times = measure(onnx_dir, web_dir, sources, args.repeats)
    print(report(times, export))
    return 0


if __name__ == "__main__":
    sys.exit(main())
