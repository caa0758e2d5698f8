#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same training job (the quickstart data, 32 examples
# per step) as 1 rank x 2 threads, 2 ranks x 1 thread and 4 ranks x 1 thread (oversubscribed on a
# 2-core machine: a correctness check, not a speed figure), for LoRA and full fine-tuning.
#
#   bash launch/bench-scaling.sh [STEPS]          (after bash launch/setup.sh)
#
# For each run it prints the steady-state tokens/s (steps after the first, without validation),
# the gradient bytes each rank all-reduces per step, and the share of the all-reduce hidden behind
# backward; then the ratio 2x1 / 1x2 (goal: at least 0.95).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- site-specific values -------------------------------------------------------------------
STEPS="${1:-8}"
CONFIG=cluster-configs/smollm2/135m_lora_quickstart.yaml
OUT="${DTRAIN_BENCH_DIR:-/tmp/dtrain-bench-scaling}"
# ---------------------------------------------------------------------------------------------

declare -A TPS
for method in lora full; do
    for ranks in 1 2 4; do
        dir="$OUT/$method-$ranks"
        rm -rf "$dir"
        log="$dir.log"
        mkdir -p "$OUT"
        bash launch/local.sh "$ranks" "$CONFIG" --set "method=$method" --set "output_dir=$dir" \
            --set "train.max_steps=$STEPS" --set batch.micro=8 --set eval.every_steps=0 --set eval.at_start=false \
            --set logging.tensorboard=false >"$log" 2>&1 || { echo "bench-scaling: $method on $ranks rank(s) failed; see $log" >&2; exit 1; }
        tps=$(sed -n 's/^throughput: \([0-9.]*\) tok\/s.*/\1/p' "$log")
        TPS[$method-$ranks]=$tps
        threads=$(( $(nproc) / ranks )); [ "$threads" -ge 1 ] || threads=1
        echo "$method, $ranks rank(s) x $threads thread(s): $tps tok/s"
        grep '^all-reduce:' "$log" | sed 's/^/    /' || true
        rm -rf "$dir"   # a full fine-tune's outputs are ~2 GB; the log stays
    done
    awk -v a="${TPS[$method-2]}" -v b="${TPS[$method-1]}" -v m="$method" \
        'BEGIN { printf "%s: 2 ranks x 1 thread reach %.3f of 1 rank x 2 threads (goal >= 0.95)\n", m, a / b }'
done
