#!/usr/bin/env bash
# dtrain's training step against PyTorch's, measured side by side in one run on this machine.
#
#   bash bench/compare-pytorch.sh [ROUNDS] [STEPS] [LORA_DROPOUT]   # defaults: 3 rounds, 5 timed steps, 0.05
#
# Each round runs, one after the other, dtrain LoRA, PyTorch LoRA, dtrain full, PyTorch full
# (SmolLM2-135M, 4 x 256 tokens, 2 threads, float32, the same LoRA dropout for both; see
# bench/pytorch_step.py for the peer).
# Prints one JSON line per measurement and then, per round, the tokens/s ratios and peak-RSS
# shares. PyTorch, transformers and PEFT are installed from PyPI into a virtual environment
# under the dtrain cache the first time (torch's CPU code only: its CUDA packages are left out).
set -euo pipefail
cd "$(dirname "$0")/.."

# --- site-specific values -------------------------------------------------------------------
ROUNDS="${1:-3}"
STEPS="${2:-5}"
DROPOUT="${3:-0.05}"
THREADS=2
TORCH_VERSION=2.15.0
CACHE="${DTRAIN_CACHE:-$HOME/.cache/dtrain}"
VENV="$CACHE/bench-venv"
# ---------------------------------------------------------------------------------------------

if ! "$VENV/bin/python" -c "import torch, transformers, peft" 2>/dev/null; then
    echo "compare-pytorch: installing torch $TORCH_VERSION, transformers and peft into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    # torch's wheel names its CUDA libraries as dependencies; the CPU code needs none of them.
    "$VENV/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" >&2
    "$VENV/bin/pip" install -q filelock typing-extensions sympy networkx jinja2 fsspec numpy "setuptools>=77" >&2
    "$VENV/bin/pip" install -q transformers peft >&2
fi

source bench/dtrain-env.sh

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    for method in lora full; do
        "$DTRAIN" bench step --model "$MODEL" --method "$method" --steps "$STEPS" --threads "$THREADS" --lora-dropout "$DROPOUT" --json 2>/dev/null \
            | sed "s/^{/{\"round\":$round,\"peer\":\"dtrain\",\"bench_method\":\"$method\",/" | tee -a "$LOG"
        "$VENV/bin/python" bench/pytorch_step.py --method "$method" --steps "$STEPS" --threads "$THREADS" --lora-dropout "$DROPOUT" \
            | sed "s/^{/{\"round\":$round,\"bench_method\":\"$method\",/" | tee -a "$LOG"
    done
done

"$VENV/bin/python" - "$LOG" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for r in sorted({x["round"] for x in rows}):
    for m in ("lora", "full"):
        d = next(x for x in rows if x["round"] == r and x["bench_method"] == m and x["peer"] == "dtrain")
        p = next(x for x in rows if x["round"] == r and x["bench_method"] == m and x["peer"] != "dtrain")
        print(f"round {r} {m}: dtrain {d['tokens_per_s']:.1f} tok/s, {p['peer']} {p['tokens_per_s']:.1f} tok/s "
              f"-> {d['tokens_per_s'] / p['tokens_per_s']:.2f}x | MFU {100 * d['mfu']:.1f}% of the machine's peak "
              f"{d['sgemm_peak_gflops']:.0f} GFLOP/s ({d['sgemm_peak_kernels']}), kernels {d['blas_kernels']} | "
              f"peak RSS {d['peak_rss_bytes'] / 2**30:.2f} GiB = {100 * d['peak_rss_bytes'] / p['peak_rss_bytes']:.1f}% "
              f"of {p['peak_rss_bytes'] / 2**30:.2f} GiB")
PY
