"""Serve a web export on 127.0.0.1, cross-origin isolated.

Browsers refuse `fetch` on file:// pages, so a web export must come from
a web server; any static server works (one thread). Threads in
onnxruntime-web need `SharedArrayBuffer`, which a page has only when it
is cross-origin isolated: served with `Cross-Origin-Opener-Policy:
same-origin` and `Cross-Origin-Embedder-Policy: require-corp`. This is
Python's `http.server` with those headers, the WebAssembly and module
MIME types, and no caching (a new export in the same folder is read
again).
"""

import functools
import http.server
import os

from keras_transformer.checks import check_int
from keras_transformer.contract import ONNX_MANIFEST

HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript",
          ".js": "text/javascript", ".json": "application/json",
          ".onnx": "application/octet-stream",
          ".model": "application/octet-stream"}


class IsolatedHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the cross-origin isolation headers."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      **_TYPES}

    def end_headers(self):
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # Quiet: library code.
        pass


def make_server(directory: str | os.PathLike, port: int = DEFAULT_PORT
                ) -> http.server.ThreadingHTTPServer:
    """A server of `directory` on 127.0.0.1:`port` (0: a free port), not
    yet serving (`serve_forever`; `server_address[1]` is the port).

    Raises:
        TypeError: `port` is not an int.
        ValueError: `directory` is not a web export (no manifest), or
            `port` is not in [0, 65535] or not free.
    """
    directory = os.fspath(directory)
    if not os.path.isfile(os.path.join(directory, ONNX_MANIFEST)) or \
            not os.path.isfile(os.path.join(directory, "index.html")):
        raise ValueError(
            "`directory` must be a web export folder (`keras-transformer "
            f"export --format web`), with index.html and {ONNX_MANIFEST}. "
            f"Received: directory={directory!r}")
    check_int("port", port, 0)
    if port > 65535:
        raise ValueError(
            f"`port` must be an int in [0, 65535]. Received: port={port!r}")
    handler = functools.partial(IsolatedHandler, directory=directory)
    try:
        return http.server.ThreadingHTTPServer((HOST, port), handler)
    except OSError as error:  # Port in use, or not allowed.
        raise ValueError(
            f"`port` must be free on {HOST} ({error.strerror}). Received: "
            f"port={port!r}") from error


def serve_web(directory: str | os.PathLike, port: int = DEFAULT_PORT,
              ready=None) -> None:
    """Serves a web export on http://127.0.0.1:`port`/ until interrupted.

    Args:
        directory: a folder written by `export_web`.
        port: int, the port; 0 picks a free one. Defaults to 8000.
        ready: optional callable, given the page's URL once listening.
    """
    with make_server(directory, port) as server:
        if ready is not None:
            ready(f"http://{HOST}:{server.server_address[1]}/")
        server.serve_forever()
