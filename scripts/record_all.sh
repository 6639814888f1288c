#!/usr/bin/env bash
# Every issue's figures in one run, in order, one decode thread, on a machine with nothing else running
# (~1.5 h on 2 cores). Each step writes its own report; runs/record/README.md gathers the figures by hand.
#   1. engine: a step and verify passes per weight format against llama-bench (issue 18)
#   2. one block's parts and one self-drafted token's share of a greedy step (issues 17, 18)
#   3. the main job: DVI online with the defaults, greedy on the same prompts in the same run (issue 17)
#   4. Spec-Bench 13 x 5, every method in one run, speed.py semantics, 3 repeats (issues 17, 20)
#   5. the peer: our greedy and dvi against llama.cpp plain and lookup on 26 questions (issue 18)
#   6. the standalone export against the self-drafter on 20 prompts (issue 20)
#   7. the server under load, 1/2/4/8 clients, and learning over 300 served prompts (issue 19)
# Knobs (environment): OUT (runs/record), STEPS (the steps to run, default "1 2 3 4 5 6 7"), REPEATS (3), METHODS
# (step 4's, default baseline,ngram,memory,dvi_self,dvi), CKPT (the drafter of steps 4-6; default: this record's main
# job, OUT/main, when step 3 wrote one, else runs/main's). Issue 20's figures (the export against the self-drafter,
# every method with Hugging Face's beside ours):
#   STEPS="6 4" METHODS=baseline,hf_generate,prompt_lookup,kangaroo,ngram,dvi_self,dvi OUT=runs/eco \
#       bash scripts/record_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/record}
ckpt() {
  if [ -n "${CKPT:-}" ]; then echo "$CKPT"
  elif [ -f "$OUT/main/checkpoints/final.pt" ]; then echo "$OUT/main/checkpoints/final.pt"
  else echo runs/main/checkpoints/final.pt; fi
}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
step() { echo "== $(date -u +%H:%M:%S) step $1: ${*:2}" | tee -a "$OUT/steps.log"; }
for s in ${STEPS:-1 2 3 4 5 6 7}; do
  case $s in
    1) step 1 engine; [ -x .llamacpp/build/bin/llama-bench ] || bash scripts/setup/build_llamacpp.sh
       python3 -m scripts.profile engine --model-id smollm2-135m --repeats 9 --out "$OUT/engine" ;;
    2) step 2 profile
       python3 -m scripts.profile block --model-id smollm2-135m --context 160 --threads 1 --engines auto \
           --weights-list stored,bfloat16,float32 --out "$OUT/profile" ;;
    3) step 3 main job; OUT="$OUT/main" NOTE="quiet machine, record_all" bash scripts/main.sh ;;
    4) step 4 spec-bench
       python3 -m scripts.benchmark --model-id smollm2-135m --per-category 5 --max-new-tokens 64 \
           --load-lora "$(ckpt)" --methods "${METHODS:-baseline,ngram,memory,dvi_self,dvi}" --repeats "${REPEATS:-3}" \
           --cost-curve "$OUT/benchmark/cost.json" --out "$OUT/benchmark" --num-threads 1 --no-progress ;;
    5) step 5 peer
       python3 -m scripts.peer_compare --model-id smollm2-135m --per-category 2 --max-new-tokens 64 --num-threads 1 \
           --load-lora "$(ckpt)" --out "$OUT/peer" ;;
    6) step 6 standalone export
       python3 -m kangaroo_dvi.export "$(ckpt)" --peft "$OUT/eco/exports/drafter_peft" \
           --standalone "$OUT/eco/exports/drafter"
       python3 -m scripts.experiments standalone --load-lora "$(ckpt)" --out "$OUT/eco/standalone" --num-threads 1 ;;
    7) step 7 serve load
       python3 -m scripts.serve_load --model-id smollm2-135m --prompts-jsonl assets/sharegpt.jsonl \
           --out "$OUT/serve" --overwrite ;;
    *) echo "record_all: no step $s (steps are 1..7)"; exit 2 ;;
  esac
done
step done
