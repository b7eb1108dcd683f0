#!/usr/bin/env python3
"""Checks that a model folder written by `sequin train` loads in transformers
(AutoModelForSequenceClassification.from_pretrained) and gives the logits `sequin predict`
gives, within 1e-4. A LoRA run's folder (a PEFT adapter: adapter_config.json) is loaded the
way PEFT users do: PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
base), DIR), the base from --base or the adapter's base_model_name_or_path. A SetFit folder
(setfit.json) is loaded with sentence-transformers, its head applied to the embeddings. Usage (from the
repo root; `cargo xtask hf-check DIR` runs it):

    .peer/venv/bin/python scripts/hf_check.py DIR DATA.parquet [--n 64] [--base BASE]

Prints one JSON line with the max absolute difference and exits non-zero above 1e-4."""
import argparse, json, os, subprocess, sys, tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("dir"); ap.add_argument("data"); ap.add_argument("--n", type=int, default=64)
ap.add_argument("--max-length", type=int, default=128)
ap.add_argument("--base", help="the base model of an adapter folder (default: its config's)")
a = ap.parse_args()
adapter = os.path.exists(os.path.join(a.dir, "adapter_config.json"))

df = pd.read_parquet(a.data).head(a.n)
pair = "text_pair" if "text_pair" in df.columns else None
with tempfile.TemporaryDirectory() as tmp:
    inp, out = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "out.jsonl")
    with open(inp, "w") as f:
        for _, r in df.iterrows():
            f.write(json.dumps({"text": r["text"], "text_pair": r[pair] if pair else None}) + "\n")
    cmd = ["cargo", "run", "--quiet", "-p", "sequin-cli", "--", "predict", "--model", a.dir,
           "--input", inp, "--output", out, "--max-length", str(a.max_length)]
    if pair:
        cmd += ["--text-pair-column", "text_pair"]
    if a.base:
        cmd += ["--base", a.base]
    subprocess.run(cmd, check=True)
    ours = [json.loads(l) for l in open(out)]

if os.path.exists(os.path.join(a.dir, "setfit.json")):
    # A SetFit folder: sentence-transformers loads the body; the head is model_head.safetensors.
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(a.dir, device="cpu")
    st.max_seq_length = a.max_length
    head = load_file(os.path.join(a.dir, "model_head.safetensors"))
    labels = json.load(open(os.path.join(a.dir, "config.json")))["id2label"]
    texts = [(r["text"], r[pair]) if pair else r["text"] for _, r in df.iterrows()]
    if pair:
        sys.exit("hf_check: SetFit folders of text pairs are checked by cargo test only")
    with torch.no_grad():
        logits = st.encode(texts, convert_to_tensor=True) @ head["weight"].T + head["bias"]
    diffs = [float((l - torch.tensor(o["logits"])).abs().max()) for l, o in zip(logits, ours)]
    agree = sum(labels[str(int(l.argmax()))] == o["label"] for l, o in zip(logits, ours))
    res = {"check": "sentence_transformers_load_and_logits", "dir": a.dir, "n": len(ours),
           "max_abs_diff": max(diffs), "labels_agree": agree}
    print(json.dumps(res))
    sys.exit(0 if max(diffs) <= 1e-4 and agree == len(ours) else 1)
if adapter:
    from peft import PeftModel
    acfg = json.load(open(os.path.join(a.dir, "adapter_config.json")))
    base = a.base or acfg["base_model_name_or_path"]
    labels = json.load(open(os.path.join(a.dir, "config.json")))
    model = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels["id2label"]),
        id2label={int(k): v for k, v in labels["id2label"].items()},
        label2id=labels["label2id"], ignore_mismatched_sizes=True), a.dir).eval()
    model.config = model.base_model.model.config
else:
    model = AutoModelForSequenceClassification.from_pretrained(a.dir).eval()
tok = AutoTokenizer.from_pretrained(a.dir)
diffs, agree = [], 0
with torch.no_grad():
    for (_, r), o in zip(df.iterrows(), ours):
        e = tok(r["text"], r[pair] if pair else None, truncation=True, max_length=a.max_length,
                return_tensors="pt")
        logits = model(**e).logits[0]
        diffs.append(float((logits - torch.tensor(o["logits"])).abs().max()))
        agree += model.config.id2label[int(logits.argmax())] == o["label"]
res = {"check": "peft_load_and_logits" if adapter else "hf_load_and_logits", "dir": a.dir, "n": len(ours), "max_abs_diff": max(diffs),
       "labels_agree": agree, "architectures": model.config.architectures,
       "problem_type": model.config.problem_type}
print(json.dumps(res))
sys.exit(0 if max(diffs) <= 1e-4 and agree == len(ours) else 1)
