//! Score calibration: `train --calibrate temperature`, `sequin calibrate`, and the ECE, Brier
//! and NLL that `eval` reports before and after it.

use crate::common::*;

/// Writes the first `n` rows of an amazon-food split as JSONL; returns the path.
fn slice(dir: &TestDir, split: &str, n: usize) -> String {
    let recs =
        sequin_data::read_records(&dataset("amazon-food", split), &Default::default()).unwrap();
    let lines: Vec<String> = recs
        .iter()
        .take(n)
        .map(|r| serde_json::json!({"text": r.text, "label": r.label}).to_string())
        .collect();
    dir.file(&format!("{split}.jsonl"), lines.join("\n").as_bytes())
}

#[test]
fn temperature_scaling_is_fitted_saved_applied_and_leaves_predictions_unchanged() {
    let guard = TestDir::new("calibrate");
    let val = slice(&guard, "validation", 300);
    let test = slice(&guard, "test", 200);
    let out = guard.join("run");
    sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--validation", &val)
        .arg("--output", &out)
        .arg("--max-train-samples", "256")
        .arg("--epochs", "1")
        .arg("--max-length", "32")
        .arg("--lr", "3e-3")
        .arg("--calibrate", "temperature")
        .ok();
    let policy = read_json(&out.join("sequin.json"));
    let cal = &policy["calibration"];
    assert_eq!(cal["method"], "temperature");
    assert_eq!(cal["n"], 300);
    let t = cal["temperature"].as_f64().unwrap();
    assert!(t > 0.05 && t < 20.0 && (t - 1.0).abs() > 1e-3, "{t}");
    // The fitted temperature minimises the validation NLL: never worse than T = 1.
    assert!(cal["after"]["nll"].as_f64().unwrap() <= cal["before"]["nll"].as_f64().unwrap());
    assert!(out.join("plots/reliability.png").is_file());
    assert!(out.join("plots/reliability.svg").is_file());

    // eval reports ECE, Brier and NLL with and without the temperature...
    let device = burn::tensor::Device::flex();
    let mut c = sequin_train::Classifier::load(&out, &device).unwrap();
    let cols = c.columns(Default::default(), true);
    let recs = c.read(std::path::Path::new(&test), &cols).unwrap();
    let opts = c.encode_options(None);
    let report = c
        .evaluate(&recs, std::path::Path::new(&test), opts, 32)
        .unwrap();
    let r = report.calibration.as_ref().unwrap();
    assert!((f64::from(r.temperature) - t).abs() < 1e-6);
    let after = r.after.unwrap();
    for m in [r.before, after] {
        assert!(
            (0.0..=1.0).contains(&m.ece) && m.brier >= 0.0 && m.nll > 0.0,
            "{m:?}"
        );
    }
    // ...and the predictions are the same with and without it; only the scores move.
    let calibrated = c.predict(&recs, opts, 32).unwrap();
    c.calibrated = false;
    let raw = c.predict(&recs, opts, 32).unwrap();
    let plain = c
        .evaluate(&recs, std::path::Path::new(&test), opts, 32)
        .unwrap();
    assert_eq!(plain.calibration.as_ref().unwrap().temperature, 1.0);
    assert!(plain.calibration.as_ref().unwrap().after.is_none());
    assert_eq!(plain.summary.accuracy, report.summary.accuracy);
    let mut moved = 0;
    for (a, b) in calibrated.iter().zip(&raw) {
        assert_eq!(a.label, b.label);
        assert_eq!(a.logits, b.logits);
        let scaled: Vec<f32> = a.logits.iter().map(|x| x / t as f32).collect();
        let p = sequin_train::ScoreFunction::Softmax.apply(&scaled);
        assert!((p.iter().copied().fold(f32::MIN, f32::max) - a.score).abs() < 1e-6);
        moved += usize::from((a.score - b.score).abs() > 1e-6);
    }
    assert!(moved > 0, "the temperature changed no score");

    // `sequin calibrate` refits an existing folder on other data.
    sequin("calibrate")
        .arg("--model", &out)
        .arg("--data", &test)
        .ok();
    let refit = read_json(&out.join("sequin.json"));
    assert_eq!(refit["calibration"]["n"], 200);
    assert_eq!(refit["calibration"]["fitted_on"], test.as_str());
    assert_eq!(
        refit["schema"], policy["schema"],
        "the rest of sequin.json is kept"
    );
    // Only a local folder can be updated.
    let err = sequin("calibrate")
        .arg("--model", guard.join("nowhere"))
        .arg("--data", &test)
        .err();
    assert!(err.contains("model folder"), "{err}");
}

/// A multi-label model (or a run without validation data) is refused before any training.
#[test]
fn calibration_is_refused_up_front_where_it_cannot_apply() {
    let guard = TestDir::new("calibrate-refused");
    let err = sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("movie-genres", "train"))
        .arg("--label-column", "labels")
        .arg("--validation-split", "0.2")
        .arg("--output", guard.join("run"))
        .arg("--calibrate", "temperature")
        .err();
    assert!(
        err.contains("single-label") && err.contains("--tune-thresholds"),
        "{err}"
    );
    assert!(!guard.join("run/model.safetensors").exists());
}
