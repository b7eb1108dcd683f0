//! `cargo xtask bench`: sequin beside transformers + PyTorch, measured in one run on one
//! machine; the CPU model is recorded with every figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::setup::{fetch_model, peer};
use crate::{Backend, run};

/// What every measurement of one bench run shares.
struct Bench<'a> {
    root: &'a Path,
    model: PathBuf,
    /// The peer's Python, when the peer is set up.
    peer: Option<PathBuf>,
    quick: bool,
    repeats: usize,
    threads: String,
    cpu: String,
}

/// The CPU model, as /proc/cpuinfo names it, with its family and model numbers (a virtual
/// machine's name can be as bare as "AMD EPYC"); every figure is recorded with it.
pub(crate) fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| "unknown CPU".into());
    match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
        _ => name,
    }
}

/// The CPU's feature flags, as /proc/cpuinfo lists them (recorded with every row: which SIMD,
/// VNNI and BF16 instructions the figures had).
pub(crate) fn cpu_flags() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("flags"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Runs a command that prints one JSON line last; returns it.
fn json_line(cmd: &mut Command) -> Result<serde_json::Value> {
    eprintln!("$ {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed with {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line in the output")?;
    Ok(serde_json::from_str(line)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Runs the benchmark and writes target/bench/results.json and results.md.
pub(crate) fn bench(
    root: &Path,
    quick: bool,
    backends: &[Backend],
    setup_peer: bool,
) -> Result<()> {
    let py = root.join(".peer/venv/bin/python");
    let peer_ok = if setup_peer {
        peer().is_ok()
    } else {
        py.is_file()
    };
    if !peer_ok {
        eprintln!(
            "warning: no .peer/ (transformers + PyTorch): peer columns stay empty; pass --setup-peer"
        );
    }
    let b = Bench {
        root,
        model: fetch_model()?,
        peer: peer_ok.then_some(py),
        quick,
        repeats: if quick { 2 } else { 3 },
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string(),
        cpu: cpu_model(),
    };
    let mut rows = Vec::new();
    for &backend in backends {
        rows.extend(b.backend_rows(backend)?);
    }
    // End to end on real data (full bench, CPU): one training epoch on amazon-food with dynamic
    // padding, and prediction over its test split, beside transformers' Trainer.
    let epoch = if quick || !backends.contains(&Backend::Cpu) {
        None
    } else {
        Some(real_data_epoch(root, &b.model, b.peer.as_deref())?)
    };
    if let Some(e) = &epoch {
        rows.push(e.clone());
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    let md = markdown(&rows, epoch.as_ref(), &b.cpu);
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    println!(
        "medians of {} runs; seq 128, batch 32, fp32; peer = transformers + PyTorch (shared/bench/hf_bench.py), same threads; CPU: {}",
        b.repeats, b.cpu
    );
    println!("written: target/bench/results.json, target/bench/results.md");
    Ok(())
}

impl Bench<'_> {
    /// Median of `repeats` runs of a command's JSON `field`.
    fn median_of(&self, field: &str, mut cmd: impl FnMut() -> Command) -> Result<f64> {
        let mut v = Vec::new();
        for _ in 0..self.repeats {
            v.push(json_line(&mut cmd())?[field].as_f64().unwrap_or(f64::NAN));
        }
        Ok(median(v))
    }

    /// Every row of one backend: its data pipeline and matmul peak, then each shape.
    fn backend_rows(&self, backend: Backend) -> Result<Vec<Value>> {
        let exe = build_release(self.root, "sequin-bench", Some(backend.feature()))?;
        // The data pipeline alone (tokenize + batch amazon-food's training split), which must
        // feed at least 10x what training consumes.
        let data_sps = self.median_of("samples_per_s", || {
            let mut c = Command::new(&exe);
            c.args([
                "--mode",
                "data",
                "--seq-len",
                "128",
                "--batch",
                "32",
                "--steps",
                "2",
            ])
            .arg("--data")
            .arg(self.root.join("datasets/amazon-food/train.parquet"))
            .arg("--tokenizer")
            .arg(&self.model);
            c
        })?;
        // The backend's matmul peak (2048³ f32), the yardstick of FLOP utilisation.
        let matmul_peak = self.median_of("gflops_per_s", || {
            let mut c = Command::new(&exe);
            c.args(["--mode", "matmul", "--steps", "5", "--warmup", "2"]);
            c
        })?;
        let shapes: &[&str] = if self.quick {
            &["minilm-l6"]
        } else {
            &["minilm-l6", "bert-base"]
        };
        let mut rows = Vec::new();
        for &shape in shapes {
            let mut row = self.shape_row(&exe, backend, shape)?;
            let (gflops, train) = (
                row["gflops_train"].as_f64(),
                row["train_samples_per_s"].as_f64(),
            );
            row["data_samples_per_s"] = json!(data_sps);
            row["matmul_peak_gflops"] = json!(matmul_peak);
            row["flop_utilisation_train"] =
                json!(gflops.map(|x| (x / matmul_peak * 1000.0).round() / 1000.0));
            row["data_over_train"] = json!(ratio(Some(data_sps), train));
            rows.push(row);
        }
        Ok(rows)
    }

    /// Training and inference of one shape, sequin and (on the CPU) the peer, `repeats` times.
    fn shape_row(&self, exe: &Path, backend: Backend, shape: &str) -> Result<Value> {
        let (train_steps, infer_steps) = match (self.quick, shape) {
            (true, _) => (4, 8),
            (false, "bert-base") => (6, 10),
            _ => (10, 20),
        };
        let mut m: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut extra = Value::Null;
        let (mut kernel, mut bf16_kernel) = (Value::Null, Value::Null);
        for _ in 0..self.repeats {
            for (mode, steps) in [("train", train_steps), ("infer", infer_steps)] {
                // The same work and allocator settings on both sides.
                let shared = |mut c: Command| {
                    c.args([
                        "--model",
                        shape,
                        "--mode",
                        mode,
                        "--seq-len",
                        "128",
                        "--batch",
                        "32",
                    ])
                    .args(["--steps", &steps.to_string(), "--warmup", "2"])
                    .env("MALLOC_MMAP_THRESHOLD_", "1073741824")
                    .env("MALLOC_TRIM_THRESHOLD_", "1073741824")
                    .env("MALLOC_ARENA_MAX", "1");
                    c
                };
                let mut runs = vec![("", json_line(&mut shared(Command::new(exe)))?)];
                if let (Some(py), Backend::Cpu) = (&self.peer, backend) {
                    let mut c = Command::new(py);
                    c.arg(self.root.join("../shared/bench/hf_bench.py"));
                    let mut c = shared(c);
                    c.args(["--threads", &self.threads])
                        .env("MINILM_PATH", &self.model);
                    runs.push(("peer_", json_line(&mut c)?));
                }
                if mode == "infer" && backend == Backend::Cpu {
                    runs.extend(self.low_precision_and_ort_runs(exe, shape, steps, &shared)?);
                }
                for (side, r) in runs {
                    if side == "int8_" {
                        kernel = r["int8_kernel"].clone();
                    }
                    if side == "bf16_" {
                        bf16_kernel = r["bf16_kernel"].clone();
                    }
                    let mut push = |k: &str, field: &str| {
                        m.entry(format!("{side}{k}"))
                            .or_default()
                            .push(r[field].as_f64().unwrap_or(f64::NAN));
                    };
                    push(mode, "samples_per_s");
                    if mode == "train" {
                        push("rss", "rss_peak_mib");
                        push("gflops", "gflops_per_s");
                        if side.is_empty() {
                            extra = r.clone();
                        }
                    } else {
                        push("infer_rss", "rss_peak_mib");
                    }
                }
            }
        }
        let g = |k: &str| m.get(k).cloned().map(median);
        let bf16 = json!({
            "bf16_infer_samples_per_s": g("bf16_infer"),
            "bf16_infer_peak_rss_mb": g("bf16_infer_rss"),
            "bf16_kernel": bf16_kernel,
            "torch_bf16_infer_samples_per_s": g("torch_bf16_infer"),
            "bf16_ratio_torch_bf16": ratio(g("bf16_infer"), g("torch_bf16_infer")),
            "bf16_over_fp32": ratio(g("bf16_infer"), g("infer")),
        });
        let mut row = json!({
            "shape": shape, "backend": backend.feature(), "cpu": self.cpu, "cpu_flags": cpu_flags(),
            "seq_len": 128, "batch": 32, "dtype": "fp32",
            "repeats": self.repeats, "train_steps": train_steps, "infer_steps": infer_steps,
            "train_samples_per_s": g("train"), "infer_samples_per_s": g("infer"),
            "peak_rss_mb": g("rss"), "gflops_train": g("gflops"),
            "peer_train_samples_per_s": g("peer_train"), "peer_infer_samples_per_s": g("peer_infer"),
            "peer_peak_rss_mb": g("peer_rss"), "peer_gflops_train": g("peer_gflops"),
            "train_ratio": ratio(g("train"), g("peer_train")),
            "infer_ratio": ratio(g("infer"), g("peer_infer")),
            "infer_peak_rss_mb": g("infer_rss"), "peer_infer_peak_rss_mb": g("peer_infer_rss"),
            "ort_fp32_infer_samples_per_s": g("ort_fp32_infer"),
            "ort_fp32_infer_peak_rss_mb": g("ort_fp32_infer_rss"),
            "infer_ratio_ort_fp32": ratio(g("infer"), g("ort_fp32_infer")),
            "int8_infer_samples_per_s": g("int8_infer"),
            "int8_infer_peak_rss_mb": g("int8_infer_rss"),
            "int8_kernel": kernel,
            "torch_int8_infer_samples_per_s": g("torch_int8_infer"),
            "ort_int8_infer_samples_per_s": g("ort_int8_infer"),
            "int8_ratio_torch_int8": ratio(g("int8_infer"), g("torch_int8_infer")),
            "int8_ratio_ort_int8": ratio(g("int8_infer"), g("ort_int8_infer")),
            "rss_ratio": ratio(g("rss"), g("peer_rss")),
            "flops_formula": extra["flops_formula"],
            "threads": self.threads,
            "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        });
        if let (Some(row), Value::Object(bf16)) = (row.as_object_mut(), bf16) {
            row.extend(bf16);
        }
        Ok(row)
    }
}

impl Bench<'_> {
    /// Inference beside the fp32 pair: sequin int8 and bf16 and, with the peer set up,
    /// PyTorch dynamic int8, PyTorch bf16 and ONNX Runtime fp32 and int8
    /// (`scripts/peer_infer.py`), with the same shape, steps and threads. Each run is tagged
    /// with its column prefix.
    fn low_precision_and_ort_runs(
        &self,
        exe: &Path,
        shape: &str,
        steps: usize,
        shared: &dyn Fn(Command) -> Command,
    ) -> Result<Vec<(&'static str, Value)>> {
        let mut runs = Vec::new();
        for (side, precision) in [("int8_", "int8"), ("bf16_", "bf16")] {
            let mut c = shared(Command::new(exe));
            c.args(["--precision", precision]);
            runs.push((side, json_line(&mut c)?));
        }
        let Some(py) = &self.peer else {
            return Ok(runs);
        };
        for (side, engine) in [
            ("torch_int8_", "torch-int8"),
            ("torch_bf16_", "torch-bf16"),
            ("ort_fp32_", "ort-fp32"),
            ("ort_int8_", "ort-int8"),
        ] {
            let mut c = Command::new(py);
            c.arg(self.root.join("scripts/peer_infer.py"))
                .args(["--engine", engine, "--model", shape, "--seq-len", "128"])
                .args([
                    "--batch",
                    "32",
                    "--warmup",
                    "2",
                    "--steps",
                    &steps.to_string(),
                ])
                .args(["--threads", &self.threads])
                .arg("--minilm")
                .arg(&self.model);
            runs.push((side, json_line(&mut c)?));
        }
        Ok(runs)
    }
}

/// The inference table: fp32 beside PyTorch eager and ONNX Runtime fp32, int8 beside PyTorch
/// dynamic int8 and ONNX Runtime int8, and peak RSS.
fn inference_table(rows: &[Value]) -> String {
    let f = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.2}"));
    let mut md = "\n| shape | infer fp32 samples/s | PyTorch | ratio | ORT fp32 | ratio | infer int8 samples/s | PyTorch int8 | ratio | ORT int8 | ratio | peak RSS infer fp32 / int8 (MiB) | PyTorch | ORT fp32 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n".to_string();
    for r in rows
        .iter()
        .filter(|r| r.get("int8_infer_samples_per_s").is_some())
    {
        let cells = [
            "infer_samples_per_s",
            "peer_infer_samples_per_s",
            "infer_ratio",
            "ort_fp32_infer_samples_per_s",
            "infer_ratio_ort_fp32",
            "int8_infer_samples_per_s",
            "torch_int8_infer_samples_per_s",
            "int8_ratio_torch_int8",
            "ort_int8_infer_samples_per_s",
            "int8_ratio_ort_int8",
        ]
        .map(|k| f(&r[k]));
        md += &format!(
            "| {} | {} | {} / {} | {} | {} |\n",
            r["shape"].as_str().unwrap_or(""),
            cells.join(" | "),
            f(&r["infer_peak_rss_mb"]),
            f(&r["int8_infer_peak_rss_mb"]),
            f(&r["peer_infer_peak_rss_mb"]),
            f(&r["ort_fp32_infer_peak_rss_mb"]),
        );
    }
    if let Some(k) = rows.iter().find_map(|r| r["int8_kernel"].as_str()) {
        md += &format!("\nsequin int8 kernel: {k}\n");
    }
    md += "\n| shape | infer bf16 samples/s | PyTorch bf16 | ratio | of sequin fp32 | peak RSS infer bf16 (MiB) |\n|---|---:|---:|---:|---:|---:|\n";
    for r in rows
        .iter()
        .filter(|r| r.get("bf16_infer_samples_per_s").is_some())
    {
        let cells = [
            "bf16_infer_samples_per_s",
            "torch_bf16_infer_samples_per_s",
            "bf16_ratio_torch_bf16",
            "bf16_over_fp32",
            "bf16_infer_peak_rss_mb",
        ]
        .map(|k| f(&r[k]));
        md += &format!(
            "| {} | {} |\n",
            r["shape"].as_str().unwrap_or(""),
            cells.join(" | ")
        );
    }
    if let Some(k) = rows.iter().find_map(|r| r["bf16_kernel"].as_str()) {
        md += &format!("\nsequin bf16 kernel: {k}\n");
    }
    md
}

/// Issue #18's targets against this run's figures, one line each, per shape.
fn targets_table(rows: &[Value], epoch: Option<&Value>) -> String {
    let mut md =
        "\n| target (issue #18) | shape | measured | holds |\n|---|---|---:|---|\n".to_string();
    let mut line = |target: &str, shape: &str, v: Option<f64>, holds: Option<bool>, unit: &str| {
        let measured = v.map_or("—".to_string(), |x| format!("{x:.2}{unit}"));
        let verdict = holds.map_or("not measured", |h| if h { "met" } else { "missed" });
        md += &format!("| {target} | {shape} | {measured} | {verdict} |\n");
    };
    for r in rows
        .iter()
        .filter(|r| r.get("train_samples_per_s").is_some())
    {
        let shape = r["shape"].as_str().unwrap_or("");
        let at_least = |k: &str, min: f64| (r[k].as_f64(), r[k].as_f64().map(|x| x >= min));
        let at_most = |a: &str, b: &str| {
            let x = r[a].as_f64().zip(r[b].as_f64()).map(|(a, b)| a / b);
            (x, x.map(|x| x <= 1.0))
        };
        let (v, h) = at_least("train_ratio", 1.5);
        line("training ≥ 1.5× PyTorch fp32", shape, v, h, "×");
        let (v, h) = at_least("infer_ratio", 1.5);
        line("inference fp32 ≥ 1.5× PyTorch eager", shape, v, h, "×");
        let (v, h) = at_least("infer_ratio_ort_fp32", 1.0);
        line("inference fp32 ≥ 1.0× ONNX Runtime fp32", shape, v, h, "×");
        let (v, h) = at_least("int8_ratio_ort_int8", 1.2);
        line("inference int8 ≥ 1.2× ONNX Runtime int8", shape, v, h, "×");
        let (v, h) = at_least("int8_ratio_torch_int8", 1.5);
        line(
            "inference int8 ≥ 1.5× PyTorch dynamic int8",
            shape,
            v,
            h,
            "×",
        );
        let (v, h) = at_least("flop_utilisation_train", 0.6);
        line(
            "training ≥ 60% of the matmul peak",
            shape,
            v.map(|x| x * 100.0),
            h,
            "%",
        );
        let (v, h) = at_most("peak_rss_mb", "peer_peak_rss_mb");
        line("peak RSS training ≤ PyTorch's", shape, v, h, "×");
        let (v, h) = at_most("infer_peak_rss_mb", "peer_infer_peak_rss_mb");
        line("peak RSS inference fp32 ≤ PyTorch's", shape, v, h, "×");
    }
    if let Some(e) = epoch {
        for p in ["int8", "bf16"] {
            let d = e[format!("{p}_accuracy_change_points")].as_f64();
            line(
                &format!("{p} test accuracy within 0.5 points of fp32 (amazon-food)"),
                "minilm-l6",
                d,
                d.map(|d| d.abs() <= 0.5),
                " points",
            );
        }
    }
    md
}

/// `a / b`, to two decimals.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| (a / b * 100.0).round() / 100.0)
}

/// The results as Markdown: the table, the real-data epoch, the data pipeline.
fn markdown(rows: &[Value], epoch: Option<&Value>, cpu: &str) -> String {
    let f = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.2}"));
    let f3 = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.3}"));
    let f4 = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.4}"));
    let mut md = format!(
        "CPU: {cpu}\n\n| shape | backend | train samples/s | peer | ratio | infer samples/s | peer | ratio | peak RSS train (MiB) | peer | GFLOP/s train | of matmul peak |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows
        .iter()
        .filter(|r| r.get("train_samples_per_s").is_some())
    {
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["shape"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or(""),
            f(&r["train_samples_per_s"]),
            f(&r["peer_train_samples_per_s"]),
            f(&r["train_ratio"]),
            f(&r["infer_samples_per_s"]),
            f(&r["peer_infer_samples_per_s"]),
            f(&r["infer_ratio"]),
            f(&r["peak_rss_mb"]),
            f(&r["peer_peak_rss_mb"]),
            f(&r["gflops_train"]),
            r["flop_utilisation_train"]
                .as_f64()
                .map_or("—".to_string(), |u| format!(
                    "{:.0}% of {:.0}",
                    u * 100.0,
                    r["matmul_peak_gflops"].as_f64().unwrap_or(f64::NAN)
                )),
        );
    }
    md += &inference_table(rows);
    md += &targets_table(rows, epoch);
    if let Some(e) = epoch {
        md += &format!(
            "\namazon-food, 1 epoch (3,575 reviews, batch 32, max_length 128, dynamic padding): sequin {} s, Trainer {} s (ratio {}); test accuracy {} vs {}; sequin predict over the 1,000 test reviews {} s (int8: {} s, bf16: {} s); test accuracy fp32 {} vs int8 {} ({} points, max |Δprob| {}) vs bf16 {} ({} points, max |Δprob| {})\n",
            f(&e["epoch_train_s"]),
            f(&e["peer_epoch_train_s"]),
            f(&e["epoch_speed_ratio"]),
            f(&e["test_accuracy"]),
            f(&e["peer_test_accuracy"]),
            f(&e["predict_test_s"]),
            f(&e["predict_test_int8_s"]),
            f(&e["predict_test_bf16_s"]),
            f3(&e["test_accuracy_fp32_eval"]),
            f3(&e["test_accuracy_int8"]),
            f(&e["int8_accuracy_change_points"]),
            f4(&e["int8_max_abs_prob_change"]),
            f3(&e["test_accuracy_bf16"]),
            f(&e["bf16_accuracy_change_points"]),
            f4(&e["bf16_max_abs_prob_change"]),
        );
    }
    for r in rows
        .iter()
        .filter(|r| r.get("data_samples_per_s").is_some())
    {
        md += &format!(
            "\n{} / {}: data pipeline (tokenize + batch amazon-food, seq 128, batch 32) {} samples/s = {}x training",
            r["shape"].as_str().unwrap_or(""),
            r["backend"].as_str().unwrap_or(""),
            f(&r["data_samples_per_s"]),
            f(&r["data_over_train"]),
        );
    }
    md.push('\n');
    md
}

/// Builds a `sequin-cli` binary in release mode (with one backend feature instead of the
/// default, when given) and returns its path.
pub(crate) fn build_release(root: &Path, bin: &str, feature: Option<&str>) -> Result<PathBuf> {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root)
        .args(["build", "--release", "-p", "sequin-cli", "--bin", bin]);
    if let Some(f) = feature {
        c.args(["--no-default-features", "--features", f]);
    }
    run(&mut c)?;
    Ok(root.join("target/release").join(bin))
}

/// One epoch of the main job's training (release, CPU) and a prediction pass over the test
/// split, timed, beside `hf_finetune.py --epochs 1` when the peer is available.
fn real_data_epoch(root: &Path, model: &Path, py: Option<&Path>) -> Result<serde_json::Value> {
    let exe = build_release(root, "sequin", None)?;
    let data = root.join("datasets/amazon-food");
    let out = root.join("target/bench/epoch-run");
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new(&exe)
        .arg("train")
        .arg("--model")
        .arg(model)
        .arg("--train")
        .arg(data.join("train.parquet"))
        .arg("--test")
        .arg(data.join("test.parquet"))
        .arg("--output")
        .arg(&out)
        .args(["--epochs", "1"]))?;
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json"))?)?;
    let predict = |precision: &str| -> Result<f64> {
        let t0 = std::time::Instant::now();
        run(Command::new(&exe)
            .arg("predict")
            .arg("--model")
            .arg(&out)
            .arg("--input")
            .arg(data.join("test.parquet"))
            .arg("--output")
            .arg(out.join(format!("predictions-{precision}.jsonl")))
            .args(["--top-k", "all", "--precision", precision]))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    let predict_s = predict("fp32")?;
    let predict_int8_s = predict("int8")?;
    let predict_bf16_s = predict("bf16")?;
    let accuracy = |precision: &str| -> Result<Option<f64>> {
        let m = json_line(
            Command::new(&exe)
                .arg("eval")
                .arg("--model")
                .arg(&out)
                .arg("--data")
                .arg(data.join("test.parquet"))
                .args(["--precision", precision]),
        )?;
        Ok(m["accuracy"].as_f64())
    };
    let (acc_fp32, acc_int8, acc_bf16) = (accuracy("fp32")?, accuracy("int8")?, accuracy("bf16")?);
    let dprob = |p: &str| {
        max_prob_change(
            &out.join("predictions-fp32.jsonl"),
            &out.join(format!("predictions-{p}.jsonl")),
        )
    };
    let change = |low: Option<f64>| {
        acc_fp32
            .zip(low)
            .map(|(f, i)| ((i - f) * 1000.0).round() / 10.0)
    };
    let peer = match py {
        Some(py) => Some(json_line(
            Command::new(py)
                .arg(root.join("../shared/bench/hf_finetune.py"))
                .arg("--model")
                .arg(root.join(".peer/minilm-l6"))
                .arg("--data")
                .arg(&data)
                .args(["--epochs", "1"]),
        )?),
        None => None,
    };
    let ours = run_json["summary"]["train_seconds"].as_f64();
    let theirs = peer.as_ref().and_then(|p| p["train_wall_s"].as_f64());
    Ok(json!({
        "shape": "minilm-l6 amazon-food epoch", "backend": "cpu",
        "epoch_train_s": ours, "peer_epoch_train_s": theirs,
        "epoch_speed_ratio": ours.zip(theirs).map(|(o, t)| (t / o * 100.0).round() / 100.0),
        "test_accuracy": run_json["summary"]["test"]["accuracy"],
        "peer_test_accuracy": peer.as_ref().map(|p| p["test_accuracy"].clone()),
        "predict_test_s": predict_s,
        "predict_test_int8_s": predict_int8_s,
        "predict_test_bf16_s": predict_bf16_s,
        "test_accuracy_fp32_eval": acc_fp32, "test_accuracy_int8": acc_int8,
        "test_accuracy_bf16": acc_bf16,
        "int8_accuracy_change_points": change(acc_int8),
        "bf16_accuracy_change_points": change(acc_bf16),
        "int8_max_abs_prob_change": dprob("int8")?,
        "bf16_max_abs_prob_change": dprob("bf16")?,
    }))
}

/// The largest change of any label's probability between two `predict --top-k all` files of
/// the same rows.
fn max_prob_change(a: &Path, b: &Path) -> Result<f64> {
    let read = |p: &Path| -> Result<Vec<BTreeMap<String, f64>>> {
        std::fs::read_to_string(p)?
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)?;
                let top = v["top_k"].as_array().context("no top_k in a prediction")?;
                Ok(top
                    .iter()
                    .map(|t| {
                        let label = t["label"].as_str().unwrap_or_default().to_string();
                        (label, t["score"].as_f64().unwrap_or(f64::NAN))
                    })
                    .collect())
            })
            .collect()
    };
    let (a, b) = (read(a)?, read(b)?);
    ensure!(
        a.len() == b.len(),
        "the two prediction files have different row counts"
    );
    Ok(a.iter()
        .zip(&b)
        .flat_map(|(x, y)| {
            x.iter()
                .map(move |(k, p)| (p - y.get(k).copied().unwrap_or(f64::NAN)).abs())
        })
        .fold(0.0, f64::max))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row as `shape_row` builds it (the fields the tables read), and an epoch.
    fn row() -> Value {
        json!({
            "shape": "minilm-l6", "backend": "cpu",
            "train_samples_per_s": 14.0, "peer_train_samples_per_s": 15.0, "train_ratio": 0.93,
            "infer_samples_per_s": 60.0, "peer_infer_samples_per_s": 56.0, "infer_ratio": 1.07,
            "ort_fp32_infer_samples_per_s": 59.0, "infer_ratio_ort_fp32": 1.02,
            "int8_infer_samples_per_s": 160.0, "torch_int8_infer_samples_per_s": 110.0,
            "int8_ratio_torch_int8": 1.45, "ort_int8_infer_samples_per_s": 127.0,
            "int8_ratio_ort_int8": 1.26, "int8_kernel": "avx512-vnni",
            "bf16_infer_samples_per_s": 108.0, "torch_bf16_infer_samples_per_s": 81.0,
            "bf16_ratio_torch_bf16": 1.33, "bf16_over_fp32": 1.8, "bf16_infer_peak_rss_mb": 149.0,
            "bf16_kernel": "avx512-bf16",
            "peak_rss_mb": 1279.0, "peer_peak_rss_mb": 3108.0,
            "infer_peak_rss_mb": 136.0, "peer_infer_peak_rss_mb": 884.0,
            "flop_utilisation_train": 0.62, "matmul_peak_gflops": 206.0,
        })
    }

    #[test]
    fn results_md_has_the_bf16_table_and_a_target_line_per_precision() {
        let epoch = json!({
            "int8_accuracy_change_points": 0.4, "bf16_accuracy_change_points": 0.0,
            "bf16_max_abs_prob_change": 0.0067, "test_accuracy_bf16": 0.841,
        });
        let md = markdown(&[row()], Some(&epoch), "AMD EPYC (family 25, model 17)");
        assert!(
            md.starts_with("CPU: AMD EPYC (family 25, model 17)"),
            "{md}"
        );
        assert!(
            md.contains("| minilm-l6 | 108.00 | 81.00 | 1.33 | 1.80 | 149.00 |"),
            "{md}"
        );
        assert!(md.contains("sequin bf16 kernel: avx512-bf16"), "{md}");
        assert!(md.contains("| bf16 test accuracy within 0.5 points of fp32 (amazon-food) | minilm-l6 | 0.00 points | met |"), "{md}");
        assert!(md.contains("| int8 test accuracy within 0.5 points of fp32 (amazon-food) | minilm-l6 | 0.40 points | met |"), "{md}");
        assert!(
            md.contains("bf16 0.841 (0.00 points, max |Δprob| 0.0067)"),
            "{md}"
        );
    }
}
