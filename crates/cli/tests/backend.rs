//! The backend suite: the same model on whatever backend this build selects (`cpu`, `wgpu` or
//! `cuda`, by Cargo feature, through `sequin_cli::device()`), checked against transformers'
//! committed fixtures and against the CPU.
//!
//! `cargo xtask test` runs it twice: in the workspace run (CPU), and built with
//! `--features wgpu` on a Vulkan device (Mesa's lavapipe where there is no GPU). With
//! `--features cuda` it runs on a CUDA GPU; where only a packed binary can travel to the GPU,
//! `scripts/gpu_check.sh` runs the same parity and training checks through the CLI.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use sequin_data::Record;
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, TrainConfig, train_model};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn flat(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        n => vec![n.as_f64().unwrap() as f32],
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The fixture inputs (texts and pairs, the empty text among them).
fn inputs() -> Vec<Record> {
    read_json(&fixture("parity.json"))["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Record {
            text: i["text"].as_str().unwrap().to_string(),
            text_pair: i["text_pair"].as_str().map(String::from),
            label: None,
            labels: None,
            features: Vec::new(),
        })
        .collect()
}

fn backend() -> Device {
    eprintln!("backend suite on {}", sequin_cli::backend_name());
    sequin_cli::device()
}

/// Per-row logits of a fixture classifier on this backend.
fn logits(dir: &str, max_length: usize, device: &Device) -> Vec<f32> {
    let c = Classifier::load(&fixture(dir), device).unwrap();
    let opts = EncodeOptions {
        max_length,
        pad_to_multiple_of: None,
    };
    let preds = c.predict(&inputs(), opts, 8).unwrap();
    preds.iter().flat_map(|p| p.logits.clone()).collect()
}

#[test]
fn every_family_matches_transformers_on_this_backend() {
    let device = backend();
    let bert = read_json(&fixture("parity.json"));
    let got = logits("bert-tiny-cls", 32, &device);
    let diff = max_abs_diff(&got, &flat(&bert["cls_logits_single"]));
    assert!(diff <= 1e-4, "bert: max |Δlogit| {diff}");
    for (name, dir) in [
        ("roberta", "roberta-tiny-cls"),
        ("xlm-roberta-b", "xlm-roberta-b-tiny-cls"),
        ("distilbert", "distilbert-tiny-cls"),
        ("longformer", "longformer-tiny-cls"),
        ("modernbert", "modernbert-tiny-cls"),
        ("modernbert-b", "modernbert-b-tiny-cls"),
    ] {
        let fx = read_json(&fixture(&format!("{name}.json")));
        let max_length = fx["max_length"].as_u64().unwrap() as usize;
        let got = logits(dir, max_length, &device);
        let diff = max_abs_diff(&got, &flat(&fx["logits_single"]));
        assert!(diff <= 1e-4, "{name}: max |Δlogit| {diff}");
    }
}

/// Three optimizer steps of the same seeded run (dropout on): the losses and the trained
/// model's logits agree with the CPU's. The data has the fixture's three labels, so every
/// weight is loaded: a freshly initialised head would be drawn from the backend's own random
/// generator, which differs between backends.
#[test]
fn three_training_steps_agree_with_the_cpu() {
    let device = backend();
    let out = std::env::temp_dir().join(format!("sequin-backend-train-{}", std::process::id()));
    let run = |device: &Device, tag: &str| {
        let mut cfg = TrainConfig::new(
            fixture("bert-tiny-cls").to_string_lossy(),
            repo().join("datasets/drug-reviews/train.parquet"),
            out.join(tag),
        );
        cfg.max_train_samples = Some(96);
        cfg.max_steps = Some(3);
        cfg.max_length = 32;
        cfg.lr = 1e-3;
        cfg.shards = Some(1);
        train_model(&cfg, device).unwrap()
    };
    let (on_backend, trained) = run(&device, "backend");
    let (on_cpu, reference) = run(&Device::flex(), "cpu");
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(on_backend.steps, 3);
    let (a, b) = (on_backend.epochs[0].train_loss, on_cpu.epochs[0].train_loss);
    assert!(
        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
        "loss {a} vs CPU {b}"
    );
    let opts = EncodeOptions {
        max_length: 32,
        pad_to_multiple_of: None,
    };
    let l = |c: &Classifier| -> Vec<f32> {
        c.predict(&inputs(), opts, 8)
            .unwrap()
            .iter()
            .flat_map(|p| p.logits.clone())
            .collect()
    };
    let diff = max_abs_diff(&l(&trained), &l(&reference));
    assert!(
        diff <= 1e-3,
        "trained logits differ from the CPU's by {diff}"
    );
}

#[test]
fn eval_and_predict_through_the_cli_on_this_backend() {
    let _ = backend();
    let d = std::env::temp_dir().join(format!("sequin-backend-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let fx = read_json(&fixture("parity.json"));
    let want = flat(&fx["cls_logits_single"]);
    let labels = ["negative", "neutral", "positive"];
    // The inputs, labelled with transformers' own predictions: eval must find them all.
    let mut jsonl = String::new();
    for (i, r) in inputs().iter().enumerate() {
        let row = &want[i * 3..i * 3 + 3];
        let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        jsonl +=
            &serde_json::json!({"text": r.text, "text_pair": r.text_pair, "label": labels[best]})
                .to_string();
        jsonl.push('\n');
    }
    let input = d.join("in.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let output = d.join("out.jsonl");
    let model = fixture("bert-tiny-cls");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    sequin_cli::run_args([
        "sequin",
        "predict",
        "--model",
        &s(&model),
        "--input",
        &s(&input),
        "--output",
        &s(&output),
        "--text-pair-column",
        "text_pair",
        "--max-length",
        "32",
    ])
    .unwrap();
    let got: Vec<f32> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .flat_map(|l| flat(&serde_json::from_str::<serde_json::Value>(l).unwrap()["logits"]))
        .collect();
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4, "predict: max |Δlogit| {diff}");
    sequin_cli::run_args([
        "sequin",
        "eval",
        "--model",
        &s(&model),
        "--data",
        &s(&input),
        "--text-pair-column",
        "text_pair",
        "--max-length",
        "32",
    ])
    .unwrap();
    let c = Classifier::load(&model, &sequin_cli::device()).unwrap();
    let cols = c.columns(
        sequin_train::ColumnChoice {
            text_pair: Some("text_pair".into()),
            ..Default::default()
        },
        true,
    );
    let recs = c.read(&input, &cols).unwrap();
    let opts = c.checked_options(Some(32)).unwrap();
    let m = c.evaluate(&recs, &input, opts, 8).unwrap();
    assert_eq!(m.summary.accuracy, 1.0, "eval on transformers' own labels");
    let _ = std::fs::remove_dir_all(&d);
}
