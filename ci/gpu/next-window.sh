#!/usr/bin/env bash
# The next GPU window in one device call (docs/gpu.md, "The next GPU window"), each part under
# its own time limit so that a slow part leaves the others theirs:
#   1. the real track's verdicts: its 21 cells (3 seeds) and its stability set, through
#      ci/gpu/device-run.sh (packed as real/run.tgz.part*; adopt with ci/gpu/adopt.sh)
#   2. the copy tree's GPU learning curves, to choose its epochs by hidden-patch error alone
#      (bench/learning_curves.py, 4 cells to CURVE_PASSES image passes: 4.5M, 1.5x the profile's 3M)
#   3. K cells stacked as one model against K CUDA graphs (bench/bench_gpu.py --parts stacked)
# Two device calls (carry .whl and .gpu, docs/gpu.md step 1; one call may run 600 s at most):
#   OUT=$OUT PARTS=real bash ci/gpu/next-window.sh             (timeout_s 420: about 6 minutes)
#   OUT=$OUT PARTS=curves,bench bash ci/gpu/next-window.sh     (timeout_s 360: about 5 minutes)
# Rehearsal here, on the CPU (a tiny profile of its own, the curves on the CPU):
#   OUT=/tmp/w PROFILE=/tmp/tiny.yaml CURVE_DEVICE=cpu CURVE_PASSES=2000 CURVE_EVAL=1000,2000 \
#     CURVE_TRAIN=500 BENCH_STEPS=3 bash ci/gpu/next-window.sh
set -u
OUT=${OUT:?set OUT}
PY=${PYTHON:-python3}
REPO=$PWD
. ci/gpu/env.sh
mkdir -p "$OUT/real" "$OUT/curves" "$OUT/bench"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
{ nvidia-smi --query-gpu=timestamp,utilization.gpu --format=csv,noheader -l 1 > "$OUT/gpu_busy.csv" 2>/dev/null & } 
SAMPLER=$!
step() { echo "next-window: $(date +%T) $*" | tee -a "$OUT/steps.log"; }
PARTS=${PARTS:-real,curves,bench}
want() { [[ ",$PARTS," == *",$1,"* ]]; }

if want real; then
step "1. the real track and its stability set (at most ${REAL_SECONDS:-330} s)"
OUT="$OUT/real" RUN_SECONDS=${REAL_SECONDS:-330} CORES=${CORES:-14} PROFILE=${PROFILE:-gpu} \
  STAGES=prepare_real,train_real_seed_A,train_real_seed_B,train_real_stable_seed_A,train_real_stable_seed_B \
  bash ci/gpu/device-run.sh > "$OUT/real/device-run.out" 2>&1
step "   $(tail -1 "$OUT/real/run.log" 2>/dev/null)"
else  # the GPU profile's params.yaml, as device-run.sh writes it
  $PY -m mae_hlvm profile "${PROFILE:-gpu}" --force > /dev/null || exit 1
fi

if want curves; then
step "2. the copy tree's learning curves (at most ${CURVE_SECONDS:-240} s)"
timeout "${CURVE_SECONDS:-240}" $PY bench/learning_curves.py --params params.yaml --device "${CURVE_DEVICE:-cuda}" \
  --cells 0.1:2,0.5:2,0.9:2,0.5:4 --n-train "${CURVE_TRAIN:-100000}" --max-passes "${CURVE_PASSES:-4500000}" \
  --eval-at "${CURVE_EVAL:-375000,750000,1500000,3000000,4500000}" --probe-train 20000 --linear-train 20000 \
  --out "$OUT/curves/learning_curves_copytree_gpu" > "$OUT/curves/run.out" 2>&1
step "   exit $?"
fi

if want bench; then
step "3. stacked cells against graphs (at most ${BENCH_SECONDS:-90} s)"
timeout "${BENCH_SECONDS:-90}" $PY bench/bench_gpu.py --params params.yaml --parts stacked --groups 3,4 \
  --steps "${BENCH_STEPS:-300}" --out "$OUT/bench" --work /tmp/bench-gpu-work > "$OUT/bench/run.out" 2>&1
step "   exit $?"
fi
kill "$SAMPLER" 2>/dev/null
ls -la "$OUT" "$OUT"/*
