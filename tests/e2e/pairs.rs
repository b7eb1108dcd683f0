//! Sentence pairs end to end (MRPC's task, on bbc-headline-pairs), and the input schema a model
//! folder remembers: eval and predict need no column flags.

use burn::tensor::Device;
use sequin_train::{Classifier, ColumnChoice};

use crate::common::*;

/// Trains a tiny pairs model on a slice of bbc-headline-pairs into `out`.
fn train_pairs(out: &str) {
    sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("bbc-headline-pairs", "train"))
        .arg("--validation", dataset("bbc-headline-pairs", "validation"))
        .arg("--output", out)
        .arg("--text-pair-column", "text_pair")
        .args(&["--max-train-samples", "256", "--epochs", "1"])
        .args(&["--max-length", "64", "--lr", "1e-3", "--seed", "3"])
        .ok();
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_pairs_model_trains_evaluates_and_predicts_without_column_flags() {
    let d = TestDir::new("pairs");
    let model = d.path("model");
    train_pairs(&model);

    // The folder remembers what it was trained on.
    let policy = read_json(&d.join("model/sequin.json"));
    let schema = &policy["schema"];
    assert_eq!(schema["text_column"], "text");
    assert_eq!(schema["text_pair_column"], "text_pair");
    assert_eq!(schema["label_column"], "label");
    assert_eq!(schema["labels"], serde_json::json!(["0", "1"]));

    // Eval with no column flags reads the pair and the label.
    let test = dataset("bbc-headline-pairs", "test");
    sequin("eval")
        .arg("--model", &model)
        .arg("--data", &test)
        .ok();
    let c = Classifier::load(std::path::Path::new(&model), &Device::flex()).unwrap();
    let cols = c.columns(ColumnChoice::default(), true);
    assert_eq!(cols.text_pair.as_deref(), Some("text_pair"));
    assert_eq!(cols.label.as_deref(), Some("label"));
    let recs = c.read(&test, &cols).unwrap();
    assert!(recs.iter().all(|r| r.text_pair.is_some()));
    let opts = c.checked_options(None).unwrap();
    let m = c.evaluate(&recs, &test, opts, 64).unwrap();
    assert_eq!(m.summary.n, 412);

    // Predict with no column flags: one row per input row, from the pairs.
    let out = d.join("preds.jsonl");
    sequin("predict")
        .arg("--model", &model)
        .arg("--input", &test)
        .arg("--output", &out)
        .ok();
    let saved = jsonl(&out);
    assert_eq!(saved.len(), 412);
    // The same as naming the columns; a flag still overrides the schema.
    let named = d.join("named.jsonl");
    sequin("predict")
        .arg("--model", &model)
        .arg("--input", &test)
        .arg("--output", &named)
        .arg("--text-column", "text")
        .arg("--text-pair-column", "text_pair")
        .ok();
    assert_eq!(saved, jsonl(&named));
    let other = d.join("other.jsonl");
    sequin("predict")
        .arg("--model", &model)
        .arg("--input", &test)
        .arg("--output", &other)
        .arg("--text-pair-column", "text")
        .ok();
    assert_ne!(saved, jsonl(&other), "the pair column flag was ignored");
}

#[test]
fn a_pairs_model_refuses_a_file_without_its_pair_column() {
    let d = TestDir::new("pairs-missing");
    let model = d.path("model");
    train_pairs(&model);
    let singles = d.file("singles.csv", b"text,label\nA headline,1\nAnother one,0\n");
    let err = sequin("predict")
        .arg("--model", &model)
        .arg("--input", &singles)
        .arg("--output", d.join("p.jsonl"))
        .err();
    assert!(err.contains("no column `text_pair`"), "{err}");
    assert!(err.contains("columns are: text, label"), "{err}");
    assert!(!d.join("p.jsonl").exists());
    let err = sequin("eval")
        .arg("--model", &model)
        .arg("--data", &singles)
        .err();
    assert!(err.contains("no column `text_pair`"), "{err}");
}
