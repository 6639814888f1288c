#!/usr/bin/env bash
# One command on a CUDA machine (bash scripts/gpu_check.sh): set up, then
#   1. the test suite, with the device tests (tests/kangaroo/test_device_lossless.py) on the GPU in float16;
#   2. float16 losslessness of Kangaroo (and HF generate) against greedy decoding on the bundled model, Spec-Bench
#      questions: a difference passes only as a near-tie of the verifier (top-2 logit gap within
#      kangaroo.lossless.TIE_TOLERANCE), and each one is printed with its gap;
#   3. the block profile of a 7B-shaped Llama with random weights, deep(n) for n = 1..7, with the speedup
#      projected at the acceptance measured on the CPU (python -m scripts.profile shape).
# Everything goes to $OUT (runs/gpu_check); the exit code is 1 if any part failed (all parts still run).
# Knobs: DEVICE (cuda), OUT, PER_CATEGORY (3), MAX_NEW_TOKENS (64), SKIP_SETUP=1 to skip scripts/setup.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu_check}
if [ -z "${SKIP_SETUP:-}" ]; then bash scripts/setup.sh --no-sharegpt || exit 1; fi
python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device is visible: run scripts/gpu_check.sh on a machine with a GPU and a CUDA build of torch')" || exit 2
mkdir -p "$OUT"
status=0
echo "== 1/3 test suite (device tests on $DEVICE, float16)"
KANGAROO_TEST_DEVICE=$DEVICE python3 -m pytest tests -q 2>&1 | tee "$OUT/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== 2/3 float16 losslessness on the bundled model"
python3 -m scripts.benchmark --model-id smollm2-135m --device "$DEVICE" --dtype float16 \
    --methods kangaroo,hf_generate --per-category "${PER_CATEGORY:-3}" --max-new-tokens "${MAX_NEW_TOKENS:-64}" \
    --out "$OUT/lossless_fp16" --overwrite --no-progress || status=1
echo "== 3/3 block profile of a 7B-shaped Llama (random weights)"
python3 -m scripts.profile shape --shape 7b --device "$DEVICE" --dtype float16 --steps 6 \
    --out "$OUT/profile_7b" || status=1
echo "gpu_check done (exit $status): $OUT/tests.log, $OUT/lossless_fp16/table.md, $OUT/profile_7b/block_costs.md"
exit $status
