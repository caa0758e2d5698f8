#!/usr/bin/env bash
# Train across the hosts of an Open MPI hostfile (a cluster without Slurm; with Slurm, see
# launch/slurm/). Every host must see this checkout, the model and the output directory at the
# same paths (a shared filesystem), and reach the others over TCP.
#
#   bash launch/cluster.sh HOSTFILE RANKS_PER_HOST RUN.yaml [--set key=value ...] [--resume auto]
#
# Ranks = hosts x RANKS_PER_HOST; each rank gets (cores per host / RANKS_PER_HOST) threads
# (cores per host: DTRAIN_CORES_PER_HOST, default this machine's) unless the config or a --set
# says `threads`. DTRAIN_BIN: the dtrain to run (default: this checkout's release build). A hostfile written by launch/netns-cluster.sh (its first line names the agent)
# starts mpirun inside the first namespace host, with that script as Open MPI's launch agent.
# Exit status: dtrain's (0 done, 1 failed, 2 bad input, 75 stopped: run again with --resume auto).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: launch/cluster.sh HOSTFILE RANKS_PER_HOST CONFIG [--set key=value ...]"
HOSTFILE="${1:?$usage}"
PER_HOST="${2:?$usage}"
CONFIG="${3:?$usage}"
shift 3
[ -r "$HOSTFILE" ] || { echo "cluster.sh: hostfile $HOSTFILE: cannot be read" >&2; exit 2; }
[[ "$PER_HOST" =~ ^[1-9][0-9]*$ ]] || { echo "cluster.sh: RANKS_PER_HOST '$PER_HOST': expected a positive number" >&2; exit 2; }
HOSTS=$(grep -cvE '^[[:space:]]*(#|$)' "$HOSTFILE" || true)
[ "$HOSTS" -ge 1 ] || { echo "cluster.sh: hostfile $HOSTFILE lists no hosts" >&2; exit 2; }
RANKS=$(( HOSTS * PER_HOST ))
CORES="${DTRAIN_CORES_PER_HOST:-$(nproc)}"
THREADS=$(( CORES / PER_HOST )); [ "$THREADS" -ge 1 ] || THREADS=1

BIN="${DTRAIN_BIN:-$(swift build -c release --show-bin-path)/dtrain}"
[ -x "$BIN" ] || { echo "cluster.sh: $BIN is missing; run bash launch/setup.sh first" >&2; exit 1; }
MODEL="${DTRAIN_MODEL:-$(bash launch/fetch-model.sh)}"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
MPI=(mpirun --hostfile "$HOSTFILE" -n "$RANKS" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
[ -n "${OPENBLAS_CORETYPE:-}" ] && MPI+=(-x OPENBLAS_CORETYPE)
PREFIX=()
header=$(head -n 1 "$HOSTFILE")
if [[ "$header" == "# dtrain-netns-cluster "* ]]; then
    # The namespace hosts share this machine's cores: binding each host's ranks to "its" first
    # cores would pile them onto the same ones.
    agent=$(sed -n 's/.* agent=\([^ ]*\).*/\1/p' <<< "$header")
    head_host=$(sed -n 's/.* head=\([^ ]*\).*/\1/p' <<< "$header")
    PREFIX=(bash "$agent" exec "$head_host")
    MPI+=(--mca plm_rsh_agent "bash $agent agent" --mca plm_rsh_no_tree_spawn 1 --map-by "ppr:$PER_HOST:node" --bind-to none)
elif [ $(( PER_HOST * THREADS )) -le "$CORES" ]; then
    MPI+=(--map-by "ppr:$PER_HOST:node:PE=$THREADS" --bind-to core)
else
    MPI+=(--map-by "ppr:$PER_HOST:node" --oversubscribe --bind-to none)
fi
# shellcheck disable=SC2086  # DTRAIN_MPI_ARGS: extra mpirun arguments, word-split on purpose
MPI+=(${DTRAIN_MPI_ARGS:-})

echo "cluster.sh: $HOSTS hosts x $PER_HOST ranks = $RANKS ranks ($HOSTFILE), $THREADS threads each unless the config sets threads" >&2
# As in launch/local.sh: SIGTERM/SIGINT to this script become SIGUSR1 for mpirun, which forwards
# it to every rank on every host; they checkpoint and exit 75.
exec bash launch/run-stoppable.sh "${PREFIX[@]}" "${MPI[@]}" "$BIN" train --config "$CONFIG" --set "model=$MODEL" --set "threads=$THREADS" "$@"
