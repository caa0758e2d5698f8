#!/usr/bin/env bash
# Train on this machine with N MPI ranks, each pinned to its own cores.
#
#   bash launch/local.sh 2 cluster-configs/smollm2/135m_lora_quickstart.yaml [--set key=value ...]
#
# Ranks x threads = cores: each rank gets (cores / ranks) BLAS threads unless the config sets
# `threads`. The model path in the config is replaced by the cached demo model unless
# DTRAIN_MODEL is set or a --set model=... is given.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- site-specific values -------------------------------------------------------------------
RANKS="${1:?usage: launch/local.sh RANKS CONFIG [--set key=value ...]}"
CONFIG="${2:?usage: launch/local.sh RANKS CONFIG [--set key=value ...]}"
shift 2
CORES=$(nproc)
# ---------------------------------------------------------------------------------------------

BIN="$(swift build -c release --show-bin-path)/dtrain"
[ -x "$BIN" ] || { echo "local.sh: $BIN is missing; run bash launch/setup.sh first" >&2; exit 1; }
MODEL="${DTRAIN_MODEL:-$(bash launch/fetch-model.sh)}"
THREADS=$(( CORES / RANKS )); [ "$THREADS" -ge 1 ] || THREADS=1

# Open MPI refuses root unless told; binding: one rank per THREADS cores, never oversubscribed
# silently (more ranks than cores needs --oversubscribe, which also turns binding off).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
if [ "$RANKS" -le "$CORES" ]; then
    BIND=(--map-by "slot:PE=$THREADS" --bind-to core)
else
    BIND=(--oversubscribe --bind-to none)
fi
# SIGTERM/SIGINT to this script become SIGUSR1 for mpirun, which forwards it to the ranks; they
# checkpoint at the next step boundary and exit 75, which this script passes on.
exec bash launch/run-stoppable.sh mpirun -n "$RANKS" "${BIND[@]}" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS \
    "$BIN" train --config "$CONFIG" --set "model=$MODEL" --set "threads=$THREADS" "$@"
