//! `sequin tune`: grid search.

use crate::common::*;

/// `sequin tune --grid`: one normal run folder per point, and a results table (Markdown and
/// JSON) sorted by the validation metric with the best marked.
#[test]
fn tune_grid_writes_sorted_results() {
    let guard = TestDir::new("tune");
    let tmp = guard.root();
    sequin("tune")
        .args(&["--grid"])
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--validation-split", "0.2")
        .arg("--output", &tmp)
        .arg("--max-train-samples", "200")
        .arg("--max-length", "32")
        .arg("--lr-values", "1e-4,3e-3")
        .arg("--batch-size-values", "16,32")
        .arg("--metric", "macro_f1")
        .ok();
    let results = read_json(&tmp.join("tune_results.json"));
    let trials = results["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    let scores: Vec<f64> = trials
        .iter()
        .map(|t| t["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "not sorted: {scores:?}"
    );
    assert_eq!(results["best"], trials[0]["output"]);
    for t in trials {
        let dir = std::path::PathBuf::from(t["output"].as_str().unwrap());
        assert!(dir.join("model.safetensors").is_file() && dir.join("run.json").is_file());
        // A trial keeps its model folder only: no checkpoints, no optimizer state.
        assert!(!dir.join("checkpoints").exists(), "{}", dir.display());
    }
    let md = std::fs::read_to_string(tmp.join("tune_results.md")).unwrap();
    assert_eq!(md.matches("| ★ |").count(), 1);
    let header = md.lines().find(|l| l.contains("| trial |")).unwrap();
    assert_eq!(
        header.matches("macro-F1").count() + header.matches("macro_f1").count(),
        2,
        "{header}"
    );
    assert_eq!(md.lines().filter(|l| l.contains("trial-0")).count(), 4);
}

#[test]
fn tune_refuses_resume_and_a_metric_the_problem_does_not_have() {
    let guard = TestDir::new("tune-bad");
    let base = || {
        sequin("tune")
            .args(&["--grid"])
            .arg("--model", tiny_bert())
            .arg("--train", dataset("amazon-food", "train"))
            .arg("--validation-split", "0.2")
            .arg("--output", guard.root())
            .arg("--max-train-samples", "64")
            .arg("--max-length", "32")
    };
    let err = base().arg("--resume", guard.root()).err();
    assert!(err.contains("tune does not resume"), "{err}");
    let err = base().arg("--metric", "r2").err();
    assert!(
        err.contains("r2") && err.contains("needs regression"),
        "{err}"
    );
}

/// LoRA settings are tunable: each trial is a PEFT adapter, and the table says its rank.
#[test]
fn tune_searches_lora_ranks_and_alphas() {
    let guard = TestDir::new("tune-lora");
    let tmp = guard.root();
    sequin("tune")
        .args(&["--grid"])
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--validation-split", "0.2")
        .arg("--output", &tmp)
        .arg("--max-train-samples", "96")
        .arg("--max-length", "32")
        .arg("--lr", "1e-2")
        .arg("--lora-rank-values", "2,4")
        .arg("--lora-alpha-values", "8")
        .ok();
    let results = read_json(&tmp.join("tune_results.json"));
    let trials = results["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    let mut ranks: Vec<u64> = trials
        .iter()
        .map(|t| t["lora_rank"].as_u64().unwrap())
        .collect();
    ranks.sort();
    assert_eq!(ranks, [2, 4]);
    for t in trials {
        let dir = std::path::PathBuf::from(t["output"].as_str().unwrap());
        let cfg = read_json(&dir.join("adapter_config.json"));
        assert_eq!(cfg["r"], t["lora_rank"]);
    }
    let md = std::fs::read_to_string(tmp.join("tune_results.md")).unwrap();
    assert!(
        md.contains("| LoRA r / alpha |") && md.contains(" 4 / 8 |"),
        "{md}"
    );
}
