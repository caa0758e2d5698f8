#!/usr/bin/env bash
# Self-test of the local Slurm cluster (launch/slurm/local-cluster.sh up): a batch job is
# warned with SIGUSR1 before its time limit, requeues itself, and runs a second time.
#
#   bash launch/slurm/requeue-demo.sh            # batch shell only
#   bash launch/slurm/requeue-demo.sh --mpirun   # also: mpirun -n 2 ranks, USR1 forwarded to them
#
# Timing (Slurm 22.05, measured here): slurmctld checks time limits and warning signals on
# a fixed 30 s tick, and sends the --signal at the first tick at which at most LEAD+30 s
# remain; the limit itself is enforced at the first tick after it (up to 30 s late). --time
# is whole minutes (--time=0:30 becomes 1 minute), so the shortest setup is --time=1. With
# @20 the signal lands 10-40 s after the start: never in the first seconds, when the job
# may not have installed its trap yet (bash's default for USR1 is to die), and at least
# 20 s before the limit. A lead of 30 or more makes it fire at the first tick, 0-30 s in.
# The requeued job restarts after AuthInfo=cred_expire (10 s here) + 1 s + up to one
# scheduling pass (5 s). The whole demo takes 30-60 s.
#
# Environment: DEMO_TIME (minutes, default 1), DEMO_SIGNAL_LEAD (seconds, default 20),
# DEMO_TIMEOUT (seconds to wait for the job, default 300), DEMO_DIR (work dir, default a
# new /tmp/requeue-demo.XXXXXX; kept for inspection).
set -euo pipefail

MPIRUN=0
case ${1:-} in
    --mpirun) MPIRUN=1 ;;
    "") ;;
    *) echo "usage: $0 [--mpirun]" >&2; exit 2 ;;
esac
TIME_LIMIT=${DEMO_TIME:-1}
LEAD=${DEMO_SIGNAL_LEAD:-20}
TIMEOUT=${DEMO_TIMEOUT:-300}
WORK=${DEMO_DIR:-$(mktemp -d /tmp/requeue-demo.XXXXXX)}
mkdir -p "$WORK"

die() { printf 'requeue-demo: FAIL: %s\n' "$*" >&2; exit 1; }

sinfo -h >/dev/null 2>&1 || die "no Slurm cluster answers; run: bash launch/slurm/local-cluster.sh up"

# One MPI rank (only with --mpirun): records the USR1 that mpirun forwards to it.
cat >"$WORK/rank.sh" <<'EOF'
#!/bin/bash
log=$DEMO_DIR/rank$OMPI_COMM_WORLD_RANK.log
trap 'echo "run $RUN rank $OMPI_COMM_WORLD_RANK USR1 $(date +%s)" >>"$log"; exit 0' USR1
echo "run $RUN rank $OMPI_COMM_WORLD_RANK start $(date +%s)" >>"$log"
# Sleep in the background and wait: bash runs a trap only between commands, and 'wait' is
# interrupted by a trapped signal while a foreground 'sleep' is not.
while :; do sleep 1 & wait $!; done
EOF
chmod +x "$WORK/rank.sh"

# The batch script. Everything it records goes to $DEMO_DIR/state.log.
cat >"$WORK/job.sh" <<'EOF'
#!/bin/bash
set -u
state=$DEMO_DIR/state.log
# Unset on the first run; 1 after the first requeue.
export RUN=${SLURM_RESTART_COUNT:-0}
echo "run $RUN start $(date +%s) job $SLURM_JOB_ID" >>"$state"

if ((RUN >= 1)); then
    # A real job would resume from its checkpoint here.
    echo "run $RUN done $(date +%s)" >>"$state"
    exit 0
fi

child=""
if ((DEMO_MPIRUN)); then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    mpirun -n "$SLURM_NTASKS" "$DEMO_DIR/rank.sh" &
    child=$!
fi

# --signal=B:USR1 signals the batch shell only, not its children: pass it on to mpirun,
# which forwards SIGUSR1 to every rank. (Without a trap, USR1 would kill this shell.)
signalled=0
trap 'signalled=1; [[ -n $child ]] && kill -USR1 "$child" 2>/dev/null' USR1
while ((!signalled)); do sleep 1 & wait $!; done
echo "run $RUN signalled $(date +%s)" >>"$state"
[[ -n $child ]] && wait "$child"

# Requeue: the job goes back to PENDING and will run again with SLURM_RESTART_COUNT=1.
# This ends the current run (Slurm signals what is left of it at once), so log first.
echo "run $RUN requeued $(date +%s)" >>"$state"
scontrol requeue "$SLURM_JOB_ID" || echo "run $RUN requeue failed: $?" >>"$state"
exit 0
EOF

t0=$(date +%s)
export DEMO_DIR=$WORK DEMO_MPIRUN=$MPIRUN
job=$(sbatch --parsable --job-name=requeue-demo --ntasks=2 --time="$TIME_LIMIT" \
    --signal="B:USR1@$LEAD" --requeue --open-mode=append \
    --output="$WORK/slurm-%j.out" --chdir="$WORK" --export=ALL "$WORK/job.sh")
echo "requeue-demo: job $job submitted (--time=$TIME_LIMIT --signal=B:USR1@$LEAD), dir $WORK"

# Poll the controller. Without accounting, a finished job stays visible to scontrol for
# MinJobAge (300 s in local-cluster.sh) only, which is plenty here.
state="" last=""
while :; do
    info=$(scontrol -o show job "$job" 2>/dev/null || true)
    state=$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$info")
    restarts=$(sed -n 's/.*Restarts=\([0-9]*\).*/\1/p' <<<"$info")
    reason=$(sed -n 's/.*Reason=\([^ ]*\).*/\1/p' <<<"$info")
    if [[ "$state/$restarts/$reason" != "$last" ]]; then
        printf 'requeue-demo: +%3ds %s restarts=%s reason=%s\n' $(($(date +%s) - t0)) \
            "${state:-?}" "${restarts:-?}" "${reason:-?}"
        last="$state/$restarts/$reason"
    fi
    case $state in
        COMPLETED) break ;;
        FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
            cat "$WORK"/state.log "$WORK"/slurm-*.out >&2 2>/dev/null || true
            die "job $job ended $state"
            ;;
        "") die "job $job vanished from the controller" ;;
    esac
    if (($(date +%s) - t0 > TIMEOUT)); then
        scancel "$job" || true
        cat "$WORK"/state.log >&2 2>/dev/null || true
        die "job $job not done after ${TIMEOUT}s (state $state)"
    fi
    sleep 1
done
total=$(($(date +%s) - t0))

echo "--- $WORK/state.log"
cat "$WORK/state.log"
grep -q '^run 0 signalled' "$WORK/state.log" || die "first run was not signalled"
grep -q '^run 0 requeued' "$WORK/state.log" || die "first run did not requeue"
! grep -q 'requeue failed' "$WORK/state.log" || die "scontrol requeue failed"
[[ $restarts == 1 ]] || die "job restarted $restarts times, expected 1"
grep -q '^run 1 done' "$WORK/state.log" || die "second run did not finish"
if ((MPIRUN)); then
    for r in 0 1; do
        cat "$WORK/rank$r.log"
        grep -q "^run 0 rank $r USR1" "$WORK/rank$r.log" || die "rank $r did not get USR1 through mpirun"
    done
fi

# Timings relative to the first start.
start0=$(awk '$1=="run" && $2==0 && $3=="start" {print $4}' "$WORK/state.log")
sig0=$(awk '$1=="run" && $2==0 && $3=="signalled" {print $4}' "$WORK/state.log")
req0=$(awk '$1=="run" && $2==0 && $3=="requeued" {print $4}' "$WORK/state.log")
start1=$(awk '$1=="run" && $2==1 && $3=="start" {print $4}' "$WORK/state.log")
echo "requeue-demo: PASS in ${total}s: signal $((sig0 - start0))s after the first start" \
    "(limit ${TIME_LIMIT} min, lead ${LEAD}s), second run started $((start1 - req0))s after the requeue"
