#!/usr/bin/env bash
# The README's first command: sets this machine up (packages, model, release build), then runs
# a 2-rank LoRA fine-tune of SmolLM2-135M on the bundled date-normalisation data and prints the
# validation loss before and after.
#
#   bash launch/quickstart.sh                      # outputs in runs/quickstart
#   bash launch/quickstart.sh --set train.max_steps=6
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/local.sh 2 cluster-configs/smollm2/135m_lora_quickstart.yaml "$@"
