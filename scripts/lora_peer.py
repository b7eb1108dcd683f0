#!/usr/bin/env python3
"""The LoRA peer for the README's LoRA table: PEFT's LoRA with transformers' `Trainer` on a
dataset folder (train/validation/test .parquet with `text` and `label`), the hyperparameters of
sequin's main job (2 epochs, batch 32, max_length 128, warmup 0.1, weight decay 0.01, linear
schedule) and the given LoRA settings. Prints one JSON line: test accuracy, macro-F1, train wall
time, trainable parameters and the adapter's size on disk."""
import argparse, json, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np, pandas as pd, torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                          Trainer, TrainingArguments, set_seed)

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True); ap.add_argument("--data", required=True)
ap.add_argument("--lr", type=float, default=1e-3); ap.add_argument("--r", type=int, default=8)
ap.add_argument("--alpha", type=float, default=16); ap.add_argument("--targets", default="query,value")
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--out", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "lora_peer"))
a = ap.parse_args()
set_seed(a.seed)
split = lambda s: pd.read_parquet(f"{a.data}/{s}.parquet").to_dict("records")
train, val, test = split("train"), split("validation"), split("test")
labels = sorted({str(r["label"]) for r in train}); l2i = {l: i for i, l in enumerate(labels)}
tok = AutoTokenizer.from_pretrained(a.model)
def enc(rows):
    out = []
    for r in rows:
        e = tok(r["text"], truncation=True, max_length=128); e["labels"] = l2i[str(r["label"])]; out.append(e)
    return out
base = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=len(labels))
targets = "all-linear" if a.targets == "all-linear" else a.targets.split(",")
model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=a.r, lora_alpha=a.alpha,
                                        lora_dropout=0.0, target_modules=targets))
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
def metrics(p):
    pred = p.predictions.argmax(-1); y = p.label_ids
    f1 = [0.0 if ((pred == c) & (y == c)).sum() == 0 else
          2 * ((pred == c) & (y == c)).sum() / (2 * ((pred == c) & (y == c)).sum() + ((pred == c) & (y != c)).sum() + ((pred != c) & (y == c)).sum())
          for c in range(len(labels))]
    return {"accuracy": float((pred == y).mean()), "macro_f1": float(np.mean(f1))}
args = TrainingArguments(output_dir=a.out, num_train_epochs=2, learning_rate=a.lr, per_device_train_batch_size=32,
        per_device_eval_batch_size=64, warmup_steps=0.1, weight_decay=0.01, lr_scheduler_type="linear", seed=a.seed,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[], dataloader_num_workers=0)
tr = Trainer(model=model, args=args, train_dataset=enc(train), data_collator=DataCollatorWithPadding(tok),
             compute_metrics=metrics)
t0 = time.time(); tr.train(); wall = time.time() - t0
res = tr.evaluate(enc(test), metric_key_prefix="test")
model.save_pretrained(a.out)
size = os.path.getsize(os.path.join(a.out, "adapter_model.safetensors"))
print(json.dumps({"peer": "peft+trainer", "r": a.r, "alpha": a.alpha, "targets": a.targets, "lr": a.lr, "seed": a.seed,
    "threads": torch.get_num_threads(), "test_accuracy": round(res["test_accuracy"], 4),
    "test_macro_f1": round(res["test_macro_f1"], 4), "train_wall_s": round(wall, 1), "trainable": trainable,
    "adapter_bytes": size}), flush=True)
