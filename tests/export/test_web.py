"""The web export: its folder, its server, translator.js in Node.js and the
page in a real browser, each compared with the Translator.

The trained model is `reverse_digits` (it has learned its task, so the
comparison covers real translations, not empty ones), exported to ONNX
once (`reverse_digits_onnx`) and to the web once for the module. Node.js
runs every request in one process; the browser is launched once.
"""

import json
import os
import shutil
import threading
import urllib.request

import pytest

from keras_transformer.contract import ONNX_MANIFEST, SEARCH_MODES
from tests.export.web_helpers import (
    BAD_REQUESTS,
    batches,
    expected,
    identical_rows,
    require,
    rule_batches,
)

# Where the browser test also writes its screenshot (README's picture).
SCREENSHOT_ENV = "KERAS_TRANSFORMER_WEB_SCREENSHOT"


def fake_web_folder(path):
    """A folder with a web export's two marker files (for the server)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "index.html").write_text("<!doctype html><title>x</title>")
    (path / ONNX_MANIFEST).write_text("{}")
    (path / "a.wasm").write_bytes(b"\0asm")
    return path


# -- without a trained model -------------------------------------------------

def test_server_sends_isolation_headers_and_wasm_type(tmp_path):
    from keras_transformer.export.web.serve import make_server

    server = make_server(fake_web_folder(tmp_path / "web"), 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url + "a.wasm") as response:
            headers = response.headers
            assert response.read() == b"\0asm"
        assert headers["Content-Type"] == "application/wasm"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("argv, message", [
    (["serve-web", "{tmp}"], "`directory` must be a web export folder"),
    (["serve-web", "{web}", "--port", "70000"], "`port`"),
])
def test_serve_web_errors_are_one_line(argv, message, tmp_path, capsys):
    from keras_transformer.cli import main

    web = fake_web_folder(tmp_path / "web")
    argv = [a.format(tmp=tmp_path, web=web) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_export_without_npm_files_names_the_command(tmp_path):
    from keras_transformer.export.web.export import export_web

    with pytest.raises(FileNotFoundError, match="npm ci"):
        export_web(tmp_path, tmp_path / "web", node_modules=tmp_path)


def test_export_of_a_folder_without_token_graphs_fails(tmp_path):
    from keras_transformer.export.web.export import export_web

    require()
    with pytest.raises(ValueError, match="onnx_dir"):
        export_web(tmp_path, tmp_path / "web")


# -- the exported folder -----------------------------------------------------

@pytest.fixture(scope="module")
def web_export(reverse_digits, reverse_digits_onnx, tmp_path_factory):
    """`reverse_digits` as a web export: its folder, report and model."""
    require()
    from keras_transformer.export.web.export import export_web

    out = tmp_path_factory.mktemp("web")
    report = export_web(reverse_digits_onnx.onnx_dir, out)
    return reverse_digits, out, report


@pytest.mark.slow
def test_folder_is_self_contained(web_export):
    _, out, report = web_export
    names = set(report["files"])
    assert {"index.html", "translator.js", "beam.onnx", "greedy.onnx",
            "source.model", "target.model", ONNX_MANIFEST,
            "ort.wasm.min.js", "ort-wasm-simd-threaded.wasm",
            "web-tokenizers.js"} <= names
    assert any(name.startswith("licenses/") for name in names)
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    assert "text_graphs" not in manifest and manifest["web"]["packages"]
    assert 0 < report["gzip_bytes"] < report["bytes"]
    page = (out / "index.html").read_text() + (out / "translator.js"
                                                ).read_text()
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow
def test_node_translates_as_the_translator(web_export, reverse_digits_onnx,
                                           tmp_path):
    from keras_transformer.export.web.node import node_translate

    model, out, _ = web_export
    translator = model.translator
    cases = [(f"held-out batch {i}", texts) for i, texts in
             enumerate(batches(model.texts))]
    cases += list(rule_batches(model.texts,
                               translator.source_limit).items())
    requests = [{"texts": texts, "beam": mode == "beam"}
                for mode in SEARCH_MODES for _, texts in cases]
    requests += [request for request, _, _ in BAD_REQUESTS]
    # A folder without a manifest, an ONNX export, one missing its files.
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    shutil.copy(out / ONNX_MANIFEST, lacking)
    bad_dirs = [tmp_path, reverse_digits_onnx.onnx_dir, lacking]
    answer = node_translate(out, requests, bad_dirs=[str(d) for d in
                                                     bad_dirs])

    results = iter(answer["results"])
    held_out = {}
    for mode in SEARCH_MODES:
        held_out[mode] = 0
        for name, texts in cases:
            same = identical_rows(next(results),
                                  expected(translator, texts, mode == "beam"))
            if name.startswith("held-out"):
                held_out[mode] += same
    assert held_out == {mode: len(model.texts) for mode in SEARCH_MODES}
    assert len(model.texts) >= 200
    for _, name, message in BAD_REQUESTS:
        error = next(results)["error"]
        assert error["name"] == name and message in error["message"]
    errors = [entry["error"]["message"] for entry in answer["bad_dirs"]]
    assert "`baseUrl` must be a web export folder" in errors[0]
    assert "not a web export's manifest" in errors[1]
    assert "lacks source.model" in errors[2]


@pytest.mark.slow
def test_export_of_onnxruntime_operators_fails(reverse_digits_onnx,
                                              tmp_path):
    # onnxruntime-web has no com.microsoft operators: a fused export is
    # refused by name (export_run makes a standard one for the page).
    from keras_transformer.export.web.export import export_web

    require()
    fused = tmp_path / "onnx"
    shutil.copytree(reverse_digits_onnx.onnx_dir, fused)
    manifest = json.loads((fused / ONNX_MANIFEST).read_text())
    manifest["operators"] = "onnxruntime"
    (fused / ONNX_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="operators='onnxruntime'"):
        export_web(fused, tmp_path / "web")
    assert not (tmp_path / "web").exists()


@pytest.mark.slow
def test_export_run_writes_the_folder_and_checks_it_in_node(
        web_export, reverse_digits_onnx, tmp_path, monkeypatch):
    # export_run's web step, on the module's model: the ONNX step copies
    # its export (written and tested above) instead of converting again.
    import keras_transformer.export.onnx as onnx_package
    import keras_transformer.runs as runs
    from keras_transformer.export import export_run

    model = web_export[0]

    def copy_onnx(translator, out, **_):
        shutil.copytree(reverse_digits_onnx.onnx_dir, out)
        return {"copied": True}

    monkeypatch.setattr(onnx_package, "export_onnx", copy_onnx)
    monkeypatch.setattr(runs, "load_translator",
                        lambda run_dir, settings=None: model.translator)
    report = export_run("unused", str(tmp_path), "web",
                        texts=model.texts[:40] + [""])
    check = report["web"]["verification"]
    assert check["identical"] == {"beam": 41, "greedy": 41}
    assert (tmp_path / "web" / "index.html").exists()
    with pytest.raises(ValueError, match="beam_op"):
        export_run("unused", str(tmp_path), "web", beam_op=True)


@pytest.mark.slow
def test_check_web_fails_when_translator_js_differs(
        web_export, reverse_digits_onnx, monkeypatch):
    # The export's check must catch one changed id: Node.js answers as it
    # does, then one target id of one row is changed before the check.
    import keras_transformer.export.web.node as node
    from keras_transformer.export.web.verify import check_web

    model, out, _ = web_export
    real = node.node_translate

    def one_id_off(*args, **kwargs):
        answer = real(*args, **kwargs)
        answer["results"][0]["targetIds"][1][1] += 1
        return answer

    monkeypatch.setattr(node, "node_translate", one_id_off)
    with pytest.raises(ValueError, match="differs from onnxruntime"):
        check_web(model.translator, reverse_digits_onnx.onnx_dir, str(out),
                  model.texts[:5])


# -- a real browser ----------------------------------------------------------

@pytest.fixture(scope="module")
def page(web_export):
    """The exported page, served on 127.0.0.1 and loaded in headless
    Chromium (Debian's, through Playwright: no browser download)."""
    require(browser=True)
    from playwright.sync_api import sync_playwright

    from keras_transformer.export.web.serve import make_server

    _, out, _ = web_export
    server = make_server(out, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium refuses to start as root otherwise.
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.foreign_requests = []
        page.on("request", lambda r: None if r.url.startswith(url) else
                page.foreign_requests.append(r.url))
        page.goto(url)
        page.wait_for_selector("body[data-state=ready], "
                               "body[data-state=failed]", timeout=120_000)
        yield page
        browser.close()
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_page_translates_typed_text_as_the_translator(page, web_export,
                                                      tmp_path):
    model = web_export[0]
    assert page.evaluate("document.body.dataset.state") == "ready", \
        page.text_content("#status")
    assert page.evaluate("crossOriginIsolated")  # Threads are allowed.
    lines = model.texts[:4] + [""] + model.texts[4:7]  # An empty line too.
    page.fill("#source", "\n".join(lines))
    for mode in SEARCH_MODES:
        page.check(f"input[value={mode}]")
        page.click("#translate")
        page.wait_for_selector("body[data-state=done], "
                               "body[data-state=failed]")
        shown = page.eval_on_selector_all(
            "#results td.translation", "cells => cells.map("
            "cell => cell.textContent)")
        want = expected(model.translator, lines, mode == "beam")
        assert shown == want["translations"], page.text_content("#status")
    assert "8 lines translated" in page.text_content("#status")
    page.screenshot(path=str(tmp_path / "web_page.png"), full_page=True)
    if os.environ.get(SCREENSHOT_ENV):
        page.screenshot(path=os.environ[SCREENSHOT_ENV], full_page=True)
    assert page.foreign_requests == []


@pytest.mark.slow
def test_module_in_the_page_translates_the_held_out_set(page, web_export):
    model = web_export[0]
    for mode in SEARCH_MODES:
        same = 0
        for texts in batches(model.texts):
            got = page.evaluate(
                "([texts, beam]) => webTranslator.translateDetailed("
                "texts, {beam})", [texts, mode == "beam"])
            same += identical_rows(got, expected(model.translator, texts,
                                                 mode == "beam"))
        assert same == len(model.texts) >= 200
    error = page.evaluate("webTranslator.translate('one').catch("
                          "e => e.name + ': ' + e.message)")
    assert error.startswith("TypeError: `texts` must be an array")


@pytest.mark.slow
def test_page_from_a_file_url_says_to_serve_it(page, web_export):
    out = web_export[1]
    other = page.context.browser.new_page()
    other.goto((out / "index.html").as_uri())
    assert "file://" in other.text_content("#status")
    other.close()
