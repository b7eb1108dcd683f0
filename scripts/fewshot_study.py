#!/usr/bin/env python3
"""The README's few-shot table: k labelled examples per class (a seeded, stratified sample of
the training split), the full test split, on this CPU, every method in one run:

- `setfit`:   sequin SetFit (`sequin setfit`, library defaults: 20 iterations, batch 16, 1 epoch,
              lr 2e-5, logistic-regression head);
- `setfit-py`: the `setfit` Python library (1.2) with the same body, pairs, iterations, max_length
              and seed, on PyTorch with the same threads;
- `finetune`: plain fine-tuning (`sequin train`) on the same examples, batch 8, lr 5e-5, epochs
              chosen from --epochs-grid by validation accuracy (the validation split, first 400
              rows) on the first seed of each (dataset, k);
- `eda`:      `sequin augment` (EDA, 4 variants per example) + the same fine-tuning.

Usage (repo root; needs target/release/sequin, models/all-MiniLM-L6-v2 and .peer/ with setfit):

    .peer/venv/bin/python scripts/fewshot_study.py --out docs/fewshot.jsonl \\
        --datasets amazon-food --k 8 16 --seeds 0 1 2 3 4 --methods setfit setfit-py finetune

One JSON line per run (dataset, k, seed, method, test accuracy and macro-F1, train seconds, CPU).
Runs already in --out are skipped, so the study can be resumed."""
import argparse, json, os, platform, subprocess, sys, tempfile, time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQUIN = os.path.join(ROOT, "target/release/sequin")
MODEL = os.path.join(ROOT, "models/all-MiniLM-L6-v2")


def cpu():
    info = open("/proc/cpuinfo").read().splitlines()
    get = lambda k: next((l.split(":", 1)[1].strip() for l in info if l.split(":")[0].strip() == k), "?")
    return f"{get('model name')} (family {get('cpu family')}, model {get('model')}), {os.cpu_count()} cores"


def subset(dataset, k, seed, tmp):
    df = pd.read_parquet(os.path.join(ROOT, "datasets", dataset, "train.parquet"))
    rng = np.random.RandomState(seed)
    parts = []
    for label in sorted(df["label"].astype(str).unique()):
        rows = df[df["label"].astype(str) == label]
        parts.append(rows.iloc[rng.choice(len(rows), size=k, replace=False)])
    out = pd.concat(parts).sample(frac=1.0, random_state=seed)[["text", "label"]]
    path = os.path.join(tmp, f"{dataset}-{k}-{seed}.parquet")
    out.to_parquet(path, index=False)
    return path


def sequin(args):
    r = subprocess.run([SEQUIN] + args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"sequin {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r.stdout, r.stderr


def run_setfit(dataset, train, seed, tmp, a):
    out = os.path.join(tmp, "setfit-out")
    stdout, _ = sequin(["setfit", "--model", MODEL, "--train", train, "--test",
                        os.path.join(ROOT, "datasets", dataset, "test.parquet"), "--output", out,
                        "--seed", str(seed), "--max-length", str(a.max_length),
                        "--num-iterations", str(a.num_iterations)])
    s = json.loads(stdout.strip().splitlines()[-1])
    return {"accuracy": s["test"]["accuracy"], "macro_f1": s["test"]["macro_f1"],
            "train_seconds": s["train_seconds"], "body_seconds": s["body_seconds"],
            "pairs": s["pairs"]}


def run_setfit_py(dataset, train, seed, tmp, a):
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import accuracy_score, f1_score
    torch.set_num_threads(os.cpu_count())
    tr = pd.read_parquet(train)
    te = pd.read_parquet(os.path.join(ROOT, "datasets", dataset, "test.parquet"))
    labels = sorted(tr["label"].astype(str).unique())
    t0 = time.time()
    model = SetFitModel.from_pretrained(MODEL, labels=labels)
    args = TrainingArguments(batch_size=16, num_epochs=1, num_iterations=a.num_iterations,
                             body_learning_rate=2e-5, max_length=a.max_length, seed=seed,
                             report_to="none", output_dir=os.path.join(tmp, "setfit-py"),
                             save_strategy="no", logging_strategy="no", eval_strategy="no")
    ds = Dataset.from_pandas(tr.assign(label=tr["label"].astype(str)).reset_index(drop=True))
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    trainer.train()
    seconds = time.time() - t0
    model.model_body.max_seq_length = a.max_length  # predict as trained (sequin: --max-length)
    pred = model.predict(te["text"].tolist(), batch_size=64)
    pred = [str(p) for p in pred]
    truth = te["label"].astype(str).tolist()
    return {"accuracy": accuracy_score(truth, pred),
            "macro_f1": f1_score(truth, pred, average="macro"), "train_seconds": seconds}


def finetune(dataset, train, seed, epochs, tmp, a, evaluate="test"):
    out = os.path.join(tmp, "ft-out")
    split = os.path.join(ROOT, "datasets", dataset, f"{evaluate}.parquet")
    if evaluate == "validation":
        v = pd.read_parquet(split).head(400)
        split = os.path.join(tmp, "val400.parquet")
        v.to_parquet(split, index=False)
    stdout, _ = sequin(["train", "--model", MODEL, "--train", train, "--test", split,
                        "--output", out, "--epochs", str(epochs), "--batch-size", "8",
                        "--lr", "5e-5", "--seed", str(seed), "--max-length", str(a.max_length),
                        "--save-total-limit", "1"])
    s = json.loads([l for l in stdout.splitlines() if '"best_epoch"' in l][-1])
    return {"accuracy": s["test"]["accuracy"], "macro_f1": s["test"]["macro_f1"],
            "train_seconds": s["train_seconds"], "epochs": epochs}


def tuned_epochs(dataset, k, train, tmp, a, cache):
    key = f"{dataset}-{k}"
    if key not in cache:
        scores = {e: finetune(dataset, train, 0, e, tmp, a, "validation")["accuracy"]
                  for e in a.epochs_grid}
        cache[key] = max(scores, key=lambda e: (scores[e], -e))
        print(f"# {key}: validation accuracy by epochs {scores} -> {cache[key]}", file=sys.stderr)
    return cache[key]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--datasets", nargs="+", default=["amazon-food"])
    ap.add_argument("--k", nargs="+", type=int, default=[8, 16])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--methods", nargs="+", default=["setfit", "setfit-py", "finetune", "eda"])
    ap.add_argument("--num-iterations", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs-grid", nargs="+", type=int, default=[5, 10, 20])
    a = ap.parse_args()
    done = set()
    if os.path.exists(a.out):
        for l in open(a.out):
            r = json.loads(l)
            done.add((r["dataset"], r["k"], r["seed"], r["method"]))
    cache, where = {}, cpu()
    for dataset in a.datasets:
        for k in a.k:
            for seed in a.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    train = subset(dataset, k, seed, tmp)
                    for method in a.methods:
                        if (dataset, k, seed, method) in done:
                            continue
                        if method == "setfit":
                            r = run_setfit(dataset, train, seed, tmp, a)
                        elif method == "setfit-py":
                            r = run_setfit_py(dataset, train, seed, tmp, a)
                        elif method == "finetune":
                            r = finetune(dataset, train, seed, tuned_epochs(dataset, k, train, tmp, a, cache), tmp, a)
                        elif method == "eda":
                            aug = os.path.join(tmp, "eda.parquet")
                            sequin(["augment", "--input", train, "--output", aug, "--num-aug", "4",
                                    "--seed", str(seed)])
                            r = finetune(dataset, aug, seed, tuned_epochs(dataset, k, train, tmp, a, cache), tmp, a)
                        else:
                            sys.exit(f"unknown method {method}")
                        row = {"dataset": dataset, "k": k, "seed": seed, "method": method, **r,
                               "cpu": where, "date": time.strftime("%Y-%m-%d")}
                        print(json.dumps(row), flush=True)
                        with open(a.out, "a") as f:
                            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
