#!/usr/bin/env bash
# Set everything up (no ShareGPT: the tests build their own small files), lint, and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for a quick pass without the real model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-sharegpt
python3 -m ruff check .
python3 -m pytest tests -q "$@"
