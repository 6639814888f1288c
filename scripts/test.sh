#!/usr/bin/env bash
# Set everything up (no ShareGPT: the tests build their own small files) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-sharegpt
python3 -m pytest tests -q "$@"
