//! Problem types and imbalance: multi-label, regression, class weights, focal loss, balanced sampling, stratified hold-out.

use burn::tensor::Device;
use sequin_train::Classifier;

use crate::common::*;

/// Multi-label (movie genres from titles, a list column) and regression (the IMDB rating):
/// the HF `problem_type` is written, BCE / MSE train, thresholds are tuned on validation and
/// used by eval and predict.
#[test]
fn multi_label_and_regression_train_and_predict() {
    let guard = TestDir::new("problem");
    let tmp = guard.root();
    // 400 validation rows as JSONL (labels as a JSON array), to keep the test short.
    let cols = sequin_data::Columns {
        label: Some("labels".into()),
        ..Default::default()
    };
    let all_val = sequin_data::read_records(&dataset("movie-genres", "validation"), &cols).unwrap();
    let ratings = sequin_data::read_records(
        &dataset("movie-genres", "validation"),
        &sequin_data::Columns {
            label: Some("rating".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let val_file = tmp.join("validation.jsonl");
    let lines: Vec<String> = all_val
        .iter()
        .zip(&ratings)
        .take(400)
        .map(|(r, g)| {
            serde_json::json!({"text": r.text, "labels": r.labels, "rating": g.label.as_deref().unwrap().parse::<f64>().unwrap()})
                .to_string()
        })
        .collect();
    std::fs::write(&val_file, lines.join("\n")).unwrap();
    let base = sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("movie-genres", "train"))
        .arg("--validation", &val_file)
        .arg("--max-train-samples", "1500")
        .arg("--max-length", "24")
        .arg("--epochs", "2")
        .arg("--lr", "3e-3");
    // Multi-label: `labels` is a list<string> column.
    let out = tmp.join("genres");
    base.clone()
        .arg("--output", &out)
        .arg("--label-column", "labels")
        .args(&["--tune-thresholds"])
        .ok();
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 7);
    let policy = read_json(&out.join("sequin.json"));
    let thresholds = policy["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 7);
    assert!(
        thresholds
            .iter()
            .all(|t| (0.0..1.0).contains(&t.as_f64().unwrap()))
    );
    let c = Classifier::load(&out, &Device::flex()).unwrap();
    let val = c.read(&val_file, &cols).unwrap();
    assert_eq!(val.len(), 400);
    let report = c
        .evaluate(&val, &val_file, c.encode_options(None), 64)
        .unwrap();
    assert_eq!(report.per_class.len(), 7);
    let micro = report.summary.micro_f1.unwrap();
    // Drama alone is in 47% of rows: a model that learned anything beats predicting nothing.
    assert!(micro > 0.2, "micro-F1 {micro}");
    let preds = c.predict(&val[..20], c.encode_options(None), 8).unwrap();
    for p in &preds {
        let set = p
            .labels
            .as_ref()
            .expect("multi-label predictions carry a label set");
        // Scores are sigmoid probabilities; the set is every label over its threshold.
        let probs: Vec<f32> = p.logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect();
        let want: Vec<&String> = c
            .labels
            .names()
            .iter()
            .zip(&probs)
            .zip(thresholds)
            .filter(|((_, p), t)| **p >= t.as_f64().unwrap() as f32)
            .map(|((n, _), _)| n)
            .collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), want);
    }

    // Regression: the rating (a float column).
    let out = tmp.join("rating");
    base.clone()
        .arg("--output", &out)
        .arg("--label-column", "rating")
        .arg("--problem-type", "regression")
        .ok();
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["problem_type"], "regression");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 1);
    let run = read_json(&out.join("run.json"));
    let v = &run["summary"]["best_validation"];
    assert!(v["mse"].as_f64().unwrap() > 0.0 && v["r2"].is_number() && v["mae"].is_number());
    // The rating's variance is about 2.3: the model must do better than predicting 0.
    assert!(v["mse"].as_f64().unwrap() < 10.0, "{v}");
    let c = Classifier::load(&out, &Device::flex()).unwrap();
    let p = c.predict(&val[..3], c.encode_options(None), 8).unwrap();
    assert!(
        p.iter()
            .all(|p| p.logits.len() == 1 && p.score == p.logits[0])
    );
}

/// Imbalance handling: class weights, focal loss and the balanced sampler, with a stratified
/// hold-out as validation data. The majority class is 65% of amazon-food: a balanced sampler
/// makes the model predict the minority class more often than plain sampling does.
#[test]
fn imbalance_options_train_and_hold_out_stratified() {
    let guard = TestDir::new("imbalance");
    let tmp = guard.root();
    let val = sequin_data::read_records(&dataset("amazon-food", "validation"), &Default::default())
        .unwrap();
    let run = |name: &str, extra: &[&str]| -> (serde_json::Value, usize) {
        let out = tmp.join(name);
        sequin("train")
            .arg("--model", tiny_bert())
            .arg("--train", dataset("amazon-food", "train"))
            .arg("--output", &out)
            .arg("--max-train-samples", "600")
            .arg("--validation-split", "0.2")
            .arg("--epochs", "3")
            .arg("--lr", "3e-3")
            .arg("--max-length", "48")
            .args(extra)
            .ok();
        let c = Classifier::load(&out, &Device::flex()).unwrap();
        let preds = c.predict(&val, c.encode_options(None), 64).unwrap();
        let minority = preds.iter().filter(|p| p.label == "other").count();
        (read_json(&out.join("run.json")), minority)
    };
    // Best checkpoints by macro-F1: accuracy would favour the majority class.
    let (plain_run, plain) = run("plain", &["--metric-for-best-model", "macro_f1"]);
    // 20% of 600 held out, per class.
    assert_eq!(plain_run["summary"]["best_validation"]["n"], 120);
    let (balanced_run, balanced) = run(
        "balanced",
        &[
            "--sampler",
            "balanced",
            "--metric-for-best-model",
            "macro_f1",
        ],
    );
    assert_eq!(balanced_run["config"]["sampler"], "balanced");
    assert!(
        balanced > plain,
        "balanced sampling predicts `other` for {balanced} reviews, plain sampling for {plain}"
    );
    // A heavier weight on the minority class shifts predictions towards it.
    let (weighted_run, weighted) = run(
        "weighted",
        &[
            "--class-weights",
            "1,3",
            "--metric-for-best-model",
            "macro_f1",
        ],
    );
    assert_eq!(
        weighted_run["config"]["class_weights"],
        serde_json::json!([1.0, 3.0])
    );
    assert!(
        weighted > plain,
        "class weights 1:3 predict `other` for {weighted} reviews, plain loss for {plain}"
    );
    // Focal loss with automatic weights trains and is recorded.
    let (focal_run, _) = run(
        "focal",
        &[
            "--class-weights",
            "auto",
            "--loss",
            "focal",
            "--focal-gamma",
            "2",
        ],
    );
    assert_eq!(focal_run["config"]["class_weights"], "auto");
    assert_eq!(focal_run["config"]["loss"], "focal");
    let loss = focal_run["summary"]["epochs"][0]["train_loss"]
        .as_f64()
        .unwrap();
    assert!(
        loss.is_finite() && loss > 0.0 && loss < 0.7,
        "focal training loss {loss}"
    );
    // Bad combinations are refused with the option named.
    let err = sequin_err(&[
        "train",
        "--model",
        tiny_bert().to_str().unwrap(),
        "--train",
        dataset("amazon-food", "train").to_str().unwrap(),
        "--output",
        tmp.join("bad").to_str().unwrap(),
        "--max-length",
        "48",
        "--class-weights",
        "1,2,3",
    ]);
    assert!(
        err.contains("--class-weights has 3 values for 2 labels"),
        "{err}"
    );
}
