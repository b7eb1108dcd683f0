#!/usr/bin/env python3
"""Metadata fusion on drug-reviews (README, "Text + metadata").

Fine-tunes all-MiniLM-L6-v2 with `sequin train` on datasets/drug-reviews (539 train, 60
validation, 379 test reviews; 3 classes) six ways: text-only and each fusion method, with
the same metadata columns (drug name and condition as categorical, useful count as
log1p+standard numeric, the review date) and the same budget for all: 4 epochs, lr 1e-4,
batch 16, max_length 128, warmup 0.1, the best epoch by validation macro-F1. Seeds 1, 2, 3.
Reports test accuracy and macro-F1 as mean ± sd.

Usage (a release build of sequin; no Python packages beyond the standard library):
  cargo build --release -p sequin-cli --bin sequin
  python3 scripts/fusion_experiment.py --model .peer/minilm-l6 --out runs/fusion-exp
"""

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "datasets/drug-reviews"
METHODS = ["text-only", "concat", "mlp-concat", "gating", "attention", "weighted-sum"]
META = [
    "--numeric-columns", "useful_count", "--numeric-transform", "log1p+standard",
    "--categorical-columns", "drug_name,condition", "--date-columns", "date",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="runs/fusion-exp")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sequin", default=str(ROOT / "target/release/sequin"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = set()
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["seed"], r["method"]))
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in args.methods.split(","):
            if (seed, method) in done:
                continue
            run_dir = out / f"{method}-seed{seed}"
            cmd = [
                args.sequin, "train", "--model", args.model,
                "--train", str(DATA / "train.parquet"),
                "--validation", str(DATA / "validation.parquet"),
                "--test", str(DATA / "test.parquet"),
                "--output", str(run_dir), "--epochs", "4", "--batch-size", "16",
                "--lr", "1e-4", "--max-length", "128", "--seed", str(seed),
                "--metric-for-best-model", "macro_f1",
                *META, "--fusion", method,
            ]
            t0 = time.time()
            subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
            run = json.loads((run_dir / "run.json").read_text())
            test = run["summary"]["test"]
            r = {
                "seed": seed, "method": method, "best_epoch": run["summary"]["best_epoch"],
                "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                "seconds": round(time.time() - t0, 1),
            }
            print(json.dumps(r), flush=True)
            with results_path.open("a") as f:
                f.write(json.dumps(r) + "\n")
    rows = [json.loads(l) for l in results_path.read_text().splitlines()]
    print("\n| fusion | test accuracy | test macro-F1 | seeds |")
    print("|---|---:|---:|---:|")
    for m in METHODS:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue

        def ms(k):
            xs = [r[k] for r in rs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            return f"{statistics.mean(xs):.3f} ± {sd:.3f}"

        print(f"| {m} | {ms('accuracy')} | {ms('macro_f1')} | {len(rs)} |")


if __name__ == "__main__":
    main()
