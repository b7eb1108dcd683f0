//! Metadata fusion end to end: a synthetic control where only the metadata carries the label,
//! every method on every backbone and problem type, reload in a fresh process, bad metadata.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use sequin_data::{Columns, read_records};
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, TrainConfig, train_model};

use crate::common::*;

/// Writes train and test CSVs whose texts are real reviews, unrelated to the label, and
/// whose label is `high` exactly when `score > 0` and `group` is `a` or `b` for `high` rows
/// (`c` or `d` otherwise). `stamp`, a date, is noise.
fn synthetic(dir: &Path) -> (PathBuf, PathBuf) {
    let texts: Vec<String> = read_records(&dataset("amazon-food", "train"), &Columns::default())
        .unwrap()
        .into_iter()
        .map(|r| r.text)
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut write = |name: &str, n: usize, offset: usize| {
        let path = dir.join(name);
        let mut w = csv::Writer::from_path(&path).unwrap();
        w.write_record(["text", "score", "group", "stamp", "label"])
            .unwrap();
        for i in 0..n {
            let score: f64 = rng.random_range(-3.0..3.0);
            let high = score > 0.0;
            let group = ["a", "b", "c", "d"][rng.random_range(0..2) + if high { 0 } else { 2 }];
            let day = rng.random_range(1..28);
            w.write_record([
                texts[offset + i].as_str(),
                &format!("{score:.4}"),
                group,
                &format!("2020-03-{day:02}"),
                if high { "high" } else { "low" },
            ])
            .unwrap();
        }
        w.flush().unwrap();
        path
    };
    (write("train.csv", 320, 0), write("test.csv", 200, 1000))
}

fn train_args<'a>(train: &'a str, test: &'a str, out: &'a str) -> Vec<&'a str> {
    let model = fixture("bert-tiny-cls")
        .to_str()
        .unwrap()
        .to_string()
        .leak();
    vec![
        "train",
        "--model",
        model,
        "--train",
        train,
        "--test",
        test,
        "--output",
        out,
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--lr",
        "1e-2",
        "--max-length",
        "32",
    ]
}

/// The control: the label depends only on metadata. Fusion through a numeric column and
/// through a categorical column each reach 95% test accuracy; text-only stays at chance.
#[test]
fn metadata_carries_the_signal_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = synthetic(tmp.path());
    let (train, test) = (train.to_str().unwrap(), test.to_str().unwrap());
    let run = |name: &str, extra: &[&str]| -> f64 {
        let out = tmp.path().join(name);
        let mut args = train_args(train, test, out.to_str().unwrap());
        args.extend(extra);
        sequin_ok(&args);
        read_json(&out.join("run.json"))["summary"]["test"]["accuracy"]
            .as_f64()
            .unwrap()
    };
    let numeric = run(
        "numeric",
        &[
            "--numeric-columns",
            "score",
            "--date-columns",
            "stamp",
            "--fusion",
            "concat",
        ],
    );
    let categorical = run(
        "categorical",
        &["--categorical-columns", "group", "--fusion", "attention"],
    );
    let text_only = run(
        "text-only",
        &["--numeric-columns", "score", "--fusion", "text-only"],
    );
    assert!(numeric >= 0.95, "numeric fusion accuracy {numeric}");
    assert!(
        categorical >= 0.95,
        "categorical fusion accuracy {categorical}"
    );
    assert!(
        (0.35..=0.65).contains(&text_only),
        "text-only accuracy {text_only} is not chance"
    );
    // The text-only run is a plain HF folder.
    assert!(!tmp.path().join("text-only/fusion.json").exists());
}

/// Every method on every backbone (single-label), and on multi-label and regression data;
/// each saved model reloads and reproduces its in-process logits.
#[test]
fn every_fusion_method_on_every_backbone_and_problem_type() {
    let tmp = tempfile::tempdir().unwrap();
    let drug = |split: &str| dataset("drug-reviews", split);
    let device = Device::flex();
    let mut runs: Vec<(&str, &str, Option<&str>)> = [
        "concat",
        "mlp-concat",
        "gating",
        "attention",
        "weighted-sum",
    ]
    .into_iter()
    .map(|m| ("bert-tiny-cls", m, None))
    .collect();
    for backbone in [
        "roberta-tiny-cls",
        "distilbert-tiny-cls",
        "longformer-tiny-cls",
        "modernbert-tiny-cls",
    ] {
        runs.push((backbone, "gating", None));
    }
    runs.push(("bert-tiny-cls", "concat", Some("regression")));
    for (i, (backbone, method, problem)) in runs.into_iter().enumerate() {
        let mut cfg = TrainConfig::new(
            fixture(backbone).to_str().unwrap(),
            drug("train"),
            tmp.path().join(format!("run-{i}")),
        );
        cfg.epochs = 1;
        cfg.max_length = 32;
        cfg.max_train_samples = Some(96);
        cfg.validation = Some(drug("validation"));
        cfg.features.numeric = vec!["useful_count".into()];
        cfg.features.categorical = vec!["drug_name".into(), "condition".into()];
        cfg.features.date = vec!["date".into()];
        cfg.features.numeric_transform = sequin_data::NumericTransform::QuantileNormal;
        cfg.fusion = Some(method.parse().unwrap());
        if problem == Some("regression") {
            // The review's useful count predicted from its text and the other metadata.
            cfg.problem_type = Some(sequin_heads::ProblemType::Regression);
            cfg.label_column = "useful_count".into();
            cfg.features.numeric.clear();
        }
        let (_, trained) = train_model(&cfg, &device)
            .unwrap_or_else(|e| panic!("{backbone} {method} {problem:?}: {e}"));
        let recs = trained
            .read(
                &drug("test"),
                &Columns {
                    label: None,
                    ..Columns::default()
                },
            )
            .unwrap();
        let recs = &recs[..40];
        let opts = EncodeOptions {
            max_length: 32,
            pad_to_multiple_of: None,
        };
        let a = trained.logits(recs, opts, 16).unwrap();
        let reloaded = Classifier::load(&cfg.output, &device).unwrap();
        assert!(reloaded.model.fusion.is_some());
        let b = reloaded.logits(recs, opts, 16).unwrap();
        assert_eq!(a, b, "{backbone} {method}: reloaded logits differ");
        // Metadata moves the logits: the same texts with another date give other logits.
        let moved: Vec<_> = recs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let last = r.features.len() - 1;
                r.features[last] = Some("2008-02-29".into());
                r
            })
            .collect();
        let c = reloaded.logits(&moved, opts, 16).unwrap();
        assert_ne!(
            a, c,
            "{backbone} {method}: metadata does not reach the logits"
        );
    }
    // Multi-label through the same path: the movie-genres list column, with a numeric
    // column (the IMDB rating) fused in.
    let mut cfg = TrainConfig::new(
        fixture("bert-tiny-cls").to_str().unwrap(),
        dataset("movie-genres", "validation"),
        tmp.path().join("multi"),
    );
    cfg.label_column = "labels".into();
    cfg.epochs = 1;
    cfg.max_length = 24;
    cfg.max_train_samples = Some(64);
    cfg.features.numeric = vec!["rating".into()];
    cfg.fusion = Some("mlp-concat".parse().unwrap());
    let (summary, _) = train_model(&cfg, &device).unwrap();
    assert!(summary.labels.len() > 2);
    let saved = read_json(&tmp.path().join("multi/config.json"));
    assert_eq!(saved["problem_type"], "multi_label_classification");
    // The HF config says that the folder's predictions need the fusion head.
    assert_eq!(saved["sequin_fusion"]["method"], "mlp-concat");
}

/// Save, then reload in a fresh process: `sequin predict` in a child process gives the logits
/// of the in-process model bit for bit.
#[test]
fn fusion_model_reloads_in_a_fresh_process_with_identical_logits() {
    const CHILD: &str = "SEQUIN_FUSION_CHILD";
    if run_as_child(CHILD) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let mut cfg = TrainConfig::new(
        fixture("bert-tiny-cls").to_str().unwrap(),
        dataset("drug-reviews", "train"),
        tmp.path().join("run"),
    );
    cfg.epochs = 1;
    cfg.max_length = 48;
    cfg.features.numeric = vec!["useful_count".into()];
    cfg.features.categorical = vec!["drug_name".into(), "condition".into()];
    cfg.features.date = vec!["date".into()];
    cfg.features.numeric_transform = sequin_data::NumericTransform::Log1pStandard;
    cfg.fusion = Some("weighted-sum".parse().unwrap());
    let (_, trained) = train_model(&cfg, &device).unwrap();
    let test = dataset("drug-reviews", "test");
    let recs = trained
        .read(
            &test,
            &Columns {
                label: None,
                ..Columns::default()
            },
        )
        .unwrap();
    let opts = EncodeOptions {
        max_length: 48,
        pad_to_multiple_of: None,
    };
    let mine = trained.logits(&recs, opts, 32).unwrap();
    let out = tmp.path().join("pred.jsonl");
    let args = vec![
        "predict".to_string(),
        "--model".into(),
        cfg.output.to_string_lossy().into_owned(),
        "--input".into(),
        test.to_string_lossy().into_owned(),
        "--output".into(),
        out.to_string_lossy().into_owned(),
    ];
    let status = spawn_self(
        "fusion::fusion_model_reloads_in_a_fresh_process_with_identical_logits",
        CHILD,
        &args,
    )
    .wait()
    .unwrap();
    assert!(status.success());
    let theirs = jsonl_logits(&out);
    assert_eq!(theirs.len(), 379);
    assert_eq!(
        mine, theirs,
        "logits differ after reload in a fresh process"
    );
}

/// Bad metadata at eval/predict time (the training-time cases are in the `bad_input` corpus):
/// a missing column, a null or NaN where training had none; each names the file, row and
/// column, and an unseen category is fine.
#[test]
fn bad_metadata_is_reported_with_row_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| -> String {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_string_lossy().into_owned()
    };
    let model = fixture("bert-tiny-cls").to_string_lossy().into_owned();
    let out = tmp.path().join("run").to_string_lossy().into_owned();
    let good = write(
        "good.csv",
        "text,n,c,d,label\nfine food,1,x,2020-01-01,a\nbad food,2,y,2020-01-02,b\nok food,3,x,2020-01-03,a\nmeh food,4,y,2020-01-04,b\n",
    );
    let meta = [
        "--numeric-columns",
        "n",
        "--categorical-columns",
        "c",
        "--date-columns",
        "d",
    ];
    // A trained model, then bad input at predict time.
    let mut args = vec![
        "train",
        "--model",
        &model,
        "--train",
        &good,
        "--output",
        &out,
        "--epochs",
        "1",
        "--max-length",
        "16",
    ];
    args.extend(meta);
    sequin_ok(&args);
    let pred = tmp.path().join("p.jsonl").to_string_lossy().into_owned();
    let predict = |file: &str| {
        sequin_err(&[
            "predict", "--model", &out, "--input", file, "--output", &pred,
        ])
    };
    let missing = write("missing.csv", "text,n,d\nfine,1,2020-01-01\n");
    let e = predict(&missing);
    assert!(
        e.contains("missing.csv") && e.contains("no column `c`"),
        "{e}"
    );
    let null = write(
        "null.csv",
        "text,n,c,d\nfine,1,x,2020-01-01\nbad,,x,2020-01-01\n",
    );
    let e = predict(&null);
    assert!(
        e.contains("row 2") && e.contains("`n`") && e.contains("no missing values in training"),
        "{e}"
    );
    // NaN (pandas' missing float) where training had no missing value.
    let nan = write(
        "nan.csv",
        "text,n,c,d\nfine,1,x,2020-01-01\nok,2,x,2020-01-01\nbad,NaN,x,2020-01-01\n",
    );
    let e = predict(&nan);
    assert!(
        e.contains("row 3") && e.contains("`n`") && e.contains("NaN"),
        "{e}"
    );
    assert!(!Path::new(&pred).exists(), "a failed predict left output");
    // An unseen category is fine (the rare/unknown bucket).
    let unseen = write("unseen.csv", "text,n,c,d\nfine,1,zzz,2020-01-01\n");
    sequin_ok(&[
        "predict", "--model", &out, "--input", &unseen, "--output", &pred,
    ]);
    assert!(
        std::fs::read_to_string(&pred)
            .unwrap()
            .contains("\"label\"")
    );
}

/// A fusion run killed after its first checkpoint resumes to the same weights (text and head)
/// as an uninterrupted run.
#[test]
fn killed_fusion_run_resumes_bit_identically() {
    const CHILD: &str = "SEQUIN_FUSION_KILL_CHILD";
    if run_as_child(CHILD) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    killed_run_resumes(
        tmp.path(),
        ("fusion::killed_fusion_run_resumes_bit_identically", CHILD),
        &[],
        &["model.safetensors", "fusion.safetensors"],
    );
}

/// LoRA with a fusion head: the adapter and the fusion head resume bit-identically after
/// SIGKILL, the folder reloads with the head, and `sequin merge` writes a plain folder
/// (fusion files beside it) with the same predictions.
#[test]
fn killed_lora_fusion_run_resumes_bit_identically_and_merges() {
    const CHILD: &str = "SEQUIN_LORA_FUSION_KILL_CHILD";
    if run_as_child(CHILD) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let whole = killed_run_resumes(
        tmp.path(),
        (
            "fusion::killed_lora_fusion_run_resumes_bit_identically_and_merges",
            CHILD,
        ),
        &["--lora-rank", "4", "--lora-alpha", "8"],
        &["adapter_model.safetensors", "fusion.safetensors"],
    );
    assert!(whole.join("adapter_config.json").exists());
    assert!(!whole.join("model.safetensors").exists());
    let merged = tmp.path().join("merged");
    sequin_ok(&[
        "merge",
        "--model",
        whole.to_str().unwrap(),
        "--output",
        merged.to_str().unwrap(),
    ]);
    same_tensors(
        &whole.join("fusion.safetensors"),
        &merged.join("fusion.safetensors"),
    );
    let test = dataset("drug-reviews", "test");
    let predict = |model: &Path, out: &Path| -> Vec<Vec<f32>> {
        sequin_ok(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            test.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        jsonl_logits(out)
    };
    let a = predict(&whole, &tmp.path().join("a.jsonl"));
    let b = predict(&merged, &tmp.path().join("b.jsonl"));
    assert_eq!(a.len(), 379);
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() < 1e-4, "merged logits differ: {u} vs {v}");
        }
    }
}

/// Trains the drug-reviews fusion run whole, and again killed after its 20th step and
/// resumed; `files` of both folders must hold the same bytes tensor by tensor. Returns the
/// whole run's folder.
fn killed_run_resumes(
    tmp: &Path,
    (test, child_var): (&str, &str),
    extra: &[&str],
    files: &[&str],
) -> PathBuf {
    let args = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--model",
            fixture("bert-tiny-cls").to_str().unwrap(),
            "--train",
            dataset("drug-reviews", "train").to_str().unwrap(),
            "--validation",
            dataset("drug-reviews", "validation").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--max-length",
            "32",
            "--max-train-samples",
            "240",
            "--eval-steps",
            "10",
            "--numeric-columns",
            "useful_count",
            "--categorical-columns",
            "drug_name,condition",
            "--date-columns",
            "date",
            "--fusion",
            "attention",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let whole = tmp.join("whole");
    let mut all = vec!["sequin".to_string()];
    all.extend(args(&whole));
    sequin_cli::run_args(all).unwrap();
    let cut = tmp.join("cut");
    let mut child = spawn_self(test, child_var, &args(&cut));
    let t0 = std::time::Instant::now();
    while sequin_train::list_checkpoints(&cut)
        .last()
        .map_or(0, |c| c.0)
        < 20
    {
        assert!(t0.elapsed().as_secs() < 300, "no checkpoint appeared");
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !cut.join("run.json").exists(),
        "the child finished before it was killed"
    );
    sequin_ok(&["train", "--resume", cut.to_str().unwrap()]);
    for file in files {
        same_tensors(&whole.join(file), &cut.join(file));
    }
    whole
}

/// Two safetensors files hold the same tensors, name by name and byte by byte.
fn same_tensors(a: &Path, b: &Path) {
    let (a_bytes, b_bytes) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (sa, sb) = (
        safetensors::SafeTensors::deserialize(&a_bytes).unwrap(),
        safetensors::SafeTensors::deserialize(&b_bytes).unwrap(),
    );
    let (mut na, mut nb) = (sa.names(), sb.names());
    na.sort();
    nb.sort();
    assert!(!na.is_empty(), "{} holds no tensor", a.display());
    assert_eq!(
        na,
        nb,
        "{} and {} name different tensors",
        a.display(),
        b.display()
    );
    for n in na {
        let (x, y) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
        assert!(
            x.shape() == y.shape() && x.data() == y.data(),
            "{n} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}
