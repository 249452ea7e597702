#!/usr/bin/env bash
# The SLURM check end to end (docs/slurm.md): install and start the single-node test
# cluster, then tests/test_slurm.py with its cluster tests switched on.
#
#   bash ci/slurm/run-test.sh                 # MAE_HLVM_SLURM=full: one cell, then the whole tiny DAG (~10 min)
#   MAE_HLVM_SLURM=1 bash ci/slurm/run-test.sh   # one training cell only (~1 min)
#   bash ci/slurm/run-test.sh --record FILE   # also write the output to FILE (bench/results/slurm_<date>.txt)
#
# Needs root (apt-get, daemons). Leaves the cluster running; ci/slurm/stop-cluster.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."

record=""
if [ "${1:-}" = "--record" ]; then record=${2:?--record needs a file}; fi
if [ -n "$record" ]; then
  exec > >(tee "$record") 2>&1
fi

export MAE_HLVM_SLURM=${MAE_HLVM_SLURM:-full}
export DVC_NO_ANALYTICS=1
PY=.venv/bin/python
ms() { date +%s%3N; }

echo "run-test: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname -s), $(nproc) cores, MAE_HLVM_SLURM=$MAE_HLVM_SLURM"
echo "run-test: $($PY -m snakemake --version 2>/dev/null | sed 's/^/snakemake /'), $($PY -m pip show snakemake-executor-plugin-slurm 2>/dev/null | awk '/^Version/{print "snakemake-executor-plugin-slurm " $2}')"
t=$(ms)
bash ci/slurm/start-cluster.sh
echo "run-test: start-cluster.sh took $(( ($(ms) - t) / 1000 )).$(( ($(ms) - t) % 1000 / 100 )) s"

t=$(ms)
set +e
$PY -m pytest -q -s -p no:cacheprovider -rA --durations=0 tests/test_slurm.py
rc=$?
set -e
echo "run-test: pytest took $(( ($(ms) - t) / 1000 )) s, exit $rc"
exit $rc
