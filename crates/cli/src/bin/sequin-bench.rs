//! `sequin-bench`: training-step and inference throughput of a BERT-shaped classifier on this
//! build's backend, measured exactly as `shared/bench/hf_bench.py` measures transformers +
//! PyTorch, so that `cargo xtask bench` can put the two side by side.
//!
//! Work per train step: forward (dropout on) + cross-entropy + backward + AdamW (lr 2e-5,
//! wd 0.01, no decay on biases and LayerNorm). Inference: forward without autodiff.
//! Inputs: random ids in [1000, vocab), no padding, token types 0, labels in {0, 1}; 4
//! pre-built batches cycled. Warmup steps are excluded.
//!
//! FLOPs (the peer's formula): N = parameters outside the embeddings, T = batch·seq,
//! train = 6·N·T + 12·L·seq²·H·batch, infer = 2·N·T + 4·L·seq²·H·batch.
//!
//! `--mode matmul`: the backend's matmul peak (2048³ f32), the yardstick of model FLOP
//! utilisation.
//!
//! `--mode data`: the data pipeline alone on a real file (`--data`, `--tokenizer`): records
//! already read, tokenization (truncation at `--seq-len`) and batching into tensors with
//! dynamic padding, `--batch` rows at a time, over the whole file `--steps` times.
//!
//! Prints one JSON line.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Parser;
use rand::{Rng, SeedableRng};
use sequin_encoders::BertConfig;
use sequin_heads::{BertForSequenceClassification, Family, loss};

#[derive(Parser)]
#[command(about = "Throughput of a BERT-shaped classifier (one JSON line)")]
struct Args {
    /// minilm-l6 (6×384, 12 heads) or bert-base (12×768, 12 heads).
    #[arg(long, default_value = "minilm-l6")]
    model: String,
    #[arg(long, value_parser = ["train", "infer", "data", "matmul"], default_value = "train")]
    mode: String,
    /// `--mode data`: the data file.
    #[arg(long, default_value = "datasets/amazon-food/train.parquet")]
    data: std::path::PathBuf,
    /// `--mode data`: the folder with `tokenizer.json`.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    tokenizer: std::path::PathBuf,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Measured steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Excluded warmup steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Row shards per batch run in parallel (as `sequin train --shards`) [default: as
    /// `sequin train`].
    #[arg(long)]
    shards: Option<usize>,
    /// `--mode train`: dropout off (hidden and attention), to measure what drawing the masks
    /// costs.
    #[arg(long)]
    no_dropout: bool,
    /// `--mode train`: burn's own composition of LayerNorm, GELU, softmax and dropout instead of
    /// sequin's fused blocks, to measure what the fusion gives.
    #[arg(long)]
    unfused: bool,
    /// `--mode infer`: the linear layers' arithmetic (as `sequin predict --precision`).
    #[arg(long, default_value = "fp32")]
    precision: sequin_encoders::Precision,
}

fn config(name: &str, dropout: f64) -> Result<BertConfig> {
    let (h, l, i) = match name {
        "minilm-l6" => (384, 6, 1536),
        "bert-base" => (768, 12, 3072),
        other => bail!("unknown --model {other}: minilm-l6 or bert-base"),
    };
    Ok(serde_json::from_value(serde_json::json!({
        "vocab_size": 30522, "hidden_size": h, "num_hidden_layers": l,
        "num_attention_heads": 12, "intermediate_size": i,
        "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout,
    }))?)
}

fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<()> {
    sequin_cli::tune_allocator();
    let a = Args::parse();
    if a.mode == "data" {
        return data_pipeline(&a);
    }
    if a.mode == "matmul" {
        return matmul_peak(&a);
    }
    sequin_encoders::fused::set_enabled(!a.unfused);
    let cfg = config(&a.model, if a.no_dropout { 0.0 } else { 0.1 })?;
    let shards = a.shards.unwrap_or_else(sequin_cli::default_shards);
    let infer_device = sequin_cli::device();
    let dev = if a.mode == "train" {
        infer_device.clone().autodiff()
    } else {
        infer_device.clone()
    };
    dev.seed(0);
    let t_load = Instant::now();
    let model = BertForSequenceClassification::init(&cfg, 2, &dev)?;
    let n_total = model.num_params();
    let n_emb = model.bert.embeddings.num_params();
    let n = (n_total - n_emb) as f64;
    let (b, s, l, h) = (
        a.batch,
        a.seq_len,
        cfg.num_hidden_layers as f64,
        cfg.hidden_size as f64,
    );
    let t = (b * s) as f64;
    let attn = l * (s * s) as f64 * h * b as f64;
    let (flops, formula) = if a.mode == "train" {
        (6.0 * n * t + 12.0 * attn, "6*N*T + 12*L*seq^2*H*batch")
    } else {
        (2.0 * n * t + 4.0 * attn, "2*N*T + 4*L*seq^2*H*batch")
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let batches: Vec<(Tensor<2, Int>, Tensor<1, Int>)> = (0..4)
        .map(|_| {
            let ids: Vec<i64> = (0..b * s)
                .map(|_| rng.random_range(1000..cfg.vocab_size as i64))
                .collect();
            let labels: Vec<i64> = (0..b).map(|_| rng.random_range(0..2)).collect();
            (
                Tensor::from_data(TensorData::new(ids, [b, s]), &dev),
                Tensor::from_data(TensorData::new(labels, [b]), &dev),
            )
        })
        .collect();
    let types = Tensor::<2, Int>::zeros([b, s], &dev);
    let load_s = t_load.elapsed().as_secs_f64();

    let mut per_step = Vec::with_capacity(a.steps);
    let (mut loss_first, mut loss_last) = (None, None);
    if a.mode == "train" {
        let mut model = model.train();
        let mut optim = sequin_train::optim::adamw(&model, 0.01);
        for i in 0..a.warmup + a.steps {
            let t0 = Instant::now();
            let (ids, labels) = batches[i % 4].clone();
            let (losses, grads) =
                sequin_train::shard::sharded_step(&model, b, shards, |m, rows, _| {
                    let share = rows.len() as f64 / b as f64;
                    let logits = m.forward(
                        ids.clone().slice(rows.clone()),
                        Some(types.clone().slice(rows.clone())),
                        None,
                    );
                    Ok(loss::cross_entropy(logits, labels.clone().slice(rows)).mul_scalar(share))
                })?;
            let v: f32 = losses.iter().sum();
            model = optim.step(2e-5, model, grads);
            if i >= a.warmup {
                per_step.push(t0.elapsed().as_secs_f64());
            }
            loss_first.get_or_insert(v);
            loss_last = Some(v);
        }
    } else {
        let model = model.valid();
        let _low = sequin_encoders::LowPrecisionLinears::mark(&model, a.precision);
        let types = types.clone();
        for i in 0..a.warmup + a.steps {
            let t0 = Instant::now();
            let (ids, _) = batches[i % 4].clone();
            let parts = sequin_train::shard::sharded_map(b, shards, |rows| {
                model.forward(
                    ids.clone().slice(rows.clone()),
                    Some(types.clone().slice(rows)),
                    None,
                )
            });
            let _: Vec<f32> = Tensor::cat(parts, 0).into_data().try_into_vec_as()?;
            if i >= a.warmup {
                per_step.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    let wall: f64 = per_step.iter().sum();
    let mut sorted = per_step.clone();
    sorted.sort_by(f64::total_cmp);
    let ms = wall * 1e3 / a.steps as f64;
    let backend = sequin_cli::backend_name();
    println!(
        "{}",
        serde_json::json!({
            "bench": "sequin", "backend": backend, "model": a.model, "mode": a.mode,
            "seq_len": s, "batch": b, "steps": a.steps, "warmup": a.warmup,
            "ms_per_step": ms, "step_ms_median": sorted[sorted.len() / 2] * 1e3,
            "samples_per_s": b as f64 * a.steps as f64 / wall,
            "tokens_per_s": t * a.steps as f64 / wall,
            "flops_per_step": flops, "flops_formula": formula,
            "gflops_per_s": flops / (ms / 1e3) / 1e9,
            "params_total": n_total, "params_nonembedding": n as usize,
            "loss_first": loss_first, "loss_last": loss_last,
            "load_s": load_s, "rss_peak_mib": peak_rss_mib(),
            "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
            "shards": shards, "dropout": !a.no_dropout, "fused": !a.unfused,
            "precision": if a.mode == "infer" { a.precision.name() } else { "fp32" },
            "int8_kernel": sequin_encoders::quant::int8_kernel().name(),
            "bf16_kernel": sequin_encoders::quant::bf16_kernel().name(),
        })
    );
    Ok(())
}

/// The backend's matmul peak: a 2048³ f32 product (`2·n³` FLOPs), `--steps` times after
/// `--warmup`, the median.
fn matmul_peak(a: &Args) -> Result<()> {
    use burn::tensor::Distribution;
    let device = sequin_cli::device();
    let n = 2048;
    let x = Tensor::<2>::random([n, n], Distribution::Default, &device);
    let y = Tensor::<2>::random([n, n], Distribution::Default, &device);
    let mut times = Vec::new();
    for i in 0..a.warmup + a.steps.max(1) {
        let t0 = Instant::now();
        let z = x.clone().matmul(y.clone());
        let _: Vec<f32> = z.slice([0..1, 0..1]).into_data().try_into_vec_as()?;
        if i >= a.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let t = times[times.len() / 2];
    let flops = 2.0 * (n as f64).powi(3);
    println!(
        "{}",
        serde_json::json!({
            "bench": "sequin", "backend": sequin_cli::backend_name(), "mode": "matmul",
            "n": n, "seconds_median": t, "gflops_per_s": flops / t / 1e9,
            "threads": std::thread::available_parallelism().map(|n| n.get()).ok(),
        })
    );
    Ok(())
}

/// Tokenization and batching throughput on a real file.
fn data_pipeline(a: &Args) -> Result<()> {
    use sequin_data::{Columns, EncodedBatch, read_records};
    use sequin_tokenize::{EncodeOptions, Tokenizer};
    let device = sequin_cli::device();
    let t_read = Instant::now();
    let records = read_records(&a.data, &Columns::default())?;
    let read_s = t_read.elapsed().as_secs_f64();
    let tokenizer = Tokenizer::from_dir(&a.tokenizer)?;
    let opts = EncodeOptions {
        max_length: a.seq_len,
        pad_to_multiple_of: None,
    };
    let t0 = Instant::now();
    let (mut rows, mut tokens) = (0usize, 0usize);
    for _ in 0..a.steps.max(1) {
        for chunk in records.chunks(a.batch.max(1)) {
            let refs: Vec<_> = chunk.iter().collect();
            let b = EncodedBatch::new(&tokenizer, &refs, None, opts, &device)?;
            let [n, s] = b.input_ids.dims();
            rows += n;
            tokens += n * s;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "sequin", "backend": sequin_cli::backend_name(), "mode": "data",
            "file": a.data, "rows": records.len(), "read_s": read_s,
            "seq_len": a.seq_len, "batch": a.batch, "passes": a.steps.max(1),
            "samples_per_s": rows as f64 / wall, "padded_tokens_per_s": tokens as f64 / wall,
            "rss_peak_mib": peak_rss_mib(),
        })
    );
    Ok(())
}
