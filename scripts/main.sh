#!/usr/bin/env bash
# Set everything up, then run the main job on the bundled SmolLM2-135M-Instruct and real data:
# DVI online over a ShareGPT slice with the defaults of `--dvi-online true` (no other DVI flag: the drafter learns while
# every output token stays the base model's greedy token), each prompt also decoded greedily in the same run
# (--compare-greedy), then OUT/README.md with the online targets: top1_agree over the last quarter of blocks, decode
# tokens/s against greedy on the same prompts at the same thread count, outputs equal to greedy.
# The feature drafter starts from its warm start (python -m scripts.warm_start: built once from ShareGPT prompts
# 1000-1999, which no run trains on, into WARM_START; cached) and keeps learning online.
# Knobs (environment): MAX_PROMPTS (150), MAX_NEW_TOKENS (64), THREADS (1), OUT (runs/main), EXTRA (more flags),
# NOTE (a line for the README, e.g. "quiet machine"), WARM_START (.cache/warm_start/smollm2-135m.pt; "" starts the
# drafters afresh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/main}
mkdir -p "$OUT"
WARM_START=${WARM_START-.cache/warm_start/smollm2-135m.pt}
WARM=()
if [ -n "$WARM_START" ]; then
  python3 -m scripts.warm_start --model-id smollm2-135m --out "$WARM_START" 2>&1 | tee "$OUT/warm_start_log.txt"
  WARM=(--dvi-warm-start "$WARM_START")
fi
CMD=(python3 -m evaluation.inference_kangaroo --model-id smollm2-135m --dvi-online true --compare-greedy "${WARM[@]}"
     --prompts-jsonl assets/sharegpt.jsonl --max-prompts "${MAX_PROMPTS:-150}" --max-new-tokens "${MAX_NEW_TOKENS:-64}"
     --num-threads "${THREADS:-1}" --save-lora-path "$OUT/checkpoints" --metrics-out "$OUT/metrics"
     --answer-file "$OUT/answers.jsonl" --overwrite --no-progress ${EXTRA:-})
"${CMD[@]}" 2>&1 | tee "$OUT/log.txt"
python3 -m scripts.main_report --out "$OUT" --command "$(printf '%q ' "${CMD[@]}")" \
    --note "${NOTE:-threads ${THREADS:-1}}"
echo "main job done: $OUT/README.md, plot $OUT/metrics/dvi_progress.png, CSVs $OUT/metrics/, drafter checkpoint" \
     "$OUT/checkpoints/final.pt, answers $OUT/answers.jsonl"
