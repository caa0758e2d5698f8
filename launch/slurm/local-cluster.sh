#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests of the Slurm path
# (sbatch, --signal, requeue, mpirun inside an allocation).
#
#   bash launch/slurm/local-cluster.sh up     # install, configure, start; wait for the node to be idle
#   bash launch/slurm/local-cluster.sh down   # stop slurmd, slurmctld and munged
#   bash launch/slurm/local-cluster.sh status # daemons and sinfo
#
# Needs root and Debian 12 (Slurm 22.05 from Debian's packages). Made for a container or
# VM where systemd is not PID 1, so every daemon is started directly in the background and
# tracked through its pid file. `up` is idempotent: it installs only what is missing,
# rewrites the config only if it changed, and restarts only the daemons that are not
# running or whose config changed.
#
# Environment:
#   SLURM_UP_TIMEOUT  seconds to wait for the node to become idle (default 60)
set -euo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
PACKAGES=(slurmctld slurmd slurm-client munge)
UP_TIMEOUT=${SLURM_UP_TIMEOUT:-60}
NODE=$(hostname -s)

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Prints the pid recorded in pid file $2 if that process is alive and is named $1
# (a stale pid file may name a pid that was since reused), else fails.
alive_pid() {
    local pid
    [[ -r $2 ]] || return 1
    pid=$(<"$2")
    [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    # A daemon killed hard may linger as a zombie until PID 1 reaps it.
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    printf '%s\n' "$pid"
}

# Sends TERM to daemon $1 (pid file $2) and waits up to 20 s for it to exit, then KILLs.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    if ! pid=$(alive_pid "$name" "$pidfile"); then
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive_pid "$name" "$pidfile" >/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    log "$name did not stop after 20 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: the recommends (slurm-wlm-plugins: ROCm, IPMI, HDF5,
    # InfluxDB, Elasticsearch ... 27 extra packages) are not needed here; the core
    # plugins (proctrack, select, mpi/pmi2, mpi/pmix) are in slurm-wlm-basic-plugins.
    # Debian's postinst scripts do not start the services when policy-rc.d forbids it
    # (as in containers); we start them ourselves below either way.
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    # The munge package normally creates the key in its postinst; make one if it did not.
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    # systemd-tmpfiles would create these; without systemd we do.
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    # A stale socket/pid from an unclean stop makes munged refuse to start; --force
    # overrides only that check. munged runs as the munge user, as the package intends.
    # Daemons get no inherited stdio: a caller reading this script's output through a pipe
    # would otherwise wait for EOF as long as they live. They log to files.
    runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 20 /var/log/munge/munged.log >&2 || true
    die "munged did not start"
}

# Writes the config to a temp dir; installs it and prints "changed" if it differs.
write_config() {
    local tmp node_line
    tmp=$(mktemp -d)
    # slurmd -C prints the hardware exactly as slurmd will register it (CPUs, sockets,
    # cores, threads, RealMemory). Configuring more than that drains the node ("Low
    # RealMemory" / "Low socket*core*thread count"), so we take its line verbatim.
    node_line=$(slurmd -C | head -n 1)
    [[ $node_line == NodeName=* ]] || die "unexpected slurmd -C output: $node_line"
    local cpus
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
    [[ $cpus == "$(nproc)" ]] || log "note: slurmd -C reports CPUs=$cpus, nproc says $(nproc)"

    cat >"$tmp/slurm.conf" <<EOF
# Written by launch/slurm/local-cluster.sh; rewritten on every 'up'.
ClusterName=local
SlurmctldHost=$NODE
# Simplest for a root-only test machine: both daemons and all jobs run as root.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only after the job credential lifetime + 1 s (default
# 120 s: a requeue-and-restart test would idle two minutes). Step launches here take well
# under a second, so a short lifetime is safe on this one-node cluster.
AuthInfo=cred_expire=10

StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups (so no cgroup.conf either): this runs in a container/VM whose cgroup tree we
# do not own. linuxproc tracks a job's processes through the parent-pid tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

SchedulerType=sched/backfill
# A requeued job becomes eligible at a begin time (see cred_expire), but the passing of
# that time is no scheduling event: it is started only by the next periodic pass (main
# scheduler every 60 s, backfill every 30 s by default). On one node passes are cheap.
SchedulerParameters=bf_interval=5,sched_interval=5
# Allocate single CPUs (not whole nodes) and do not track memory, so jobs need no --mem.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU

# Debian's Open MPI 4.1 can be direct-launched by srun only through PMIx (its only PMI
# client is pmix/ext3x; it has no PMI-2 support), so make PMIx srun's default: plain
# 'srun prog' then works like 'srun --mpi=pmix prog'. mpirun inside an allocation does not
# care: on one node it starts its ranks itself.
MpiDefault=pmix

# A DOWN node comes back by itself once slurmd registers with a valid config.
ReturnToService=2
# Batch jobs may be requeued (by scontrol requeue, or after a node failure).
JobRequeue=1
# At the time limit (and on scancel/requeue) every process of the job gets SIGCONT+SIGTERM,
# and SIGKILL this many seconds later. Ranks under mpirun get much less: mpirun, hit by
# the same SIGTERM, kills its ranks itself about 1 s later. Checkpoint on the --signal.
KillWait=30
# No grace minutes past the time limit. (Limits are checked every 30 s, so a job still
# runs up to 30 s past its limit.)
OverTimeLimit=0
# No accounting database here: squeue/scontrol know a finished job (its state, exit
# code, restart count) for this long only.
MinJobAge=300

$node_line State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    mkdir -p "$CONF_DIR"
    local changed=""
    if ! cmp -s "$tmp/slurm.conf" "$CONF_DIR/slurm.conf"; then
        install -m 0644 "$tmp/slurm.conf" "$CONF_DIR/slurm.conf"
        changed=changed
    fi
    rm -rf "$tmp"
    printf '%s\n' "$changed"
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

show_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        printf '\n--- tail %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2 2>/dev/null || true
    done
}

cmd_up() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    local t0=$SECONDS
    install_packages
    mkdir -p "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
    start_munge

    local changed
    changed=$(write_config)
    if [[ -n $changed ]]; then
        log "config written to $CONF_DIR (changed); restarting daemons"
        stop_daemon slurmd "$SLURMD_PID"
        stop_daemon slurmctld "$CTLD_PID"
    fi

    # Both daemons fork into the background and write their pid files themselves.
    if ! alive_pid slurmctld "$CTLD_PID" >/dev/null; then
        log "starting slurmctld"
        slurmctld </dev/null >/dev/null 2>&1 || { show_logs; die "slurmctld failed to start"; }
    fi
    if ! alive_pid slurmd "$SLURMD_PID" >/dev/null; then
        log "starting slurmd"
        slurmd </dev/null >/dev/null 2>&1 || { show_logs; die "slurmd failed to start"; }
    fi

    local state="" resumed=""
    while ((SECONDS - t0 < UP_TIMEOUT)); do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) break ;;
            # ReturnToService brings back a DOWN node, but not one drained by an earlier
            # run (e.g. for a config mismatch since fixed); resume it once.
            drained* | draining* | down*)
                if [[ -z $resumed ]]; then
                    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
                    resumed=1
                fi
                ;;
        esac
        sleep 1
    done
    case $state in
        idle | mixed | allocated | completing) ;;
        *)
            sinfo -N -l >&2 || true
            scontrol show node "$NODE" >&2 || true
            show_logs
            die "node $NODE not idle after ${UP_TIMEOUT}s (state: '${state:-none}')"
            ;;
    esac
    log "up: node $NODE is $state ($((SECONDS - t0)) s)"
    sinfo
}

cmd_down() {
    # Node daemon, then controller, then munged, which both need to shut down cleanly.
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    stop_daemon munged "$MUNGE_PID"
    log "down"
}

cmd_status() {
    local name pidfile pid
    for name in slurmctld:$CTLD_PID slurmd:$SLURMD_PID munged:$MUNGE_PID; do
        pidfile=${name#*:}
        if pid=$(alive_pid "${name%%:*}" "$pidfile"); then
            echo "${name%%:*}: running (pid $pid)"
        else
            echo "${name%%:*}: stopped"
        fi
    done
    alive_pid slurmctld "$CTLD_PID" >/dev/null && sinfo -N -l
    return 0
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
