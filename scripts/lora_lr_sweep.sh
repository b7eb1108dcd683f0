#!/usr/bin/env bash
# The brief learning-rate check behind the README's LoRA table: each LoRA row and the probe at
# the other of {5e-4, 1e-3}, seed 42 (the table's rows use the better one; their other seeds are
# in scripts/lora_study_more.sh). Usage: scripts/lora_lr_sweep.sh OUT.jsonl
set -euo pipefail
out=${1:-target/bench/lora-lr-sweep.jsonl}
: > "$out"
data=datasets/amazon-food
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs); fam=$(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs); mod=$(grep -m1 "^model\s" /proc/cpuinfo | cut -d: -f2 | xargs)
run() { # name, extra args...
  local name=$1; shift
  local dir=/tmp/lora-sweep-$name
  rm -rf "$dir"
  ${SEQUIN:-target/release/sequin} train --model models/all-MiniLM-L6-v2 --train $data/train.parquet \
    --validation $data/validation.parquet --test $data/test.parquet --output "$dir" "$@" \
    > /tmp/lora-sweep.log 2> /tmp/lora-sweep.err
  local summary=$(grep '"best_epoch"' /tmp/lora-sweep.log | tail -1)
  echo "{\"run\": \"$name\", \"args\": \"$*\", \"cpu\": \"$cpu (family $fam, model $mod)\", \"summary\": $summary}" | tee -a "$out"
  rm -rf "$dir"
}
run lora-qv-5e-4-42 --lora-rank 8 --lora-alpha 16 --lr 5e-4 --seed 42
run lora-all-1e-3-42 --lora-rank 8 --lora-alpha 16 --lora-targets all-linear --lr 1e-3 --seed 42
run probe-5e-4-42 --freeze-backbone --lr 5e-4 --seed 42
