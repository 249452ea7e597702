#!/usr/bin/env bash
# Stop the test cluster ci/slurm/start-cluster.sh started: slurmd, slurmctld, munged,
# each by the pid in its pid file. Idempotent: a daemon not running is skipped.
# Jobs still running are cancelled first. Packages, /etc/slurm/slurm.conf, the state
# under /var/lib/slurm and the logs (jobcomp.txt included) are kept.
set -euo pipefail

say() { printf 'stop-cluster: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  say "needs root"; exit 1
fi

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {  # name pidfile
  local name=$1 file=$2 pid
  if ! pid_alive "$file"; then
    say "$name not running"
    return
  fi
  pid=$(cat "$file")
  say "stopping $name (pid $pid)"
  kill "$pid"
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return; }
    sleep 0.1
  done
  say "$name (pid $pid) still running after 15 s: sending SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

if pid_alive /run/slurmctld.pid && command -v squeue >/dev/null; then
  jobs=$(timeout 10 squeue -h -t pending,running -o '%i' 2>/dev/null | tr '\n' ' ' || true)
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs || true
  fi
fi
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop munged /run/munge/munged.pid
say "stopped"
