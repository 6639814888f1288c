#!/usr/bin/env bash
# Set everything up, then run the main job on the bundled SmolLM2-135M-Instruct and real data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
QUESTIONS=${QUESTIONS:-../shared/data/spec_bench/question.jsonl}
COMMON=(--model-id smollm2-135m --question-file "$QUESTIONS" --question-end "${N_QUESTIONS:-3}"
        --max-new-tokens "${MAX_NEW_TOKENS:-64}" --seed 123 --overwrite)
python3 -m evaluation.inference_baseline "${COMMON[@]}" --answer-file runs/main/baseline.jsonl
python3 -m evaluation.inference_kangaroo "${COMMON[@]}" --adapter-path none --exitlayer 2 --threshold 0.6 --steps 6 \
    --answer-file runs/main/kangaroo.jsonl
