#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same training job (the quickstart data, 32 examples
# per step) as 1 rank x 2 threads, 2 ranks x 1 thread and 4 ranks x 1 thread (oversubscribed on a
# 2-core machine: a correctness check, not a speed figure), for LoRA and full fine-tuning.
#
#   bash launch/bench-scaling.sh [STEPS]          (after bash launch/setup.sh)
#   bash launch/bench-scaling.sh --hosts [STEPS]  (root: on the namespace cluster, see below)
#   DTRAIN_BENCH_RATES=10gbit DTRAIN_BENCH_HOSTS="2" DTRAIN_BENCH_METHODS=full bash launch/bench-scaling.sh --hosts
#                                                 (a part of it: the rates, host counts, methods given)
#
# For each run it prints the steady-state tokens/s (steps after the first, without validation),
# the gradient bytes each rank all-reduces per step, and the share of the all-reduce hidden behind
# backward; then the ratio 2x1 / 1x2 (goal: at least 0.95).
set -euo pipefail
cd "$(dirname "$0")/.."

# --hosts: the same job on 1, 2 and 4 namespace hosts (launch/netns-cluster.sh, one rank of one
# thread per host) over links of 10 Gbit/s and 1 Gbit/s with 0.2 ms delay (tc netem, or where the
# kernel lacks it launch/netdelay.c: see netns-cluster.sh), LoRA and full fine-tuning. The hosts share this machine's cores,
# so the tokens/s say little; the figures are the communication's: gradient bytes per rank per
# step, the all-reduce's time beside a blocking one of the same buffer and the share hidden
# behind backward, the bucket size training chose from the link, the link fitted by
# `dtrain bench allreduce` (fixed cost, bandwidth), and from that fit the ring all-reduce's cost
# and the step time at 8 and 64 hosts (model: the 2-host step's compute, plus the part of the
# ring all-reduce at that host count not hidden, taking the hidden seconds measured at 2 hosts).
if [ "${1:-}" = --hosts ]; then
    STEPS="${2:-4}"
    CONFIG=cluster-configs/smollm2/135m_lora_quickstart.yaml
    OUT="${DTRAIN_BENCH_DIR:-/tmp/dtrain-bench-hosts}"
    BIN="${DTRAIN_BIN:-$(swift build -c release --show-bin-path)/dtrain}"
    NETNS="$PWD/launch/netns-cluster.sh"
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    mkdir -p "$OUT"
    rm -f "$OUT"/*.log "$OUT"/link-*.json   # an earlier run's figures must not enter this one's model
    trap 'bash "$NETNS" down' EXIT
    grep -m1 'model name' /proc/cpuinfo | sed 's/^/cpu: /'
    for rate in ${DTRAIN_BENCH_RATES:-10gbit 1gbit}; do
        for hosts in ${DTRAIN_BENCH_HOSTS:-1 2 4}; do
            bash "$NETNS" down
            hostfile=$(bash "$NETNS" up "$hosts" --rate "$rate" --delay 0.2ms 2>"$OUT/netns.log" | tail -n 1)
            echo "== $hosts host(s), $(sed -n 's/.*each link: //p' "$OUT/netns.log")"
            if [ "$hosts" -gt 1 ]; then
                bash "$NETNS" exec dtrain-h0 mpirun --hostfile "$hostfile" -n "$hosts" --map-by ppr:1:node --bind-to none \
                    --mca plm_rsh_agent "bash $NETNS agent" --mca plm_rsh_no_tree_spawn 1 \
                    "$BIN" bench allreduce --payload-mb 9.77 --payload-mb 538.1 --json > "$OUT/link-$rate-$hosts.json"
                python3 - "$OUT/link-$rate-$hosts.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("    link (bench allreduce, %d ranks): fixed %.0f us, %.3f GB/s per rank; as a ring: latency %.1f us, bandwidth %.3f GB/s"
      % (r["ranks"], r["fixed_s"] * 1e6, 1 / r["s_per_byte"] / 1e9, r["latency_s"] * 1e6, r["bandwidth_bytes_per_s"] / 1e9))
for name, b, preds in zip(["lora", "full"], r["payload_bytes"], r["predicted"]):
    print("    ring all-reduce of %s's %.1f MB: " % (name, b / 1e6) + ", ".join("%d hosts %.1f ms" % (p["ranks"], p["seconds"] * 1e3) for p in preds))
PY
            fi
            for method in ${DTRAIN_BENCH_METHODS:-lora full}; do
                dir="$OUT/$method-$rate-$hosts"; rm -rf "$dir"
                log="$dir.log"
                DTRAIN_BIN="$BIN" bash launch/cluster.sh "$hostfile" 1 "$CONFIG" --set "method=$method" --set "output_dir=$dir" \
                    --set "train.max_steps=$STEPS" --set batch.micro=8 --set eval.every_steps=0 --set eval.at_start=false \
                    --set logging.tensorboard=false --set threads=1 >"$log" 2>&1 \
                    || { echo "bench-scaling: $method on $hosts host(s) failed; see $log" >&2; exit 1; }
                echo "  $method: $(sed -n 's/^throughput: \([0-9.]*\) tok\/s.*/\1/p' "$log") tok/s"
                grep -e '^all-reduce' "$log" | sed 's/^/    /' || true
                rm -rf "$dir"
            done
        done
        if [ -f "$OUT/link-$rate-2.json" ]; then
            python3 - "$OUT" "$rate" <<'PY'
import json, re, sys
out, rate = sys.argv[1], sys.argv[2]
fit = json.load(open(f"{out}/link-{rate}-2.json"))
def ring(b, p):
    return 2 * (p - 1) * fit["latency_s"] + 2 * (p - 1) / p * b / fit["bandwidth_bytes_per_s"]
import os
for method in ("lora", "full"):
    if not os.path.exists(f"{out}/{method}-{rate}-2.log"):
        continue
    log = open(f"{out}/{method}-{rate}-2.log").read()
    tps = float(re.search(r"^throughput: ([0-9.]+)", log, re.M).group(1))
    m = re.search(r"all-reduce: ([0-9.]+) MB.*?ran on ([0-9.]+) ms per step after.*?against ([0-9.]+) ms", log)
    mb, unhidden, blocking = float(m.group(1)), float(m.group(2)) / 1e3, float(m.group(3)) / 1e3
    tokens = float(re.search(r"done: \d+/\d+ steps, (\d+) tokens", log).group(1)) / max(1, int(re.search(r"done: (\d+)/", log).group(1)))
    step = tokens / tps
    hidden_s = max(0.0, blocking - unhidden)
    compute = step - unhidden
    preds = []
    for p in (8, 64):
        t = ring(mb * 1e6, p)
        preds.append("%d hosts: all-reduce %.0f ms, step %.2f s (%.0f%% of it communication not hidden)"
                     % (p, t * 1e3, compute + max(0.0, t - hidden_s), 100 * max(0.0, t - hidden_s) / (compute + max(0.0, t - hidden_s))))
    print(f"model at {rate}, {method} ({mb:.1f} MB per rank, 2-host step {step:.2f} s, {hidden_s * 1e3:.0f} ms of all-reduce hidden): " + "; ".join(preds))
PY
        fi
    done
    exit 0
fi

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
