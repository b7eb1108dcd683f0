#!/usr/bin/env bash
# The README's LoRA table: sequin LoRA (r 8, alpha 16) on the main job's data, beside the
# numbers of full fine-tuning and a linear probe, and PEFT + Trainer on the same CPU.
# Usage: scripts/lora_study.sh OUT.jsonl   (needs target/release/sequin, models/, .peer/)
set -euo pipefail
out=${1:-target/bench/lora-study.jsonl}
: > "$out"
data=datasets/amazon-food
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | xargs); fam=$(grep -m1 "cpu family" /proc/cpuinfo | cut -d: -f2 | xargs); mod=$(grep -m1 "^model\s" /proc/cpuinfo | cut -d: -f2 | xargs)
run() { # name, extra args...
  local name=$1; shift
  local dir=/tmp/lora-study-$name
  rm -rf "$dir"
  /usr/bin/time -v target/release/sequin train --model models/all-MiniLM-L6-v2 --train $data/train.parquet \
    --validation $data/validation.parquet --test $data/test.parquet --output "$dir" "$@" \
    > /tmp/lora-study.log 2> /tmp/lora-study.err
  local summary=$(grep '"best_epoch"' /tmp/lora-study.log | tail -1)
  local rss=$(grep "Maximum resident" /tmp/lora-study.err | awk '{print $6}')
  local adapter=$(stat -c %s "$dir/adapter_model.safetensors" 2>/dev/null || stat -c %s "$dir/model.safetensors")
  local ckpt=$(du -sb "$dir"/checkpoints/checkpoint-* | tail -1 | cut -f1)
  local params=$(python3 -c "import json; print(json.dumps(json.load(open('$dir/run.json'))['parameters']))")
  echo "{\"run\": \"$name\", \"args\": \"$*\", \"cpu\": \"$cpu (family $fam, model $mod)\", \"summary\": $summary, \"peak_rss_kib\": $rss, \"weights_bytes\": $adapter, \"checkpoint_bytes\": $ckpt, \"parameters\": $params}" | tee -a "$out"
}
for seed in 42 43 44; do run lora-qv-$seed --lora-rank 8 --lora-alpha 16 --lr 1e-3 --seed $seed; done
run lora-all-42 --lora-rank 8 --lora-alpha 16 --lora-targets all-linear --lr 5e-4 --seed 42
.peer/venv/bin/python scripts/lora_peer.py --model models/all-MiniLM-L6-v2 --data $data --r 8 --alpha 16 \
  --targets query,value --lr 1e-3 --seed 42 2>/dev/null | tail -1 | tee -a "$out"
