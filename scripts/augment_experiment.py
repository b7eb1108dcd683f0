#!/usr/bin/env python3
"""Small-data augmentation experiment on amazon-food (README, "Augmentation for small data").

For n in (100, 300) training examples, drawn stratified by label from
datasets/amazon-food/train.parquet with seeds 1, 2, 3, fine-tune all-MiniLM-L6-v2 with
`sequin train` four ways and report test accuracy and macro-F1 (mean ± sd over the seeds):

  none       plain fine-tuning
  offline    EDA, 4 variants per example added once (--augment offline --num-aug 4)
  offline-random  the same, with random instead of length-grouped batches
  per-epoch  EDA, a fresh variant of every example each epoch (--augment per-epoch)
  mixup      embedding mixup on the pooled vectors, alpha 0.4 (--mixup-alpha 0.4)

Every variant gets the same number of optimizer steps: offline's 5x larger training set gets
a fifth of the epochs. Batches are length-grouped (sequin's default) except in
offline-random. No validation file (the final weights are tested, as nothing is selected), the full 1,000-row test split, lr 5e-5, batch 16, max_length 128, warmup 0.1.

Usage (needs pandas and pyarrow, e.g. the .peer venv, and a release build of sequin):
  cargo build --release -p sequin-cli --bin sequin
  .peer/venv/bin/python scripts/augment_experiment.py --model .peer/minilm-l6 --out runs/aug-exp
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = {100: 10, 300: 5}
VARIANTS = {
    "none": [],
    "offline": ["--augment", "offline", "--num-aug", "4"],
    # The same without length-grouped batches (an example's variants have similar lengths,
    # so grouping by length tends to put them in one batch).
    "offline-random": ["--augment", "offline", "--num-aug", "4", "--no-group-by-length"],
    "per-epoch": ["--augment", "per-epoch"],
    "mixup": ["--mixup-alpha", "0.4"],
}


def subset(n: int, seed: int, out: Path) -> Path:
    path = out / f"train-{n}-seed{seed}.parquet"
    if not path.exists():
        df = pd.read_parquet(ROOT / "datasets/amazon-food/train.parquet")
        frac = n / len(df)
        parts = [g.sample(n=round(len(g) * frac), random_state=seed) for _, g in df.groupby("label")]
        sub = pd.concat(parts).sample(frac=1.0, random_state=seed)
        assert abs(len(sub) - n) <= 1, len(sub)
        sub.to_parquet(path, index=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default="runs/aug-exp")
    ap.add_argument("--sizes", default="100,300")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--sequin", default=str(ROOT / "target/release/sequin"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = set()
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["n"], r["seed"], r["variant"]))
    for n in [int(x) for x in args.sizes.split(",")]:
        for seed in [int(x) for x in args.seeds.split(",")]:
            train = subset(n, seed, out)
            for variant in args.variants.split(","):
                if (n, seed, variant) in done:
                    continue
                run_dir = out / f"{variant}-{n}-seed{seed}"
                epochs = EPOCHS[n] // 5 if variant.startswith("offline") else EPOCHS[n]
                cmd = [
                    args.sequin, "train", "--model", args.model, "--train", str(train),
                    "--test", str(ROOT / "datasets/amazon-food/test.parquet"),
                    "--output", str(run_dir), "--epochs", str(epochs), "--batch-size", "16",
                    "--lr", "5e-5", "--max-length", "128", "--seed", str(seed),
                    *VARIANTS[variant],
                ]
                t0 = time.time()
                subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
                run = json.loads((run_dir / "run.json").read_text())
                test = run["summary"]["test"]
                r = {
                    "n": n, "seed": seed, "variant": variant, "epochs": epochs,
                    "steps": run["summary"]["steps"], "n_train": run["summary"]["n_train"],
                    "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                    "seconds": round(time.time() - t0, 1),
                }
                print(json.dumps(r), flush=True)
                with results_path.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    rows = [json.loads(l) for l in results_path.read_text().splitlines()]
    print("\n| n | variant | test accuracy | test macro-F1 | steps |")
    print("|---:|---|---:|---:|---:|")
    for n in sorted({r["n"] for r in rows}):
        for v in VARIANTS:
            rs = [r for r in rows if r["n"] == n and r["variant"] == v]
            if not rs:
                continue
            def ms(k):
                xs = [r[k] for r in rs]
                sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
                return f"{statistics.mean(xs):.3f} ± {sd:.3f}"
            print(f"| {n} | {v} | {ms('accuracy')} | {ms('macro_f1')} | {rs[0]['steps']} |")


if __name__ == "__main__":
    sys.exit(main())
