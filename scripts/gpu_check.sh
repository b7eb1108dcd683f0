#!/usr/bin/env bash
# One short CUDA check for a lent GPU machine (no Rust and no network there), in order of
# importance, each step under its own time limit so that a slow one cannot eat the rest:
#   1. parity: `sequin predict` on CUDA over the parity fixture's 22 inputs (texts, pairs, the
#      empty text) with the tiny BERT classifier, against transformers on the same machine and
#      against sequin's CPU logits;
#   2. training: 3 seeded steps (96 drug reviews, lr 1e-3, dropout on) on CUDA, then the trained
#      model's logits against the same run on the CPU;
#   3. throughput: sequin-bench (cuda) at MiniLM-L6 and BERT-base, inference then training,
#      beside transformers + PyTorch fp32 and bf16 autocast on the same GPU
#      (../shared/bench/hf_bench.py).
#
# A `cuda` build statically links LLVM (cubecl-cuda's compiler), ~150 MB per stripped binary,
# so the device's 64 MiB transfer holds two xz-packed binaries and a few fixtures, not the test
# binaries. Prepare here (Rust, `cargo xtask cuda-setup` first):
#   cargo build --release -p sequin-cli --features cuda --bins   # then: scripts/gpu_check.sh --pack
#   cargo build --release -p sequin-cli --bins                   # then: scripts/gpu_check.sh --cpu-reference
# and run there, carrying `.gpu`:  scripts/gpu_check.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
TRAIN_ARGS=(--train .gpu/drug-train.parquet --max-train-samples 96 --max-steps 3 --max-length 32
  --lr 1e-3 --shards 1 --seed 42 --epochs 1)
if [ "${1:-}" = "--pack" ]; then
  set -e
  mkdir -p .gpu/minilm-config
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
  for b in sequin sequin-bench; do strip -o ".gpu/$b" "target/release/$b"; xz -T2 -9 -f ".gpu/$b"; done
  rm -rf .gpu/bert-tiny-cls && cp -r tests/fixtures/bert-tiny-cls .gpu/
  python3 -c 'import json
for i in json.load(open("tests/fixtures/parity.json"))["inputs"]:
    print(json.dumps({k: v for k, v in i.items() if k in ("text", "text_pair") and v is not None}))' \
    > .gpu/parity-inputs.jsonl
  cp datasets/drug-reviews/train.parquet .gpu/drug-train.parquet
  cp ../shared/bench/hf_bench.py .gpu/
  cp models/all-MiniLM-L6-v2/config.json .gpu/minilm-config/
  du -sh .gpu
  exit 0
fi
if [ "${1:-}" = "--cpu-reference" ]; then
  set -e
  S=target/release/sequin
  $S predict --model .gpu/bert-tiny-cls --input .gpu/parity-inputs.jsonl --text-pair-column text_pair --output .gpu/cpu-predict.jsonl --max-length 32
  rm -rf /tmp/sequin-cpu-train
  $S train --model .gpu/bert-tiny-cls --output /tmp/sequin-cpu-train "${TRAIN_ARGS[@]}"
  $S predict --model /tmp/sequin-cpu-train --input .gpu/parity-inputs.jsonl --text-pair-column text_pair --output .gpu/cpu-trained-predict.jsonl --max-length 32
  exit 0
fi
OUT=${1:-target/bench/gpu}
mkdir -p "$OUT" .gpu/bin
LOG="$OUT/log.txt"
log() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$LOG"
for f in sequin sequin-bench; do
  xz -dc ".gpu/$f.xz" > ".gpu/bin/$f" 2>/dev/null || python3 -c 'import lzma, shutil, sys
shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' ".gpu/$f.xz" ".gpu/bin/$f"
  chmod +x ".gpu/bin/$f"
done
# cudarc loads libcuda and libnvrtc at run time: the driver's folder and the CUDA toolkit's.
for lib in libcuda.so.1 libnvrtc.so; do
  d=$(dirname "$(find /usr/local/nvidia /usr/local/cuda* /usr/lib /opt -name "$lib*" 2>/dev/null | head -1)")
  [ -n "$d" ] && [ "$d" != . ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
log "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
.gpu/bin/sequin --version >> "$LOG" 2>&1

log "1. parity: predict on cuda"
timeout "${STEP_S:-150}" .gpu/bin/sequin predict --model .gpu/bert-tiny-cls --input .gpu/parity-inputs.jsonl --text-pair-column text_pair \
  --output "$OUT/cuda-predict.jsonl" --max-length 32 >> "$LOG" 2>&1
log "predict exit $?"
log "2. three training steps on cuda"
timeout "${STEP_S:-150}" .gpu/bin/sequin train --model .gpu/bert-tiny-cls --output /tmp/sequin-cuda-train \
  "${TRAIN_ARGS[@]}" >> "$LOG" 2>&1
log "train exit $?"
cp /tmp/sequin-cuda-train/run.json "$OUT/cuda-train-run.json" 2>/dev/null
timeout 120 .gpu/bin/sequin predict --model /tmp/sequin-cuda-train --input .gpu/parity-inputs.jsonl --text-pair-column text_pair \
  --output "$OUT/cuda-trained-predict.jsonl" --max-length 32 >> "$LOG" 2>&1
log "trained predict exit $?"
timeout 120 python3 scripts/gpu_compare.py "$OUT" 2>>"$LOG" | tee "$OUT/parity.json" >&2

RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
for shape in minilm-l6 bert-base; do
  for mode in infer train; do
    steps=20; [ "$mode" = infer ] && steps=50
    log "3. sequin cuda $shape $mode"
    timeout "${BENCH_S:-100}" .gpu/bin/sequin-bench --model "$shape" --mode "$mode" --seq-len 128 \
      --batch 32 --steps "$steps" --warmup 5 2>>"$LOG" | grep '^{' | tee -a "$RESULTS" \
      || echo "{\"bench\":\"sequin\",\"model\":\"$shape\",\"mode\":\"$mode\",\"error\":\"failed or timed out\"}" | tee -a "$RESULTS"
    for dtype in fp32 bf16; do
      log "peer $shape $mode $dtype"
      MINILM_PATH=.gpu/minilm-config timeout 90 python3 .gpu/hf_bench.py --model "$shape" --mode "$mode" \
        --seq-len 128 --batch 32 --device cuda --dtype "$dtype" --steps "$steps" --warmup 5 \
        2>>"$LOG" | grep '^{' | tee -a "$RESULTS" || true
    done
  done
done
log "3. sequin cuda minilm-l6 train, dropout off (what the host-drawn masks cost)"
timeout "${BENCH_S:-100}" .gpu/bin/sequin-bench --model minilm-l6 --mode train --no-dropout --seq-len 128 \
  --batch 32 --steps 20 --warmup 5 2>>"$LOG" | grep '^{' | tee -a "$RESULTS"
log done
