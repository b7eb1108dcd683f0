#!/usr/bin/env python3
"""Inference peers beside `sequin-bench --mode infer`: PyTorch dynamic int8 and bf16, and ONNX
Runtime fp32 and int8, on the same shapes and threads as `../shared/bench/hf_bench.py`.

Engines:
  torch-int8  torch.ao.quantization.quantize_dynamic on every nn.Linear (qint8 weights per
              tensor, activations quantized at run time), inference_mode forward.
  torch-bf16  the whole model cast to torch.bfloat16 (oneDNN's AVX512-BF16 / AMX kernels where
              the CPU has them), inference_mode forward, logits back in float32.
  ort-fp32    torch.onnx.export of the same model (eager attention, opset 17), ONNX Runtime's transformer
              optimizer (attention, LayerNorm, GELU and bias fusion for model_type bert), then
              an InferenceSession with ORT_ENABLE_ALL graph optimizations.
  ort-int8    ort-fp32's optimized graph through onnxruntime.quantization.quantize_dynamic
              (QInt8 weights, per channel; MatMulInteger / DynamicQuantizeLinear).

Work per step: one forward of batch x seq random token ids in [1000, vocab) (attention mask all
ones, token types zero), logits only; 4 distinct batches cycled; warmup steps excluded. FLOPs
use hf_bench.py's inference formula: 2*N_nonemb*B*S + 4*L*S^2*H*B.

Prints one JSON line (the result) on stdout; everything else goes to stderr.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(model, minilm, attn):
    from transformers import AutoModelForSequenceClassification, BertConfig

    kw = {"attn_implementation": attn} if attn else {}
    if model == "minilm-l6":
        m = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2, **kw)
    elif model == "bert-base":
        torch.manual_seed(0)
        m = AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2), **kw)
    else:
        sys.exit(f"unknown --model {model}: minilm-l6 or bert-base")
    return m.eval()


def params(m):
    total = sum(p.numel() for p in m.parameters())
    emb = sum(p.numel() for p in m.bert.embeddings.parameters())
    return total - emb


def torch_engine(m, threads):
    torch.set_num_threads(threads)
    q = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)

    def step(b):
        with torch.inference_mode():
            return q(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.numpy()

    return step, {"torch": torch.__version__}


def torch_bf16_engine(m, threads):
    torch.set_num_threads(threads)
    m = m.to(torch.bfloat16)

    def step(b):
        with torch.inference_mode():
            out = m(**{k: torch.from_numpy(v) for k, v in b.items()}).logits
            return out.float().numpy()

    return step, {"torch": torch.__version__}


def ort_engine(m, threads, int8, seq, tmp):
    import onnxruntime as ort

    cfg = m.config
    fp32 = os.path.join(tmp, "model.onnx")
    dummy = {
        "input_ids": torch.ones(2, seq, dtype=torch.long),
        "attention_mask": torch.ones(2, seq, dtype=torch.long),
        "token_type_ids": torch.zeros(2, seq, dtype=torch.long),
    }
    axes = {k: {0: "batch", 1: "seq"} for k in dummy}
    axes["logits"] = {0: "batch"}
    torch.onnx.export(
        m, (dummy,), fp32, input_names=list(dummy), output_names=["logits"],
        dynamic_axes=axes, opset_version=17, dynamo=False,
    )
    optimized = os.path.join(tmp, "model.opt.onnx")
    notes = {"onnxruntime": ort.__version__}
    try:
        from onnxruntime.transformers import optimizer

        opt = optimizer.optimize_model(
            fp32, model_type="bert", num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size, opt_level=1,
        )
        opt.save_model_to_file(optimized)
        notes["fusions"] = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    except Exception as e:  # the plain graph still runs with ORT's own optimizations
        log(f"transformer optimizer failed ({type(e).__name__}: {e}); using the exported graph")
        optimized = fp32
    path = optimized
    if int8:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        path = os.path.join(tmp, "model.int8.onnx")
        # The optimizer's fused ops (SkipLayerNormalization, BiasGelu) are outside ONNX's shape
        # inference; their outputs are float.
        quantize_dynamic(
            optimized, path, weight_type=QuantType.QInt8, per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def step(b):
        return sess.run(["logits"], {k: v for k, v in b.items() if k in names})[0]

    return step, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["torch-int8", "torch-bf16", "ort-fp32", "ort-int8"], required=True)
    ap.add_argument("--model", default="minilm-l6", help="minilm-l6 | bert-base")
    ap.add_argument("--minilm", default=os.environ.get("MINILM_PATH", ".peer/minilm-l6"))
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()

    # ONNX export from the eager attention: ORT's optimizer recognises that graph and fuses it
    # into its Attention op (it does not match the SDPA export).
    m = build(a.model, a.minilm, None if a.engine.startswith("torch") else "eager")
    cfg = m.config
    n = params(m)
    L, H, S, B = cfg.num_hidden_layers, cfg.hidden_size, a.seq_len, a.batch
    flops = 2 * n * B * S + 4 * L * S * S * H * B
    rng = np.random.default_rng(0)
    batches = [
        {
            "input_ids": rng.integers(1000, cfg.vocab_size, (B, S), dtype=np.int64),
            "attention_mask": np.ones((B, S), dtype=np.int64),
            "token_type_ids": np.zeros((B, S), dtype=np.int64),
        }
        for _ in range(4)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if a.engine == "torch-int8":
            step, notes = torch_engine(m, a.threads)
        elif a.engine == "torch-bf16":
            step, notes = torch_bf16_engine(m, a.threads)
        else:
            step, notes = ort_engine(m, a.threads, a.engine == "ort-int8", S, tmp)
            del m
        load_s = time.perf_counter() - t0
        for i in range(a.warmup):
            step(batches[i % 4])
        times = []
        for i in range(a.steps):
            t = time.perf_counter()
            step(batches[(a.warmup + i) % 4])
            times.append(time.perf_counter() - t)
    wall = sum(times)
    ms = wall * 1e3 / a.steps
    print(json.dumps({
        "bench": a.engine, "model": a.model, "mode": "infer", "seq_len": S, "batch": B,
        "steps": a.steps, "warmup": a.warmup, "ms_per_step": round(ms, 3),
        "step_ms_median": round(statistics.median(times) * 1e3, 3),
        "samples_per_s": round(B * a.steps / wall, 2),
        "flops_per_step": flops, "gflops_per_s": round(flops / (ms / 1e3) / 1e9, 2),
        "params_nonembedding": n, "load_s": round(load_s, 2),
        "rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "threads": a.threads, **notes, "unix_time": int(time.time()),
    }), flush=True)


if __name__ == "__main__":
    main()
