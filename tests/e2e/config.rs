//! `--config`: every example the README gives runs, in each shape a config file may take.

use crate::common::*;

/// The JSON blocks of the README's "Config files" section.
fn readme_config_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("### Config files")
        .expect("README has a Config files section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |e| e + 4)];
    section
        .split("```json\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string())
        .collect()
}

/// `sequin train --config FILE`, shrunk to a smoke run on the tiny model (flags override the
/// file, as the README says).
fn train_with(config: &str, out: &str) {
    sequin("train")
        .arg("--config", config)
        .arg("--model", tiny_bert())
        .arg("--output", out)
        .args(&[
            "--max-steps",
            "2",
            "--max-train-samples",
            "64",
            "--max-length",
            "32",
        ])
        .ok();
}

#[test]
fn every_readme_config_example_trains() {
    let examples = readme_config_examples();
    assert_eq!(examples.len(), 3, "{examples:?}");
    let d = TestDir::new("config-examples");
    for (i, json) in examples.iter().enumerate() {
        let file = d.file(&format!("config-{i}.json"), json.as_bytes());
        let out = d.path(&format!("run-{i}"));
        train_with(&file, &out);
        // Every key of the file reached the run, unless a flag overrode it.
        let given: serde_json::Value = serde_json::from_str(json).unwrap();
        let run = read_json(&d.join(format!("run-{i}/run.json")));
        let cfg = &run["config"];
        for (key, value) in given.as_object().unwrap() {
            match key.as_str() {
                "model" | "output" | "max_length" => {}
                "train" | "validation" => assert_eq!(cfg[key].as_str(), value.as_str()),
                "augment" => assert_eq!(cfg["augment"]["mode"], *value),
                "num_aug" => assert_eq!(cfg["augment"]["num_aug"], *value),
                "numeric_columns" => assert_eq!(cfg["features"]["numeric"], *value),
                "categorical_columns" => assert_eq!(cfg["features"]["categorical"], *value),
                "date_columns" => assert_eq!(cfg["features"]["date"], *value),
                "long_text" => assert_eq!(cfg["long_text"]["policy"], *value, "{cfg}"),
                "max_chunks" => assert_eq!(cfg["long_text"]["max_chunks"], *value, "{cfg}"),
                _ => assert_eq!(cfg[key], *value, "{key} in {cfg}"),
            }
        }
    }
    // A saved run.json repeats the run, with flags on top.
    let again = d.path("again");
    sequin("train")
        .arg("--config", d.join("run-0/run.json"))
        .arg("--output", &again)
        .args(&["--lr", "5e-5"])
        .ok();
    let first = read_json(&d.join("run-0/run.json"))["config"].clone();
    let second = read_json(&d.join("again/run.json"))["config"].clone();
    assert_eq!(second["lr"], 5e-5);
    for key in ["augment", "seed", "epochs", "max_steps", "train", "model"] {
        assert_eq!(first[key], second[key], "{key}");
    }
}

#[test]
fn a_config_file_with_an_unknown_or_malformed_key_is_refused_by_name() {
    let d = TestDir::new("config-bad");
    let unknown = d.file("unknown.json", br#"{"epochs": 1, "num_epochs": 3}"#);
    let err = sequin("train")
        .arg("--config", &unknown)
        .arg("--model", tiny_bert())
        .err();
    assert!(
        err.contains("unknown.json") && err.contains("unknown field `num_epochs`"),
        "{err}"
    );
    let nested = d.file("nested.json", br#"{"augment": {"mode": "sideways"}}"#);
    let err = sequin("train").arg("--config", &nested).err();
    assert!(
        err.contains("nested.json") && err.contains("augment"),
        "{err}"
    );
}
