#!/usr/bin/env bash
# Set everything up, then run the main job on the bundled SmolLM2-135M-Instruct and real data:
# DVI online over a ShareGPT slice (the drafter's LoRA head learns while every output token stays the
# base model's greedy token), then print where the metrics, the plot and the checkpoint are.
# Knobs (environment): MAX_PROMPTS (300), MAX_NEW_TOKENS (32), THREADS (1), OUT (runs/main), EXTRA (more flags),
# SMALL_MODEL_SETTINGS. The work plan's DVI defaults were tuned for a 7B model on a GPU and barely move a
# 135M model's layer-2 drafter in 300 prompts (runs/dvi_defaults); these settings learn 3x faster and stay stable
# (runs/main/README.md says which runs led to them and why): rank 64 LoRA, lr 3e-3, KD at tau 1.0, a 500-block
# KD warm-up, and the KL weight kept at 1.0 (it anchors CE/PG, which otherwise make the drafter overconfident).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/main}
python3 -m evaluation.inference_kangaroo --model-id smollm2-135m --adapter-path none \
    --exitlayer 2 --threshold 0.6 --steps 6 --temperature 0.0 --seed 123 \
    --dvi-online true --prompts-jsonl assets/sharegpt.jsonl --max-prompts "${MAX_PROMPTS:-300}" \
    --max-new-tokens "${MAX_NEW_TOKENS:-32}" --num-threads "${THREADS:-1}" \
    --save-lora-path "$OUT/checkpoints" --metrics-out "$OUT/metrics" --answer-file "$OUT/answers.jsonl" --overwrite \
    ${SMALL_MODEL_SETTINGS:---dvi-lora-r 64 --dvi-lora-alpha 64 --dvi-lr 3e-3 --dvi-tau 1.0 --dvi-warmup-steps 500 --dvi-kl-lambdamin 1.0} \
    ${EXTRA:-}
echo "main job done: plot $OUT/metrics/dvi_progress.png, CSVs $OUT/metrics/{acceptance,speed,trainer}.csv," \
     "drafter checkpoint $OUT/checkpoints/final.pt, answers $OUT/answers.jsonl"
