//! PEFT LoRA adapters, as Python's `peft` saves them (fixtures from
//! `tests/fixtures/make_peft_fixtures.py`): loaded onto their base with PEFT's logits, merged
//! into a plain folder with the same logits and head, and refused, naming the field or tensor,
//! when they cannot be reproduced.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use sequin_data::Record;
use sequin_train::Classifier;

use crate::common::*;

const ADAPTERS: [&str; 2] = ["peft-bert-lora", "peft-distilbert-lora"];

/// The logits of a classifier on a fixture's inputs, one row each.
fn logits(c: &Classifier, fx: &serde_json::Value) -> Vec<Vec<f32>> {
    let recs: Vec<Record> = fx["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Record::text(t.as_str().unwrap()))
        .collect();
    let opts = c.encode_options(Some(fx["max_length"].as_u64().unwrap() as usize));
    c.logits(&recs, opts, 8).unwrap()
}

fn expected(name: &str) -> serde_json::Value {
    read_json(&fixture("peft.json"))[name].clone()
}

#[test]
fn peft_adapters_load_onto_their_base_with_peft_logits() {
    for name in ADAPTERS {
        let fx = expected(name);
        let c = Classifier::load(&fixture(name), &Device::flex()).unwrap();
        let want: Vec<Vec<f32>> = fx["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| flat_f32(r))
            .collect();
        let got = logits(&c, &fx);
        for (g, w) in got.iter().zip(&want) {
            assert!(max_abs_diff(g, w) < 1e-4, "{name}: {g:?} vs PEFT {w:?}");
        }
        // Not the base's logits: the adapter changed the model.
        let base = Classifier::load(&fixture(name).join(base_of(name)), &Device::flex()).unwrap();
        let b = logits(&base, &fx);
        assert!(max_abs_diff(&b[0], &got[0]) > 1e-3 || b[0].len() != got[0].len());
    }
}

fn base_of(name: &str) -> &'static str {
    match name {
        "peft-bert-lora" => "../bert-tiny-cls",
        _ => "../distilbert-tiny-cls",
    }
}

/// Every tensor of a safetensors file: name → (shape, bytes).
fn tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

#[test]
fn merge_writes_a_plain_folder_with_the_same_logits_and_the_saved_head() {
    let guard = TestDir::new("peft-merge");
    for name in ADAPTERS {
        let out = guard.join(name);
        sequin("merge")
            .arg("--model", fixture(name))
            .arg("--output", &out)
            .ok();
        assert!(!out.join("adapter_config.json").exists());
        let fx = expected(name);
        let merged = Classifier::load(&out, &Device::flex()).unwrap();
        let adapted = Classifier::load(&fixture(name), &Device::flex()).unwrap();
        for (m, a) in logits(&merged, &fx).iter().zip(logits(&adapted, &fx)) {
            assert!(max_abs_diff(m, &a) < 1e-6, "{name}");
        }
        // The head is the adapter's, byte for byte.
        let saved = tensors(&out.join("model.safetensors"));
        let adapter = tensors(&fixture(name).join("adapter_model.safetensors"));
        for key in ["classifier.weight", "classifier.bias"] {
            assert_eq!(
                saved[key],
                adapter[&format!("base_model.model.{key}")],
                "{name}: {key}"
            );
        }
    }
}

/// A copy of an adapter fixture with its config edited and its tensors filtered or renamed.
fn broken(
    guard: &TestDir,
    tag: &str,
    edit: impl Fn(&mut serde_json::Value),
    rename: impl Fn(&str) -> Option<String>,
) -> PathBuf {
    let dir = guard.join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = read_json(&fixture("peft-bert-lora/adapter_config.json"));
    cfg["base_model_name_or_path"] = fixture("bert-tiny-cls").to_string_lossy().into();
    edit(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    let t = tensors(&fixture("peft-bert-lora/adapter_model.safetensors"));
    let kept: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .into_iter()
        .filter_map(|(n, (s, b))| rename(&n).map(|n| (n, s, b)))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = kept
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).unwrap();
    dir
}

#[test]
fn adapters_that_cannot_be_reproduced_fail_closed_naming_what() {
    let guard = TestDir::new("peft-bad");
    let keep = |n: &str| Some(n.to_string());
    let err = |dir: &Path| match Classifier::load(dir, &Device::flex()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            broken(
                &guard,
                "task",
                |c| c["task_type"] = "CAUSAL_LM".into(),
                keep,
            ),
            "task_type",
        ),
        (
            broken(&guard, "dora", |c| c["use_dora"] = true.into(), keep),
            "use_dora",
        ),
        (
            broken(
                &guard,
                "nohead",
                |_| {},
                |n| (!n.contains("classifier")).then(|| n.to_string()),
            ),
            "classification head",
        ),
        (
            broken(
                &guard,
                "target",
                |_| {},
                |n| {
                    Some(n.replace(
                        "layer.1.attention.self.query",
                        "layer.7.attention.self.query",
                    ))
                },
            ),
            "base_model.model.bert.encoder.layer.7.attention.self.query.lora_A.weight",
        ),
        (
            broken(
                &guard,
                "pair",
                |_| {},
                |n| {
                    (!n.ends_with("layer.0.attention.self.value.lora_B.weight"))
                        .then(|| n.to_string())
                },
            ),
            "layer.0.attention.self.value.lora_A.weight",
        ),
    ];
    for (dir, says) in cases {
        let e = err(&dir);
        assert!(
            e.contains(says),
            "{}: `{e}` does not say `{says}`",
            dir.display()
        );
    }
    // --base names another base; one the adapter does not fit fails closed too.
    let e = sequin("predict")
        .arg("--model", fixture("peft-bert-lora"))
        .arg("--base", fixture("distilbert-tiny-cls"))
        .arg("--input", "x.jsonl")
        .arg("--output", guard.join("o.jsonl"))
        .err();
    assert!(e.contains("lora_A.weight"), "{e}");
    let e = sequin("eval")
        .arg("--model", fixture("bert-tiny-cls"))
        .arg("--base", fixture("bert-tiny-cls"))
        .arg("--data", "x.jsonl")
        .err();
    assert!(e.contains("--base is for a PEFT adapter folder"), "{e}");
}

#[test]
fn peft_loads_what_sequin_trains_with_the_same_logits() {
    // sequin-bert-lora/ was written by `sequin train --lora-rank 4`; peft.json holds the logits
    // Python's PEFT gives for it (tests/fixtures/make_peft_fixtures.py).
    let fx = expected("sequin-bert-lora");
    let c = Classifier::load(&fixture("sequin-bert-lora"), &Device::flex()).unwrap();
    assert_eq!(
        c.labels.names(),
        ["great", "other"],
        "labels from the adapter's config.json"
    );
    for (g, w) in logits(&c, &fx).iter().zip(fx["logits"].as_array().unwrap()) {
        assert!(max_abs_diff(g, &flat_f32(w)) < 1e-4, "{g:?} vs PEFT {w}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A LoRA run writes PEFT adapter folders (the run and every checkpoint); its head survives
/// train → checkpoint → resume → save → reload → merge byte for byte, and a resumed run ends
/// bit-identical to an uninterrupted one.
#[test]
fn a_lora_run_is_a_peft_adapter_whose_head_survives_every_path() {
    let guard = TestDir::new("lora-run");
    let run = guard.join("run");
    let train = |out: &Path| {
        sequin("train")
            .arg("--model", tiny_bert())
            .arg("--train", dataset("amazon-food", "train"))
            .arg("--validation", dataset("amazon-food", "validation"))
            .arg("--output", out)
            .args(&[
                "--max-train-samples",
                "96",
                "--epochs",
                "2",
                "--batch-size",
                "16",
            ])
            .args(&["--max-length", "32", "--lr", "1e-2", "--eval-steps", "3"])
            .args(&[
                "--save-total-limit",
                "20",
                "--lora-rank",
                "4",
                "--lora-alpha",
                "16",
            ])
            .ok();
    };
    train(&run);
    let cfg = read_json(&run.join("adapter_config.json"));
    assert_eq!(
        (cfg["peft_type"].as_str(), cfg["task_type"].as_str()),
        (Some("LORA"), Some("SEQ_CLS"))
    );
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["target_modules"], serde_json::json!(["query", "value"]));
    assert!(
        !run.join("model.safetensors").exists(),
        "an adapter, not a full model"
    );
    let record = read_json(&run.join("run.json"));
    let trainable = record["parameters"]["trainable"].as_u64().unwrap();
    assert!(trainable * 50 < record["parameters"]["total"].as_u64().unwrap());

    // The head: the best checkpoint's = the run's = the merged folder's, byte for byte.
    let head = |file: &Path| {
        let t = tensors(file);
        ["classifier.weight", "classifier.bias"].map(|k| {
            t.get(&format!("base_model.model.{k}"))
                .or_else(|| t.get(k))
                .unwrap_or_else(|| panic!("{k} in {}", file.display()))
                .clone()
        })
    };
    let best = record["summary"]["best_step"].as_u64().unwrap();
    let ckpt = run.join(format!("checkpoints/checkpoint-{best}"));
    assert_eq!(
        head(&run.join("adapter_model.safetensors")),
        head(&ckpt.join("adapter_model.safetensors"))
    );
    let merged = guard.join("merged");
    sequin("merge")
        .arg("--model", &run)
        .arg("--output", &merged)
        .ok();
    assert_eq!(
        head(&run.join("adapter_model.safetensors")),
        head(&merged.join("model.safetensors"))
    );
    let fx = expected("peft-bert-lora");
    let a = Classifier::load(&run, &Device::flex()).unwrap();
    let m = Classifier::load(&merged, &Device::flex()).unwrap();
    for (x, y) in logits(&a, &fx).iter().zip(logits(&m, &fx)) {
        assert!(max_abs_diff(x, &y) < 1e-5);
    }

    // Resume: the run cut back to its first checkpoint, resumed, ends where the whole run did.
    let cut = guard.join("cut");
    copy_dir(&run, &cut);
    let steps = sequin_train::list_checkpoints(&cut);
    assert!(steps.len() >= 3, "{steps:?}");
    for (_, dir) in &steps[1..] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    sequin("train").arg("--resume", &cut).ok();
    for file in [
        "adapter_model.safetensors",
        &format!("checkpoints/checkpoint-{best}/adapter_model.safetensors"),
    ] {
        assert_eq!(
            std::fs::read(cut.join(file)).unwrap(),
            std::fs::read(run.join(file)).unwrap(),
            "{file} differs after resume"
        );
    }
}

/// LoRA from a bare encoder checkpoint (keys without `bert.`, as all-MiniLM-L6-v2 ships): the
/// adapter's head and pooler merge onto the bare keys.
#[test]
fn a_lora_run_from_a_bare_encoder_reloads_and_merges() {
    let guard = TestDir::new("lora-bare");
    let out = guard.join("run");
    sequin("train")
        .arg("--model", fixture("bert-tiny-base"))
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--output", &out)
        .args(&[
            "--max-train-samples",
            "64",
            "--epochs",
            "1",
            "--max-length",
            "32",
        ])
        .args(&["--lr", "1e-2", "--lora-rank", "2"])
        .ok();
    let fx = expected("peft-bert-lora");
    let a = Classifier::load(&out, &Device::flex()).unwrap();
    let merged = guard.join("merged");
    sequin("merge")
        .arg("--model", &out)
        .arg("--output", &merged)
        .ok();
    let m = Classifier::load(&merged, &Device::flex()).unwrap();
    for (x, y) in logits(&a, &fx).iter().zip(logits(&m, &fx)) {
        assert!(max_abs_diff(x, &y) < 1e-5);
    }
}
