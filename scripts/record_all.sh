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
#   8. the projection: the trained drafters' held-out agreement at a 7B-class GPU's costs (issue 28.4)
#   9. Spec-Bench sampled (TEMPERATURE 0.7, TOP_P 1.0, SAMPLED_METHODS, SAMPLED_PER_CATEGORY 2), equal to plain sampling
#  10. the paper's ablation: the main job trained KL-only, its drafters alone on Spec-Bench
# Steps 3, 4, 7, 8, 9 and 10 run once per weight regime of WEIGHTS (default "stored float32": the default weights, compute-
# bound, and float32, memory-bound; issue 28), into OUT/<weights>/ (main, benchmark, serve, projection), side by side.
# Knobs (environment): OUT (runs/record), STEPS (the steps to run, default "1 2 3 4 5 6 7 8 9 10"), WEIGHTS, REPEATS
# (3), PER_CATEGORY (5), METHODS (step 4's, default baseline,kangaroo,ngram,dvi_self,dvi_feature,dvi), DEPLOYED (the
# dvi chain of steps 4 and 9; default auto: ngram,memory,self), SERVE_ARGS (more flags of the server in step 7),
# SERVE_LOAD (more flags of step 7's load run, e.g. --learn-prompts 150), CKPT (the drafter of steps 4-9; default:
# the regime's main job, OUT/<weights>/main, when step 3 wrote one, else runs/main's). Issue 20's figures (the export against the self-drafter, every method with
# Hugging Face's beside ours):
#   STEPS="6 4" METHODS=baseline,hf_generate,prompt_lookup,kangaroo,ngram,dvi_self,dvi OUT=runs/eco \
#       bash scripts/record_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/record}
ckpt() {  # $1: the regime's folder
  if [ -n "${CKPT:-}" ]; then echo "$CKPT"
  elif [ -f "$1/main/checkpoints/final.pt" ]; then echo "$1/main/checkpoints/final.pt"
  else echo runs/main/checkpoints/final.pt; fi
}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
step() { echo "== $(date -u +%H:%M:%S) step $1: ${*:2}" | tee -a "$OUT/steps.log"; }
regime() {  # one regime's steps 3, 4, 7, 8, 9, 10: $1 the step, $2 the weights
  local w=$2 R="$OUT/$2"
  case $1 in
    3) step 3 "main job ($w)"; OUT="$R/main" EXTRA="--weights $w" NOTE="quiet machine, record_all, --weights $w" \
           bash scripts/main.sh ;;
    4) step 4 "spec-bench ($w)"
       python3 -m scripts.benchmark --model-id smollm2-135m --per-category "${PER_CATEGORY:-5}" --max-new-tokens 64 \
           --weights "$w" --load-lora "$(ckpt "$R")" --repeats "${REPEATS:-3}" \
           --methods "${METHODS:-baseline,kangaroo,ngram,dvi_self,dvi_feature,dvi}" --drafter "${DEPLOYED:-auto}" \
           --cost-curve "$R/benchmark/cost.json" --out "$R/benchmark" --num-threads 1 --no-progress ;;
    7) step 7 "serve load ($w)"
       python3 -m scripts.serve_load --model-id smollm2-135m --prompts-jsonl assets/sharegpt.jsonl \
           --server-args "--weights $w ${SERVE_ARGS:-}" --out "$R/serve" --overwrite ${SERVE_LOAD:-} ;;
    9) step 9 "spec-bench sampled at T=${TEMPERATURE:-0.7} ($w)"
       python3 -m scripts.benchmark --model-id smollm2-135m --per-category "${SAMPLED_PER_CATEGORY:-2}" \
           --max-new-tokens 64 --weights "$w" --load-lora "$(ckpt "$R")" --repeats 1 --temperature "${TEMPERATURE:-0.7}" \
           --top-p "${TOP_P:-1.0}" --seed 0 --methods "${SAMPLED_METHODS:-baseline,ngram,dvi}" --drafter "${DEPLOYED:-auto}" \
           --out "$R/benchmark_sampled" --num-threads 1 --no-progress ;;
    10) step 10 "the KL-only ablation ($w)"
       OUT="$R/main_kd_only" EXTRA="--weights $w --dvi-ablation kd_only" NOTE="record_all, KL-only, --weights $w" \
           bash scripts/main.sh
       python3 -m scripts.benchmark --model-id smollm2-135m --per-category "${PER_CATEGORY:-5}" --max-new-tokens 64 \
           --weights "$w" --load-lora "$R/main_kd_only/checkpoints/final.pt" --repeats "${REPEATS:-3}" \
           --methods baseline,dvi_self,dvi_feature --out "$R/benchmark_kd_only" --num-threads 1 --no-progress ;;
    8) step 8 "projection ($w)"
       python3 -m scripts.experiments projection --model-id smollm2-135m --load-lora "$(ckpt "$R")" \
           --out "$R/projection" --num-threads 1 ;;
  esac
}
for s in ${STEPS:-1 2 3 4 5 6 7 8 9 10}; do
  case $s in
    1) step 1 engine; [ -x .llamacpp/build/bin/llama-bench ] || bash scripts/setup/build_llamacpp.sh
       python3 -m scripts.profile engine --model-id smollm2-135m --repeats 9 --out "$OUT/engine" ;;
    2) step 2 profile
       python3 -m scripts.profile block --model-id smollm2-135m --context 160 --threads 1 --engines auto \
           --weights-list stored,bfloat16,float32 --out "$OUT/profile" ;;
    3|4|7|8|9|10) for w in ${WEIGHTS:-stored float32}; do regime "$s" "$w"; done ;;
    5) step 5 peer
       python3 -m scripts.peer_compare --model-id smollm2-135m --per-category 2 --max-new-tokens 64 --num-threads 1 \
           --load-lora "$(ckpt "$OUT/stored")" --out "$OUT/peer" ;;
    6) step 6 standalone export
       python3 -m kangaroo_dvi.export "$(ckpt "$OUT/stored")" --peft "$OUT/eco/exports/drafter_peft" \
           --standalone "$OUT/eco/exports/drafter"
       python3 -m scripts.experiments standalone --load-lora "$(ckpt "$OUT/stored")" --out "$OUT/eco/standalone" --num-threads 1 ;;
    *) echo "record_all: no step $s (steps are 1..10)"; exit 2 ;;
  esac
done
step done
