#!/usr/bin/env bash
# The README's main job: installs the package into .venv, then trains on the
# bundled corpus, translates, exports SavedModel + ONNX and checks them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install test
.venv/bin/keras-transformer quickstart --run "${1:-runs/quickstart}"
