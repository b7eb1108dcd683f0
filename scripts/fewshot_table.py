#!/usr/bin/env python3
"""Markdown table of a few-shot study (scripts/fewshot_study.py's JSON lines): per dataset, k and
method, test accuracy and macro-F1 as mean ± sd over the seeds run, mean train seconds, seeds.

    python3 scripts/fewshot_table.py docs/fewshot-2026-12-04-epyc-zen4.jsonl"""
import json, statistics, sys
from collections import defaultdict

NAMES = {"setfit": "sequin SetFit", "setfit-py": "`setfit` 1.2 (Python, PyTorch)",
         "finetune": "plain fine-tuning (`sequin train`)", "eda": "EDA ×4 + plain fine-tuning"}
rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["dataset"], r["k"], r["method"])].append(r)
fmt = lambda v: f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
print("| dataset | per class | method | test accuracy | test macro-F1 | train time | seeds |")
print("|---|---:|---|---:|---:|---:|---|")
order = list(NAMES)
for (d, k, m) in sorted(rows, key=lambda x: (x[0], x[1], order.index(x[2]))):
    rs = rows[(d, k, m)]
    extra = f" ({rs[0]['epochs']} epochs)" if "epochs" in rs[0] else ""
    print(f"| {d} | {k} | {NAMES[m]}{extra} | {fmt([r['accuracy'] for r in rs])} | "
          f"{fmt([r['macro_f1'] for r in rs])} | {statistics.mean(r['train_seconds'] for r in rs):.0f} s | "
          f"{','.join(str(r['seed']) for r in rs)} |")
