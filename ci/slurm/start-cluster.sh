#!/usr/bin/env bash
# A single-node SLURM test cluster on this machine, from Debian's packages, without
# systemd: munged, slurmctld and slurmd started directly (docs/slurm.md).
#
#   bash ci/slurm/start-cluster.sh        # install if needed, (re)start if needed, smoke test
#
# Idempotent: packages are installed only when missing, and daemons already running
# with the same slurm.conf are left alone (a changed slurm.conf restarts them). Needs
# root. No slurmdbd: `sacct` does not work here; finished jobs are recorded by
# jobcomp/filetxt in $JOBCOMP (one line per job: JobId, Name, JobState, Partition, ExitCode...).
#
# The node is declared with the shapes profiles/slurm asks for (8 CPUs, 20 GB, one GPU)
# so that the production profile is submitted unchanged; SlurmdParameters=config_overrides
# lets slurmd accept more than the hardware has, and the GPU is a count-only GRES (no
# device file: nothing is bound, CUDA is never touched). Snakemake runs one job at a
# time here (ci/slurm/test-profile), so the 2 real cores are never oversubscribed.
# Override with MAE_SLURM_CPUS / MAE_SLURM_MEM_MB / MAE_SLURM_GPUS.
set -euo pipefail

CPUS=${MAE_SLURM_CPUS:-8}
MEM_MB=${MAE_SLURM_MEM_MB:-20000}
GPUS=${MAE_SLURM_GPUS:-1}
CONF=/etc/slurm/slurm.conf          # where srun looks by default (the jobstep drops SLURM_CONF)
LOGDIR=/var/log/slurm
JOBCOMP=$LOGDIR/jobcomp.txt
STATE=/var/lib/slurm
NODE=$(hostname -s)

say() { printf 'start-cluster: %s\n' "$*"; }
t0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

if [ "$(id -u)" -ne 0 ]; then
  say "needs root (apt-get, /etc/slurm, daemons)"; exit 1
fi

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
  # slurmctld + slurmd + slurm-client is what the slurm-wlm metapackage brings that is
  # used here (it adds ~30 plugin and -dev packages on top)
  say "installing slurmctld slurmd slurm-client munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  say "installed: $(slurmctld -V) ($(elapsed) s)"
else
  say "packages present: $(slurmctld -V), munge $(dpkg-query -W -f='${Version}' munge 2>/dev/null || echo '?')"
fi

# ---------------------------------------------------------------- munge
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

if pid_alive /run/munge/munged.pid && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged running (pid $(cat /run/munge/munged.pid))"
else
  say "starting munged"
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n | unmunge >/dev/null || { say "munged did not come up"; exit 1; }
  say "munged up (pid $(cat /run/munge/munged.pid))"
fi

# ---------------------------------------------------------------- slurm.conf
GRES_TYPES="" NODE_GRES=""
if [ "$GPUS" -gt 0 ]; then GRES_TYPES="GresTypes=gpu" NODE_GRES="Gres=gpu:$GPUS"; fi

new_conf=$(mktemp)
trap 'rm -f "$new_conf"' EXIT
cat >"$new_conf" <<EOF
# Written by ci/slurm/start-cluster.sh: a single-node test cluster (docs/slurm.md).
ClusterName=maehlvm
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no cgroups here: plain process tracking, no CPU binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that gives no --mem takes the whole node
DefMemPerCPU=1000
SlurmdParameters=config_overrides
$GRES_TYPES
# no slurmdbd (so no sacct): every finished job is one line of this file
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
# finished jobs stay in slurmctld (squeue --states=all, scontrol show job) for an hour:
# the Snakemake plugin polls squeue, and the test reads every job's partition and GPUs
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $NODE_GRES State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF

install -d -m 0755 /etc/slurm "$LOGDIR" "$STATE/slurmctld" "$STATE/slurmd"
changed=0
if ! cmp -s "$new_conf" "$CONF"; then
  say "writing $CONF"
  install -m 0644 "$new_conf" "$CONF"
  changed=1
fi
if [ "$GPUS" -gt 0 ]; then
  gres_line="NodeName=$NODE Name=gpu Count=$GPUS File=/dev/null"
else
  gres_line="# no GRES"
fi
if [ "$(cat /etc/slurm/gres.conf 2>/dev/null)" != "$gres_line" ]; then
  echo "$gres_line" >/etc/slurm/gres.conf
  changed=1
fi
touch "$JOBCOMP"

# ---------------------------------------------------------------- daemons
if [ "$changed" -eq 1 ]; then
  if pid_alive /run/slurmctld.pid || pid_alive /run/slurmd.pid; then
    say "slurm.conf changed: restarting slurmctld and slurmd"
    for f in /run/slurmd.pid /run/slurmctld.pid; do
      if pid_alive "$f"; then
        p=$(cat "$f"); kill "$p"
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      fi
    done
  fi
fi

if pid_alive /run/slurmctld.pid; then
  say "slurmctld running (pid $(cat /run/slurmctld.pid))"
else
  say "starting slurmctld"
  slurmctld          # daemonises; log in $LOGDIR/slurmctld.log
fi
if pid_alive /run/slurmd.pid; then
  say "slurmd running (pid $(cat /run/slurmd.pid))"
else
  say "starting slurmd"
  slurmd -N "$NODE"
fi

# ---------------------------------------------------------------- ready?
# a node drained by an earlier configuration stays drained in slurmctld's saved state
state="" resumed=0 start=$(date +%s)
while [ "$(date +%s)" -lt $((start + 30)) ]; do
  if [ "$(date +%s)" -ge $((start + 2)) ] && ! { pid_alive /run/slurmctld.pid && pid_alive /run/slurmd.pid; }; then
    state="slurmctld or slurmd exited"; break
  fi
  state=$(timeout 5 sinfo -h -n "$NODE" -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|alloc) break ;;
    drain*|drng*|down*|inval*)
      if [ "$resumed" -eq 0 ]; then
        say "node $NODE is '$state' ($(sinfo -h -n "$NODE" -o '%E')): resuming it"
        scontrol update NodeName="$NODE" State=RESUME || true
        resumed=1
      fi ;;
  esac
  sleep 0.1
done
case "$state" in
  idle|mix|alloc) ;;
  *)
    say "node $NODE not ready (${state:-no answer from slurmctld}); last log lines:"
    tail -n 8 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" >&2 || true
    exit 1 ;;
esac
sinfo -o '%P %a %D %t %c %m %G' | sed 's/^/start-cluster:   /'

# smoke test: a batch step through srun, as every Snakemake job does
if ! out=$(srun -J start-cluster-smoke -p cpu -n1 -t 1 hostname 2>&1); then
  say "smoke test failed: $out"; exit 1
fi
say "smoke test: srun ran on $out"
say "ready in $(elapsed) s; jobs recorded in $JOBCOMP (JobCompLoc)"
