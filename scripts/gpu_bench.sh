#!/usr/bin/env bash
# GPU benchmark, prepared for a CUDA machine (issue #7): sequin-bench with the `cuda` backend
# beside transformers + PyTorch (../shared/bench/hf_bench.py) in the same run, at MiniLM-L6 and
# BERT-base, seq 128, batch 32: sequin fp32 against PyTorch fp32 and bf16 autocast.
#
# Build the binary on a machine with Rust and Debian's llvm-22-dev (the GPU machine may have no
# network), then carry target/release/sequin-bench over:
#   cargo xtask cuda-setup
#   cargo build --release -p sequin-cli --bin sequin-bench --no-default-features --features cuda
#
# Run:  scripts/gpu_bench.sh [OUT_DIR]      (default target/bench/gpu)
# Needs: target/release/sequin-bench built with `cuda`; for the peer, a python with torch +
# transformers (PEER_PY, default .peer/venv/bin/python).
#
# cubecl compiles and autotunes kernels on first use (the first MiniLM training step took over
# 120 s on an H100): its persistent autotune cache is switched on, and 5 warmup steps are
# excluded from every measurement (a second run of this script starts warm). Results: one JSON line per measurement in results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench/gpu}
mkdir -p "$OUT"
BENCH=${SEQUIN_BENCH:-target/release/sequin-bench}
PEER_PY=${PEER_PY:-.peer/venv/bin/python}
export CUBECL_AUTOTUNE_CACHE=1   # keep autotune results on disk (cubecl's cache folder)
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-balanced}
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

for shape in minilm-l6 bert-base; do
  for mode in train infer; do
    steps=20; [ "$mode" = infer ] && steps=50
    echo "sequin cuda $shape $mode" >&2
    timeout 900 "$BENCH" --model "$shape" --mode "$mode" --seq-len 128 --batch 32 \
      --steps "$steps" --warmup 5 | grep '^{' | tee -a "$RESULTS" || echo "{\"bench\":\"sequin\",\"model\":\"$shape\",\"mode\":\"$mode\",\"error\":\"failed or timed out\"}" | tee -a "$RESULTS"
    if [ -x "$PEER_PY" ]; then
      for dtype in fp32 bf16; do
        echo "peer $shape $mode $dtype" >&2
        MINILM_PATH=${MINILM_PATH:-.peer/minilm-l6} timeout 600 "$PEER_PY" ../shared/bench/hf_bench.py \
          --model "$shape" --mode "$mode" --seq-len 128 --batch 32 --device cuda --dtype "$dtype" \
          --steps "$steps" --warmup 5 | grep '^{' | tee -a "$RESULTS" || true
      done
    fi
  done
done
echo "written: $RESULTS" >&2
