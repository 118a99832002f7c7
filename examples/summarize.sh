#!/usr/bin/env bash
# Summarization, offline: installs the package into .venv, trains a small
# summarizer of Debian package descriptions (bundled) with copy attention,
# reports ROUGE against the first-sentence and first-n-words baselines,
# exports SavedModel + ONNX and checks them. About 13 minutes on 2 CPU
# cores (measured: 716 s after the install, from a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install test
.venv/bin/keras-transformer quickstart --task summarization \
    --run "${1:-runs/summarize}"
