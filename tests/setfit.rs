//! SetFit end to end: pairs → body → head → folder → a fresh process with identical logits;
//! the folder is a sentence-transformers folder whose embeddings sentence-transformers
//! reproduces (a committed fixture); bad few-shot data is refused naming the class.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use sequin_data::{Columns, Record};
use sequin_tokenize::EncodeOptions;
use sequin_train::Classifier;
use sequin_train::setfit::{SetFitConfig, train};

use crate::common::*;

/// A copy of the tiny BERT fixture made a sentence-transformer: mean pooling, then
/// normalisation (as all-MiniLM-L6-v2's modules.json says).
fn sentence_body(dir: &Path) -> PathBuf {
    let body = dir.join("body");
    std::fs::create_dir_all(body.join("1_Pooling")).unwrap();
    std::fs::create_dir_all(body.join("2_Normalize")).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture("bert-tiny-cls").join(f), body.join(f)).unwrap();
    }
    std::fs::write(
        body.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::write(
        body.join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true,
            "pooling_mode_cls_token": false, "pooling_mode_max_tokens": false}"#,
    )
    .unwrap();
    body
}

/// `n` amazon-food training reviews per label, as CSV.
fn few_shot(dir: &Path, per_label: &[(&str, usize)]) -> PathBuf {
    let recs =
        sequin_data::read_records(&dataset("amazon-food", "train"), &Columns::default()).unwrap();
    let path = dir.join("few.csv");
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(["text", "label"]).unwrap();
    for &(label, n) in per_label {
        for r in recs
            .iter()
            .filter(|r| r.label.as_deref() == Some(label))
            .take(n)
        {
            w.write_record([r.text.as_str(), label]).unwrap();
        }
    }
    w.flush().unwrap();
    path
}

fn config(body: &Path, train: PathBuf, out: PathBuf) -> SetFitConfig {
    SetFitConfig {
        num_iterations: 6,
        batch_size: 8,
        max_length: 32,
        lr: 1e-3,
        shards: 2,
        ..SetFitConfig::new(body.to_str().unwrap(), train, out)
    }
}

#[test]
fn setfit_trains_end_to_end_and_a_fresh_process_gives_identical_logits() {
    const CHILD: &str = "SEQUIN_SETFIT_CHILD";
    if run_as_child(CHILD) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let body = sentence_body(tmp.path());
    let train_file = few_shot(tmp.path(), &[("great", 8), ("other", 8)]);
    let out = tmp.path().join("setfit");
    let mut cfg = config(&body, train_file, out.clone());
    cfg.test = Some(dataset("amazon-food", "validation"));
    let (summary, trained) = train(&cfg, &Device::flex()).unwrap();
    // 16 examples, 6 iterations: 96 pairs of each kind, alternating, 24 steps of 8.
    assert_eq!(
        (summary.examples, summary.pairs, summary.body_steps),
        (16, 192, 24)
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    let losses = flat_f32(&run["body_loss_per_step"]);
    let half = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, second) = (half(&losses[..12]), half(&losses[12..]));
    assert!(
        second < 0.9 * first,
        "the pair loss falls: {first} then {second}"
    );
    assert_eq!(summary.test.as_ref().unwrap().summary.n, 398);
    // The folder: a sentence-transformers body, the head in safetensors with its labels.
    for f in [
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "setfit.json",
        "model_head.safetensors",
        "model.safetensors",
        "sequin.json",
        "plots/body_loss.png",
        "run.json",
    ] {
        assert!(out.join(f).exists(), "{f} is missing");
    }
    let bytes = std::fs::read(out.join("model_head.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["labels"], r#"["great","other"]"#);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("weight").unwrap().shape(), [2, 32]);
    let modules = std::fs::read_to_string(out.join("modules.json")).unwrap();
    assert!(
        modules.contains("Normalize"),
        "the body's normalisation is kept"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert!(
        config["sequin_setfit"]["note"]
            .as_str()
            .unwrap()
            .contains("model_head")
    );

    let test = dataset("amazon-food", "test");
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
        max_length: 32,
        pad_to_multiple_of: None,
    };
    let mine = trained.logits(&recs, opts, 32).unwrap();
    // The head is the logistic regression on normalised embeddings: its logits are the
    // embeddings' through the saved weights.
    let e = trained.embeddings(&recs[..4], opts, 32).unwrap();
    for v in &e {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "normalised embedding, norm {norm}"
        );
    }
    let pred = tmp.path().join("pred.jsonl");
    let args: Vec<String> = [
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--input",
        test.to_str().unwrap(),
        "--output",
        pred.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let status = spawn_self(
        "setfit::setfit_trains_end_to_end_and_a_fresh_process_gives_identical_logits",
        CHILD,
        &args,
    )
    .wait()
    .unwrap();
    assert!(status.success());
    let theirs = jsonl_logits(&pred);
    assert_eq!(theirs.len(), 1000);
    assert_eq!(
        mine, theirs,
        "logits differ after reload in a fresh process"
    );
    // eval reads the folder with no extra flag.
    sequin_ok(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
    ]);
}

/// The committed folder `sequin-setfit-tiny/` (written by `sequin setfit`): the embeddings
/// and logits sentence-transformers gives for it (`tests/fixtures/make_setfit_fixtures.py`),
/// within 1e-4.
#[test]
fn sentence_transformers_gives_the_embeddings_and_logits_of_a_saved_setfit_folder() {
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("setfit.json")).unwrap()).unwrap();
    let c = Classifier::load(&fixture("sequin-setfit-tiny"), &Device::flex()).unwrap();
    let recs: Vec<Record> = fx["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Record::text(t.as_str().unwrap()))
        .collect();
    let opts = EncodeOptions {
        max_length: fx["max_length"].as_u64().unwrap() as usize,
        pad_to_multiple_of: None,
    };
    let e = c.embeddings(&recs, opts, 8).unwrap();
    let l = c.logits(&recs, opts, 8).unwrap();
    for (i, (ours, theirs)) in e
        .iter()
        .zip(fx["embeddings"].as_array().unwrap())
        .enumerate()
    {
        assert!(
            max_abs_diff(ours, &flat_f32(theirs)) < 1e-4,
            "embedding {i}"
        );
    }
    for (i, (ours, theirs)) in l.iter().zip(fx["logits"].as_array().unwrap()).enumerate() {
        assert!(max_abs_diff(ours, &flat_f32(theirs)) < 1e-4, "logits {i}");
    }
}

#[test]
fn few_shot_data_that_cannot_make_pairs_is_refused_naming_the_class() {
    let tmp = tempfile::tempdir().unwrap();
    let body = sentence_body(tmp.path());
    let device = Device::flex();
    let one_class = few_shot(tmp.path(), &[("great", 4)]);
    let err = refusal(&config(&body, one_class, tmp.path().join("a")), &device);
    assert!(err.contains("few.csv") && err.contains("great"), "{err}");
    let lonely = few_shot(tmp.path(), &[("great", 4), ("other", 1)]);
    let err = refusal(&config(&body, lonely, tmp.path().join("b")), &device);
    assert!(
        err.contains("class `other` has 1 example") && err.contains("at least 2 per class"),
        "{err}"
    );
    assert!(!tmp.path().join("b").exists(), "nothing written");
}

fn refusal(cfg: &SetFitConfig, device: &Device) -> String {
    match train(cfg, device) {
        Ok(_) => panic!("{} was accepted", cfg.train.display()),
        Err(e) => e.to_string(),
    }
}

/// The first `n` rows of a dataset split (text, pair, label or label set) written as JSONL.
fn head_rows(name: &str, cols: &Columns, n: usize, dir: &Path) -> PathBuf {
    let recs = sequin_data::read_records(&dataset(name, "train"), cols).unwrap();
    let path = dir.join(format!("{name}-{n}.jsonl"));
    let lines: Vec<String> = recs[..n]
        .iter()
        .map(|r| {
            serde_json::json!({
                "text": r.text,
                "text_pair": r.text_pair,
                "label": r.label,
                "labels": r.labels,
            })
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Text pairs and multi-label data train too: pairs are embedded as one sequence, and a
/// multi-label model gets one binary regression per label (sigmoid scores); both reload with
/// the logits they were trained with.
#[test]
fn setfit_trains_on_pairs_and_multi_label_data_and_reloads() {
    let tmp = tempfile::tempdir().unwrap();
    let body = sentence_body(tmp.path());
    let device = Device::flex();
    let cases = [
        ("bbc-headline-pairs", "label", Some("text_pair"), 24),
        ("movie-genres", "labels", None, 40),
    ];
    for (name, label, pair, n) in cases {
        let read = Columns {
            label: Some(label.into()),
            text_pair: pair.map(String::from),
            ..Columns::default()
        };
        let data = head_rows(name, &read, n, tmp.path());
        let mut cfg = config(&body, data.clone(), tmp.path().join(name));
        cfg.num_iterations = 2;
        cfg.label_column = label.into();
        cfg.text_pair_column = pair.map(String::from);
        let (summary, trained) = train(&cfg, &device).unwrap();
        assert_eq!(summary.examples, n, "{name}");
        let cols = Columns {
            label: None,
            text_pair: cfg.text_pair_column.clone(),
            ..Columns::default()
        };
        let recs = trained.read(&data, &cols).unwrap();
        let opts = EncodeOptions {
            max_length: 32,
            pad_to_multiple_of: None,
        };
        let reloaded = Classifier::load(&cfg.output, &device).unwrap();
        assert_eq!(reloaded.problem_type(), trained.problem_type(), "{name}");
        assert_eq!(
            trained.logits(&recs, opts, 16).unwrap(),
            reloaded.logits(&recs, opts, 16).unwrap(),
            "{name}"
        );
        if name == "movie-genres" {
            assert_eq!(
                trained.problem_type(),
                sequin_heads::ProblemType::MultiLabelClassification
            );
            assert!(trained.labels.len() >= 3, "{:?}", trained.labels.names());
        }
    }
}
