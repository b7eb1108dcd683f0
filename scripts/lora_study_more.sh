#!/usr/bin/env bash
# The other seeds of the README's LoRA table (full fine-tuning, all-linear LoRA, linear probe),
# appended to the same JSON lines as scripts/lora_study.sh.
set -euo pipefail
out=${1:-target/bench/lora-study.jsonl}
source <(sed -n '/^run() {/,/^}/p' scripts/lora_study.sh)
data=datasets/amazon-food
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs); fam=$(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs); mod=$(grep -m1 "^model\s" /proc/cpuinfo | cut -d: -f2 | xargs)
for seed in 43 44; do
  run probe-$seed --freeze-backbone --lr 1e-3 --seed $seed
  run lora-all-$seed --lora-rank 8 --lora-alpha 16 --lora-targets all-linear --lr 5e-4 --seed $seed
  run full-$seed --seed $seed
done
