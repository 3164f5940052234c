#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests marked `slurm` (CI) and for trying
# `fairness_benchmark.py --executor slurm` without a cluster.
#
#   benchmarks/slurm_cluster.sh start    # munged, slurmctld, slurmd; waits until the node is idle
#   benchmarks/slurm_cluster.sh status   # sinfo
#   benchmarks/slurm_cluster.sh stop     # stops what `start` started, by PID
#
# Needs root and Debian's packages (no systemd needed):
#   apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
# The configuration, state, logs and PID files live in $RF_SLURM_DIR (default
# /tmp/robust-fairness-slurm); client commands find the cluster through
#   export SLURM_CONF=$RF_SLURM_DIR/slurm.conf
# (the tests look there by default). No accounting daemon: `sacct` does not work, and the benchmark's
# SLURM executor follows its jobs with `squeue` and its own files instead.
set -euo pipefail

DIR=${RF_SLURM_DIR:-/tmp/robust-fairness-slurm}
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

die() {
  echo "slurm_cluster.sh: $*" >&2
  exit 1
}

wait_idle() {  # until the node takes jobs (at most ~20 s)
  for _ in $(seq 100); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
    case "$state" in idle | mix | alloc) return 0 ;; esac
    sleep 0.2
  done
  return 1
}

write_conf() {
  local host node
  host=$(hostname -s)
  # the node line as slurmd sees this machine (CPUs, sockets, cores, memory), minus its uptime
  node=$(slurmd -C | head -n1)
  node=${node/NodeName=* CPUs/NodeName=$host CPUs}
  cat >"$CONF" <<EOF
# written by benchmarks/slurm_cluster.sh: a single-node cluster without accounting
ClusterName=robustfairness
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# no systemd and no cgroups in a container: track processes by parentage
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# start a job about a second after it is submitted, not after the default delays
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
ReturnToService=2
# a cancelled job is killed 2 s after its SIGTERM (default 30 s)
KillWait=2
# ended jobs stay visible in squeue for 5 minutes
MinJobAge=300
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

running() {  # is the daemon of this PID file alive?
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as their user)"
  for cmd in munged slurmctld slurmd sbatch sinfo; do
    command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
  done
  if running "$DIR/slurmctld.pid" && running "$DIR/slurmd.pid"; then
    wait_idle || die "running but the node is not idle: see $DIR/*.log"
    echo "already running; export SLURM_CONF=$CONF"
    return 0
  fi
  mkdir -p "$DIR/state" "$DIR/spool" /run/slurm /run/munge /var/log/munge /var/lib/munge
  if ! munge -n >/dev/null 2>&1 </dev/null; then
    [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null && chmod 400 /etc/munge/munge.key; }
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
      runuser -u munge -- munged
    else
      munged --force
    fi
    cp /run/munge/munged.pid "$DIR/munged.pid"  # ours to stop
  fi
  write_conf
  slurmctld -f "$CONF"
  slurmd -f "$CONF"
  wait_idle || die "the node did not become idle: see $DIR/slurmctld.log and $DIR/slurmd.log"
  echo "started; export SLURM_CONF=$CONF"
}

stop() {
  local name pid
  for name in slurmd slurmctld munged; do
    if running "$DIR/$name.pid"; then
      pid=$(cat "$DIR/$name.pid")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$DIR/$name.pid"
  done
  echo "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) die "usage: $0 start|stop|status" ;;
esac
