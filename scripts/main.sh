#!/usr/bin/env bash
# Set everything up, then run the main job on the bundled SmolLM2-135M-Instruct and real data:
# DVI online over a ShareGPT slice (the drafter's Kangaroo adapter and LoRA head learn while every output token stays
# the base model's greedy token), then print where the metrics, the plot and the checkpoint are.
# Knobs (environment): MAX_PROMPTS (300), MAX_NEW_TOKENS (32), THREADS (1), OUT (runs/main), EXTRA (more flags).
# The DVI training settings are the defaults of the flags: `--dvi-settings tuned` (dvi/settings.py), measured on this
# model (runs/replay, runs/main/README.md); EXTRA="--dvi-settings workplan" runs the work plan's 7B values instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/main}
python3 -m evaluation.inference_kangaroo --model-id smollm2-135m --adapter-mode train \
    --exitlayer 2 --threshold 0.6 --steps 6 --temperature 0.0 --seed 123 \
    --dvi-online true --prompts-jsonl assets/sharegpt.jsonl --max-prompts "${MAX_PROMPTS:-300}" \
    --max-new-tokens "${MAX_NEW_TOKENS:-32}" --num-threads "${THREADS:-1}" \
    --save-lora-path "$OUT/checkpoints" --metrics-out "$OUT/metrics" --answer-file "$OUT/answers.jsonl" --overwrite \
    ${EXTRA:-}
echo "main job done: plot $OUT/metrics/dvi_progress.png, CSVs $OUT/metrics/{acceptance,speed,trainer}.csv," \
     "drafter checkpoint $OUT/checkpoints/final.pt, answers $OUT/answers.jsonl"
