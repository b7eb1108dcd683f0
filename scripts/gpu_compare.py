"""On the GPU machine: sequin's CUDA logits against transformers (same weights, same inputs) and
against sequin's CPU logits computed beforehand; prints one JSON object."""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

def logits(path):
    return [json.loads(l)["logits"] for l in open(path)]

def maxdiff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for r, s in zip(a, b) for x, y in zip(r, s))

out = sys.argv[1]
rows = [json.loads(l) for l in open(".gpu/parity-inputs.jsonl")]
tok = AutoTokenizer.from_pretrained(".gpu/bert-tiny-cls")
m = AutoModelForSequenceClassification.from_pretrained(".gpu/bert-tiny-cls").eval()
hf = []
with torch.no_grad():
    for r in rows:
        enc = tok(r["text"], r.get("text_pair"), truncation=True, max_length=32, return_tensors="pt")
        hf.append(m(**enc).logits[0].tolist())
res = {"rows": len(rows)}
try:
    cuda = logits(f"{out}/cuda-predict.jsonl")
    res["cuda_vs_transformers_max_abs"] = maxdiff(cuda, hf)
    res["cuda_vs_cpu_max_abs"] = maxdiff(cuda, logits(".gpu/cpu-predict.jsonl"))
    res["cpu_vs_transformers_max_abs"] = maxdiff(logits(".gpu/cpu-predict.jsonl"), hf)
except Exception as e:
    res["predict_error"] = repr(e)
try:
    res["trained_cuda_vs_cpu_max_abs"] = maxdiff(
        logits(f"{out}/cuda-trained-predict.jsonl"), logits(".gpu/cpu-trained-predict.jsonl"))
except Exception as e:
    res["trained_error"] = repr(e)
print(json.dumps(res))
