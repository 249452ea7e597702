#!/usr/bin/env bash
# The GPU measurements of one device session, in one command (about 9 minutes on one H100):
#   1. bench/bench_gpu.py: training throughput (reference loop, device loop, CUDA graphs,
#      K cells together, K processes) and CPU/CUDA agreement;
#   2. bench/learning_curves.py --device cuda: the GPU profile's cells (ratios 0.1/0.5/0.9 x
#      units 2/4) at n_train 30,000 and 100,000 side by side, each scheduled for as many image
#      passes as the measured throughput allows in about 170 s (at most 3,000,000);
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
timeout 150 $PY bench/bench_gpu.py --params $PARAMS --out "$OUT" --parts cells,processes,cross_device >> "$OUT/bench.log" 2>&1
PASSES=$($PY - "$OUT/bench_gpu.json" <<'EOF'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["cells"]["together"]
    rate = max(r["images_per_s"] for r in rows if r["cells"] <= 8)
except Exception:  # noqa: BLE001 - no measurement: a budget that fits the eager loop
    rate = 60000.0
# 12 cells in two processes share the GPU for about 170 s of training
print(int(min(3_000_000, max(300_000, rate * 170 / 12)) // 100_000 * 100_000))
EOF
)
echo "learning curves: $PASSES passes per cell" >> "$OUT/bench.log"
CELLS=0.1:2,0.5:2,0.9:2,0.1:4,0.5:4,0.9:4
EVAL=100000,300000,1000000,2000000,$PASSES
for N in 30000 100000; do
  OMP_NUM_THREADS=8 OPENBLAS_NUM_THREADS=8 MKL_NUM_THREADS=8 timeout 280 $PY bench/learning_curves.py --device cuda --params $PARAMS --cells $CELLS --n-train $N \
    --max-passes "$PASSES" --eval-at "$EVAL" --threads 8 --probe-train 10000 --linear-train 30000 \
    --out "$LC/learning_curves_gpu_n$N" > "$OUT/lc_n$N.log" 2>&1 &
done
wait
cp "$LC"/learning_curves_gpu_n*.json "$OUT/" 2>/dev/null
mkdir -p "$OUT/paper"
timeout 140 $PY bench/bench_gpu.py --params $PARAMS --out "$OUT/paper" --parts paper_scale --compile > "$OUT/paper.log" 2>&1
ls -la "$OUT" "$OUT/paper"
