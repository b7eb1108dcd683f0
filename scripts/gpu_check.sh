#!/usr/bin/env bash
# One short CUDA check for a lent GPU machine (no Rust, no network there), in order of
# importance, each step under its own time limit so that a slow one cannot eat the rest:
#   1. the backend suite (crates/cli/tests/backend.rs) built with `--features cuda`: every
#      family's logits against transformers' fixtures, three seeded training steps against the
#      CPU, eval and predict through the CLI;
#   2. the throughput bench (scripts/gpu_bench.sh's measurements) at MiniLM-L6, then BERT-base,
#      beside transformers + PyTorch fp32 and bf16 autocast on the same GPU.
#
# Prepare here (a machine with Rust; `cargo xtask cuda-setup` first), then carry `.gpu`:
#   cargo build --release -p sequin-cli --features cuda --bins
#   cargo test --release -p sequin-cli --features cuda --test backend --no-run
#   scripts/gpu_check.sh --pack      # strips and packs the binaries + the peer script into .gpu/
# Run there:  scripts/gpu_check.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--pack" ]; then
  set -e
  mkdir -p .gpu/minilm-config
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
  test_bin=$(ls -t target/release/deps/backend-* | grep -v '\.d$' | head -1)
  for b in target/release/sequin target/release/sequin-bench "$test_bin"; do
    strip -o ".gpu/$(basename "$b" | sed 's/-[0-9a-f]*$//')" "$b"
  done
  xz -T2 -f -6 .gpu/sequin .gpu/sequin-bench .gpu/backend
  cp ../shared/bench/hf_bench.py .gpu/
  cp models/all-MiniLM-L6-v2/config.json .gpu/minilm-config/
  du -sh .gpu
  exit 0
fi
OUT=${1:-target/bench/gpu}
mkdir -p "$OUT" target/release
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/steps.txt" >&2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# The binaries were built for this checkout's path; the tests find fixtures and the CLI there.
if [ ! -e /work/main/Cargo.toml ]; then mkdir -p /work && ln -sfn "$PWD" /work/main; fi
for f in sequin sequin-bench backend; do xz -dc ".gpu/$f.xz" > "target/release/$f"; chmod +x "target/release/$f"; done
# cudarc loads libcuda and libnvrtc at run time: the driver's folder and the CUDA toolkit's.
for lib in libcuda.so.1 libnvrtc.so; do
  d=$(dirname "$(find /usr/local/nvidia /usr/local/cuda* /usr/lib /opt -name "$lib*" 2>/dev/null | head -1)")
  [ -n "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-balanced}
target/release/sequin --version | tee "$OUT/version.txt"

log "backend suite on cuda"
( cd crates/cli && timeout "${SUITE_S:-240}" ../../target/release/backend --test-threads 1 ) > "$OUT/backend-suite.txt" 2>&1
log "backend suite exit $?"
tail -n 5 "$OUT/backend-suite.txt" >&2

RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
for shape in minilm-l6 bert-base; do
  for mode in infer train; do
    steps=20; [ "$mode" = infer ] && steps=50
    log "sequin cuda $shape $mode"
    timeout "${STEP_S:-120}" target/release/sequin-bench --model "$shape" --mode "$mode" --seq-len 128 \
      --batch 32 --steps "$steps" --warmup 5 2>>"$OUT/bench-stderr.txt" | grep '^{' | tee -a "$RESULTS" \
      || echo "{\"bench\":\"sequin\",\"model\":\"$shape\",\"mode\":\"$mode\",\"error\":\"failed or timed out\"}" | tee -a "$RESULTS"
    for dtype in fp32 bf16; do
      log "peer $shape $mode $dtype"
      MINILM_PATH=.gpu/minilm-config timeout 90 python3 .gpu/hf_bench.py --model "$shape" --mode "$mode" \
        --seq-len 128 --batch 32 --device cuda --dtype "$dtype" --steps "$steps" --warmup 5 \
        2>>"$OUT/peer-stderr.txt" | grep '^{' | tee -a "$RESULTS" || true
    done
  done
done
log done
