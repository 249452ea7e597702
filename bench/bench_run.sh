#!/usr/bin/env bash
# Wall time and peak memory of the default pipeline from scratch, setup excluded.
# Runs in a temporary copy of the committed tree so the working copy is untouched.
#   bash bench/bench_run.sh [snakemake targets...]
# Peak memory is GNU time's maximum resident set size over every process it waited
# for, i.e. the largest single job (Snakemake runs jobs as separate processes).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive HEAD | tar -x -C "$work"
cd "$work"
git init -q && git add -A && git -c user.email=b@b -c user.name=bench commit -qm bench
export PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$work/src"
start=$(date +%s.%N)
/usr/bin/time -f "peak RSS of the largest job: %M KB" snakemake --cores 2 "$@" --quiet all 2> time.err >/dev/null || { cat time.err; exit 1; }
end=$(date +%s.%N)
grep "peak RSS" time.err
printf 'wall time: %.0f s on %s cores (load average before: %s)\n' "$(echo "$end - $start" | bc)" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)"
t0=$(date +%s.%N); snakemake -n --quiet >/dev/null 2>&1; t1=$(date +%s.%N)
printf 'snakemake -n on the finished tree: %.2f s\n' "$(echo "$t1 - $t0" | bc)"
t0=$(date +%s.%N); dvc status -q >/dev/null 2>&1 || true; t1=$(date +%s.%N)
printf 'dvc status on the finished tree: %.2f s\n' "$(echo "$t1 - $t0" | bc)"
