//! Partial fine-tuning: `--freeze-backbone` (a linear probe) and `--freeze-layers N`. Frozen
//! tensors come out byte for byte as they went in; the head always trains and is saved.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// Every tensor of a safetensors file: name → bytes.
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

fn train(guard: &TestDir, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let out = guard.join(name);
    sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--output", &out)
        .arg("--max-train-samples", "64")
        .arg("--epochs", "1")
        .arg("--max-length", "32")
        .arg("--lr", "1e-3")
        .args(extra)
        .ok();
    out
}

#[test]
fn frozen_parameters_come_out_unchanged_and_the_head_trains() {
    let guard = TestDir::new("freeze");
    let base = tensors(&tiny_bert().join("model.safetensors"));

    let probe = train(&guard, "probe", &["--freeze-backbone"]);
    let after = tensors(&probe.join("model.safetensors"));
    let mut frozen = 0;
    for (name, bytes) in &after {
        let backbone = name.starts_with("bert.") && !name.starts_with("bert.pooler.");
        if backbone {
            assert_eq!(
                Some(bytes),
                base.get(name),
                "{name} changed under --freeze-backbone"
            );
            frozen += 1;
        } else if let Some(before) = base.get(name).filter(|b| b.len() == bytes.len()) {
            assert_ne!(bytes, before, "{name} (head or pooler) did not train");
        }
    }
    assert!(frozen > 10);
    assert!(after.contains_key("classifier.weight"), "the head is saved");
    let run = read_json(&probe.join("run.json"));
    let (trainable, total) = (
        run["parameters"]["trainable"].as_u64().unwrap(),
        run["parameters"]["total"].as_u64().unwrap(),
    );
    assert!(
        trainable > 0 && trainable * 10 < total,
        "{trainable} of {total}"
    );

    // The embeddings and layer 0 frozen; layer 1 and the head train.
    let partial =
        tensors(&train(&guard, "partial", &["--freeze-layers", "1"]).join("model.safetensors"));
    for (name, bytes) in &partial {
        let lower =
            name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
        if lower {
            assert_eq!(
                Some(bytes),
                base.get(name),
                "{name} changed under --freeze-layers 1"
            );
        } else if name.starts_with("bert.encoder.layer.1.") && name.ends_with("weight") {
            assert_ne!(Some(bytes), base.get(name), "{name} did not train");
        }
    }

    let err = sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--output", guard.join("bad"))
        .arg("--max-length", "32")
        .arg("--freeze-layers", "9")
        .err();
    assert!(
        err.contains("freeze_layers = 9") && err.contains("2 encoder layers"),
        "{err}"
    );
}
