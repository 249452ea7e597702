#!/usr/bin/env bash
# The GPU measurements of one device session, in one command (about 8 minutes on one H100):
#   1. bench/bench_gpu.py: training throughput (reference loop, device loop, CUDA graphs,
#      K cells together, K processes) and CPU/CUDA agreement;
#   2. bench/learning_curves.py --device cuda: the GPU profile's cells (ratios 0.1/0.5/0.9 x
#      units 2/4) at n_train 30,000 for 3,000,000 image passes, beside ratios 0.1/0.5/0.9 at
#      unit 2 on n_train 100,000 for 10,000,000 passes (LC_RUNS overrides);
#   3. the ViT-B/16 MAE step (eager at batch 256 and 512, compiled at 512).
# Usage: OUT=folder bash bench/run_gpu_benchmarks.sh   (PYTHONPATH must reach src/)
# Writes at most 8 files into $OUT: logs and JSON (the markdown tables are made from the JSON).
set -u
OUT=${OUT:?set OUT to the output folder}
PY=${PYTHON:-python3}
PARAMS=profiles/gpu/params.yaml
export PYTHONUNBUFFERED=1
LC=/tmp/lc && mkdir -p "$LC"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; } > "$OUT/bench.log" 2>&1
timeout 90 $PY bench/bench_gpu.py --params $PARAMS --out "$OUT" --parts cells,processes,cross_device >> "$OUT/bench.log" 2>&1
# n_train:passes:cells, side by side (measured first: 6 cells in one process train at about
# 230,000 images/s while a second such process runs beside it)
LC_RUNS=${LC_RUNS:-"30000:3000000:0.1:2,0.5:2,0.9:2,0.1:4,0.5:4,0.9:4 100000:10000000:0.1:2,0.5:2,0.9:2"}
for run in $LC_RUNS; do
  N=${run%%:*}; rest=${run#*:}; P=${rest%%:*}; CELLS=${rest#*:}
  OMP_NUM_THREADS=8 OPENBLAS_NUM_THREADS=8 MKL_NUM_THREADS=8 timeout ${LC_TIMEOUT:-280} $PY bench/learning_curves.py \
    --device cuda --params $PARAMS --cells "$CELLS" --n-train "$N" --max-passes "$P" \
    --eval-at 100000,300000,1000000,3000000,6000000,10000000,"$P" --threads 8 --probe-train 10000 \
    --linear-train 30000 --out "$LC/learning_curves_gpu_n$N" > "$OUT/lc_n$N.log" 2>&1 &
done
wait
cp "$LC"/learning_curves_gpu_n*.json "$OUT/" 2>/dev/null
mkdir -p "$OUT/paper"
timeout 120 $PY bench/bench_gpu.py --params $PARAMS --out "$OUT/paper" --parts paper_scale --compile > "$OUT/paper.log" 2>&1
ls -la "$OUT" "$OUT/paper"
