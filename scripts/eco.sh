#!/usr/bin/env bash
# Issue 20's figures in one command (run it on a quiet machine; ~3 h on 1 CPU thread at the defaults):
#   1. the main job's drafter exported (PEFT adapter + standalone HF draft model) into $OUT/exports (git-ignored)
#   2. the standalone export vs the project's self-drafter on 20 held-out ShareGPT prompts: mean accepted lengths,
#      every output checked against greedy, the adapter window's cost (full attention vs the exact window)
#   3. the Spec-Bench method comparison computed as Spec-Bench's speed.py does, mean ± std over $REPEATS repeats,
#      with Spec-Bench answer files under $OUT/benchmark/data/spec_bench/
# Knobs (environment): CKPT (runs/main/checkpoints/final.pt), OUT (runs/eco), PER_CATEGORY (5), REPEATS (3),
# MAX_NEW_TOKENS (64), THREADS (1). Then write the figures into $OUT/README.md (runs/eco/README.md says which).
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${CKPT:-runs/main/checkpoints/final.pt}
OUT=${OUT:-runs/eco}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS
python3 -m kangaroo_dvi.export "$CKPT" --peft "$OUT/exports/drafter_peft" --standalone "$OUT/exports/drafter"
python3 -m scripts.experiments.standalone --load-lora "$CKPT" --out "$OUT/standalone" --num-threads "$THREADS" \
    --max-new-tokens "${MAX_NEW_TOKENS:-64}"
python3 -m scripts.benchmark --model-id smollm2-135m --per-category "${PER_CATEGORY:-5}" \
    --max-new-tokens "${MAX_NEW_TOKENS:-64}" --load-lora "$CKPT" --repeats "${REPEATS:-3}" \
    --methods baseline,hf_generate,prompt_lookup,kangaroo,ngram,dvi_self,dvi --out "$OUT/benchmark" \
    --num-threads "$THREADS" --no-progress
echo "figures: $OUT/standalone/compare.md, $OUT/benchmark/table.md (+ speedup.png, answer files under" \
     "$OUT/benchmark/data/spec_bench/)"
