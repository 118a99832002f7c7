"""The web export: translate inside a web page, offline.

    export   export_web: an ONNX export's token graphs, SentencePiece models
             and manifest, the page, translator.js and the runtime files of
             the pinned npm packages, as one static folder
    serve    serve_web: the folder on 127.0.0.1 with the headers that
             give the page cross-origin isolation (WebAssembly threads)
    node     node_translate: translator.js in Node.js (onnxruntime-web's
             Node build), the tests' and the export check's runner

Nothing here imports TensorFlow or needs Node.js to import; writing an
export needs the npm files (`npm ci`, see `export.install_command`), and
`node_translate` needs Node.js.
"""

from keras_transformer._lazy import lazy_attributes

_LAZY_NAMES = {
    "export_web": ".export",
    "install_command": ".export",
    "serve_web": ".serve",
    "make_server": ".serve",
    "node_translate": ".node",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)
