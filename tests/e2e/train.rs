//! Training end to end: train, save, reload and predict; reproducibility; two runs in one process; early stopping.

use burn::tensor::Device;
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, TrainConfig, train_model};

use crate::common::*;

#[test]
fn train_save_reload_predict_on_amazon_food_slice() {
    let guard = TestDir::new("e2e");
    let out = guard.root();
    let mut cfg = TrainConfig::new(
        tiny_bert().to_string_lossy(),
        dataset("amazon-food", "train"),
        &out,
    );
    cfg.validation = Some(dataset("amazon-food", "validation"));
    // A 2-layer, hidden-32 random BERT learns this slice in a few seconds.
    cfg.max_train_samples = Some(1024);
    cfg.epochs = 5;
    cfg.batch_size = 32;
    cfg.lr = 3e-3;
    cfg.max_length = 64;
    let device = Device::flex();
    let (summary, in_memory) = train_model(&cfg, &device).unwrap();

    // The loss falls.
    let first = summary.epochs.first().unwrap().train_loss;
    let last = summary.epochs.last().unwrap().train_loss;
    assert!(
        last < first * 0.5,
        "training loss did not fall: {first} -> {last}"
    );
    // Better than always answering the majority class on held-out data (259 of 398 `great`).
    let best = summary.epochs[summary.best_epoch - 1].validation.unwrap();
    assert!(
        best.accuracy > 0.66,
        "validation accuracy {} is not above the majority rate",
        best.accuracy
    );
    assert!(
        best.macro_f1 > 0.5,
        "macro-F1 {} shows a collapsed classifier",
        best.macro_f1
    );

    // The folder is an HF classifier with our labels, and reloads to identical logits.
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["0"], "great");
    assert_eq!(config["label2id"]["other"], 1);
    assert_eq!(config["problem_type"], "single_label_classification");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "run.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The run record: one metrics line per evaluation, data fingerprints.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("validation").is_some())
        .collect();
    assert_eq!(evals.len(), summary.epochs.len());
    assert_eq!(evals[0]["epoch"].as_f64(), Some(1.0));
    assert!(evals[0]["validation"]["accuracy"].is_number());
    // The last checkpoint and the best one are kept, each resumable.
    let ckpts = sequin_train::list_checkpoints(&out);
    assert!(!ckpts.is_empty() && ckpts.len() <= 2, "{ckpts:?}");
    assert_eq!(ckpts.last().unwrap().0, summary.steps);
    for f in [
        "model.safetensors",
        "optimizer.bpk",
        "trainer_state.json",
        "config.json",
    ] {
        assert!(
            ckpts.last().unwrap().1.join(f).is_file(),
            "checkpoint lacks {f}"
        );
    }
    let record = read_json(&out.join("run.json"));
    assert_eq!(record["data_sha256"]["train"].as_str().unwrap().len(), 64);
    assert_eq!(record["summary"]["best_epoch"], summary.best_epoch);
    let reloaded = Classifier::load(&out, &device).unwrap();
    assert!(reloaded.report.newly_initialized.is_empty() && reloaded.report.discarded.is_empty());
    let val = sequin_data::read_records(&dataset("amazon-food", "validation"), &Default::default())
        .unwrap();
    let val = &val[..40];
    let opts = EncodeOptions {
        max_length: cfg.max_length,
        pad_to_multiple_of: None,
    };
    let a = in_memory.predict(val, opts, 16).unwrap();
    let b = reloaded.predict(val, opts, 16).unwrap();
    assert_eq!(a, b, "reloaded model predicts differently");

    // `sequin eval` on the saved folder reproduces the kept epoch's validation accuracy.
    let m = reloaded
        .evaluate(
            &sequin_data::read_records(&dataset("amazon-food", "validation"), &Default::default())
                .unwrap(),
            &dataset("amazon-food", "validation"),
            opts,
            64,
        )
        .unwrap();
    assert!(
        (m.summary.accuracy - best.accuracy).abs() < 1e-9,
        "{} vs {}",
        m.summary.accuracy,
        best.accuracy
    );
    assert_eq!(m.confusion.iter().flatten().sum::<u64>(), 398);
    assert!(m.auroc.unwrap() > 0.5, "AUROC {:?}", m.auroc);

    // And the CLI predicts to JSONL in input order.
    let pred = out.join("pred.jsonl");
    sequin("predict")
        .arg("--model", &out)
        .arg("--input", dataset("amazon-food", "validation"))
        .arg("--output", &pred)
        .arg("--max-length", "64")
        .ok();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&pred)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 398);
    for (l, p) in lines.iter().zip(&a) {
        assert_eq!(l["label"], p.label.as_str());
        assert_eq!(flat_f32(&l["logits"]), p.logits);
    }
}

/// Same seed, same data: bit-identical weights on CPU (tensor bytes; the safetensors header's
/// metadata order may vary).
#[test]
fn training_is_reproducible_on_cpu() {
    let run = |tag: &str| {
        let guard = TestDir::new(&format!("repro-{tag}"));
        let out = guard.root();
        let mut cfg = TrainConfig::new(
            tiny_bert().to_string_lossy(),
            dataset("amazon-food", "train"),
            &out,
        );
        cfg.max_train_samples = Some(48);
        cfg.epochs = 1;
        cfg.batch_size = 16;
        cfg.max_length = 32;
        train_model(&cfg, &Device::flex()).unwrap();

        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let (a, b) = (run("a"), run("b"));
    let sa = safetensors::SafeTensors::deserialize(&a).unwrap();
    let sb = safetensors::SafeTensors::deserialize(&b).unwrap();
    let mut names = sa.names();
    names.sort();
    assert_eq!(names.len(), 41);
    let differ: Vec<&str> = names
        .into_iter()
        .filter(|n| sa.tensor(n).unwrap().data() != sb.tensor(n).unwrap().data())
        .collect();
    assert!(
        differ.is_empty(),
        "two runs with the same seed differ in {differ:?}"
    );
}

/// Two runs in one process at the same time: each draws its dropout masks from its own
/// stream (no process-wide generator), so each gives the weights it gives alone.
#[test]
fn concurrent_runs_in_one_process_match_runs_alone() {
    let guard = TestDir::new("conc");
    let cfg = |tag: &str, seed: u64| {
        let mut cfg = TrainConfig::new(
            tiny_bert().to_string_lossy(),
            dataset("amazon-food", "train"),
            guard.join(tag),
        );
        cfg.max_train_samples = Some(48);
        cfg.epochs = 1;
        cfg.batch_size = 16;
        cfg.max_length = 32;
        cfg.seed = seed;
        cfg.shards = Some(2);
        cfg
    };
    let weights = |cfg: &TrainConfig| {
        let bytes = std::fs::read(cfg.output.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        names
            .into_iter()
            .map(|n| st.tensor(n).unwrap().data().to_vec())
            .collect::<Vec<Vec<u8>>>()
    };
    let (a, b) = (cfg("a", 1), cfg("b", 2));
    train_model(&a, &Device::flex()).unwrap();
    let alone = weights(&a);
    std::thread::scope(|s| {
        let ta = s.spawn(|| train_model(&a, &Device::flex()).map(|_| ()));
        let tb = s.spawn(|| train_model(&b, &Device::flex()).map(|_| ()));
        ta.join().unwrap().unwrap();
        tb.join().unwrap().unwrap();
    });
    assert!(
        weights(&a) == alone,
        "a run beside another gave other weights than alone"
    );
}

/// Early stopping: with a learning rate too small to change anything, validation accuracy
/// never improves after the first evaluation, and the run stops after `patience` more.
#[test]
fn early_stopping_ends_a_stalled_run() {
    let guard = TestDir::new("early");
    let tmp = guard.root();
    sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--validation-split", "0.25")
        .arg("--output", &tmp)
        .arg("--max-train-samples", "200")
        .arg("--batch-size", "16")
        .arg("--epochs", "3")
        .arg("--max-length", "32")
        .arg("--lr", "1e-12")
        .arg("--eval-steps", "2")
        .arg("--early-stopping-patience", "2")
        .arg("--lr-scheduler", "cosine")
        .arg("--layer-lr-decay", "0.8")
        .arg("--head-lr", "1e-12")
        .ok();
    let run = read_json(&tmp.join("run.json"));
    let s = &run["summary"];
    assert_eq!(s["stopped_early"], true);
    assert_eq!(s["best_step"], 2);
    // Evaluations at steps 2, 4 and 6; stopped at 6 of the 30 steps of 3 epochs.
    assert_eq!(s["steps"], 6);
    let evals = std::fs::read_to_string(tmp.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"validation\""))
        .count();
    assert_eq!(evals, 3);
    // The best checkpoint (step 2) and the last (step 6) are kept.
    let kept: Vec<usize> = sequin_train::list_checkpoints(&tmp)
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, vec![2, 6]);
}

#[test]
fn training_refuses_an_empty_text_naming_its_row_unless_allowed() {
    let d = TestDir::new("empty-train");
    let data = d.file(
        "train.csv",
        b"text,label\ngood food,great\n\"  \",other\nbad food,other\n",
    );
    let err = sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", &data)
        .arg("--output", d.path("refused"))
        .err();
    assert!(err.contains("row 2"), "{err}");
    assert!(err.contains("the text (column `text`) is empty"), "{err}");
    assert!(!d.join("refused").exists());
    sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", &data)
        .arg("--output", d.path("allowed"))
        .args(&["--allow-empty-text", "--epochs", "1", "--max-length", "32"])
        .ok();
    let run = read_json(&d.join("allowed/run.json"));
    assert_eq!(run["config"]["allow_empty_text"], true, "{run}");
}
