//! Augmentation: `sequin augment` on every dataset, and training with offline and per-epoch augmentation.

use crate::common::*;

/// `sequin augment` on every bundled dataset: each row plus N variants with provenance, the
/// labels carried over (lists stay lists), the same bytes for the same seed, and the output
/// readable as training data.
#[test]
fn augment_every_dataset() {
    let guard = TestDir::new("augment");
    let tmp = guard.root();
    for (name, label) in [
        ("amazon-food", "label"),
        ("bbc-news", "label"),
        ("sotu", "label"),
        ("movie-genres", "labels"),
        ("drug-reviews", "label"),
    ] {
        let input = dataset(name, "validation");
        let cols = sequin_data::Columns {
            label: Some(label.into()),
            ..Default::default()
        };
        // Metadata columns travel with the variants.
        let cols = sequin_data::Columns {
            features: sequin_data::column_names(&input)
                .unwrap()
                .into_iter()
                .filter(|c| c != "text" && c != label)
                .collect(),
            ..cols
        };
        let n = sequin_data::read_records(&input, &cols).unwrap().len();
        for (ext, seed) in [("parquet", "1"), ("jsonl", "1"), ("jsonl", "2")] {
            let out = tmp.join(format!("{name}-{seed}.{ext}"));
            sequin("augment")
                .arg("--input", &input)
                .arg("--output", &out)
                .arg("--label-column", label)
                .arg("--num-aug", "2")
                .arg("--seed", seed)
                .ok();
            let rows = sequin_data::read_records(&out, &cols).unwrap();
            assert_eq!(rows.len(), 3 * n, "{name} {ext}");
            let originals = sequin_data::read_records(&input, &cols).unwrap();
            for (i, o) in originals.iter().enumerate() {
                assert_eq!(
                    rows[3 * i].text,
                    o.text,
                    "{name}: the original row comes first"
                );
                for v in &rows[3 * i..3 * i + 3] {
                    assert_eq!((&v.label, &v.labels), (&o.label, &o.labels));
                    if ext == "parquet" || o.features.iter().all(Option::is_some) {
                        assert_eq!(v.features, o.features, "{name}: metadata not carried over");
                    }
                }
            }
        }
        let a = std::fs::read(tmp.join(format!("{name}-1.jsonl"))).unwrap();
        let b = std::fs::read(tmp.join(format!("{name}-2.jsonl"))).unwrap();
        assert_ne!(a, b, "{name}: another seed gives other variants");
        let prov = String::from_utf8(a).unwrap();
        assert!(
            prov.contains("\"augmentation\":\"original\"") && prov.contains("\"source_row\":1")
        );
        assert!(
            [
                "synonym-replacement",
                "random-insertion",
                "random-swap",
                "random-deletion"
            ]
            .iter()
            .any(|op| prov.contains(op)),
            "{name}: no operation fired"
        );
    }
    // Same seed, same bytes.
    let run = |out: &str| {
        let out = tmp.join(out);
        sequin("augment")
            .arg("--input", dataset("amazon-food", "validation"))
            .arg("--output", &out)
            .arg("--spec", "noise")
            .ok();
        std::fs::read(out).unwrap()
    };
    assert_eq!(run("x.csv"), run("y.csv"));
}

/// Training with augmentation: `offline` multiplies the training set (validation untouched),
/// `per-epoch` varies the texts every epoch, deterministically for a seed.
#[test]
fn train_with_augmentation() {
    let guard = TestDir::new("train-aug");
    let tmp = guard.root();
    let run = |name: &str, extra: &[&str]| -> (serde_json::Value, Vec<u8>) {
        let out = tmp.join(name);
        sequin("train")
            .arg("--model", tiny_bert())
            .arg("--train", dataset("amazon-food", "train"))
            .arg("--validation-split", "0.2")
            .arg("--output", &out)
            .arg("--max-train-samples", "100")
            .arg("--epochs", "2")
            .arg("--max-length", "32")
            .args(extra)
            .ok();
        (
            read_json(&out.join("run.json")),
            std::fs::read(out.join("model.safetensors")).unwrap(),
        )
    };
    let (offline, _) = run("offline", &["--augment", "offline", "--num-aug", "2"]);
    // 100 examples, 20 held out, 80 × (1 + 2) trained on; validation stays 20.
    assert_eq!(offline["summary"]["n_train"], 240);
    assert_eq!(offline["summary"]["best_validation"]["n"], 20);
    assert_eq!(offline["config"]["augment"]["mode"], "offline");
    let (a, wa) = run(
        "per-epoch-a",
        &["--augment", "per-epoch", "--augment-spec", "noise"],
    );
    let (_, wb) = run(
        "per-epoch-b",
        &["--augment", "per-epoch", "--augment-spec", "noise"],
    );
    let (_, plain) = run("plain", &[]);
    assert_eq!(a["summary"]["n_train"], 80);
    // Compared tensor by tensor (the header's key order may vary).
    let differ = |x: &[u8], y: &[u8]| -> usize {
        let (sx, sy) = (
            safetensors::SafeTensors::deserialize(x).unwrap(),
            safetensors::SafeTensors::deserialize(y).unwrap(),
        );
        sx.names()
            .into_iter()
            .filter(|n| sx.tensor(n).unwrap().data() != sy.tensor(n).unwrap().data())
            .count()
    };
    assert_eq!(
        differ(&wa, &wb),
        0,
        "per-epoch augmentation is not deterministic for a seed"
    );
    assert!(
        differ(&wa, &plain) > 0,
        "per-epoch augmentation changed nothing"
    );
    // Oversampling: variants of the minority class until both classes are equally large (so
    // the training set is even and larger than the 80 originals).
    let (over, _) = run("oversample", &["--oversample"]);
    let n = over["summary"]["n_train"].as_u64().unwrap();
    assert!(n > 80 && n % 2 == 0, "oversampled training set of {n}");
    assert_eq!(over["config"]["augment"]["oversample"], true);
    // Mixup on pooled vectors: deterministic for a seed, and not plain training.
    let (m, ma) = run("mixup-a", &["--mixup-alpha", "0.4"]);
    let (_, mb) = run("mixup-b", &["--mixup-alpha", "0.4"]);
    assert_eq!(m["config"]["mixup_alpha"], 0.4);
    assert_eq!(differ(&ma, &mb), 0, "mixup is not deterministic for a seed");
    assert!(differ(&ma, &plain) > 0, "mixup changed nothing");
    assert!(
        m["summary"]["best_validation"]["loss"]
            .as_f64()
            .unwrap()
            .is_finite()
    );
}
