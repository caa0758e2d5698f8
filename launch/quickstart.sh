#!/usr/bin/env bash
# The README's first command: sets this machine up (packages, model, release build), runs a
# 2-rank LoRA fine-tune of SmolLM2-135M on the bundled date-normalisation data (validation loss
# before and after), then shows what the fine-tune bought: three validation prompts answered by
# the base and the tuned model, exact match before and after on 40 validation records, and the
# accuracy of classification by log-likelihood on data/quickstart/held-out-dates.jsonl (64 prompts
# for 8 dates none of the other files holds, written in the 8 styles of the training data; the
# labels are the 8 ISO dates, in pairs whose day and month are swapped).
#
#   bash launch/quickstart.sh                      # outputs in runs/quickstart
#   bash launch/quickstart.sh --set train.max_steps=6
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/local.sh 2 cluster-configs/smollm2/135m_lora_quickstart.yaml "$@"

# Where the run wrote (a --set output_dir=... among the arguments moves it).
OUT=runs/quickstart
for arg in "$@"; do case "$arg" in output_dir=*) OUT="${arg#output_dir=}" ;; esac; done
BIN="$(swift build -c release --show-bin-path)/dtrain"
MODEL="${DTRAIN_MODEL:-$(bash launch/fetch-model.sh)}"
head -n 40 data/quickstart/validation.jsonl > "$OUT/validation-sample.jsonl"
echo
echo "quickstart: base model vs the fine-tune ($OUT/final) on 40 validation records"
"$BIN" eval --model "$MODEL" --adapter "$OUT/final" --data "$OUT/validation-sample.jsonl" --compare-base \
    --show 3 --max-new-tokens 20 --threads "$(nproc)" | grep -v '^record '
echo
echo "quickstart: base model vs the fine-tune, choosing among 8 candidate dates (each one's day and month swapped is another) for 64 held-out prompts"
LABELS=1962-02-09,1962-09-02,1988-04-06,1988-06-04,2004-03-11,2004-11-03,2019-05-07,2019-07-05
"$BIN" eval --model "$MODEL" --adapter "$OUT/final" --data data/quickstart/held-out-dates.jsonl --labels "$LABELS" \
    --compare-base --threads "$(nproc)" | grep -v -e '^record ' -e '^confusion'
