//! End to end: train a small model on a real data slice, save, reload, predict, evaluate.

use burn::tensor::Device;
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, TrainConfig, train_model};

use crate::common::*;

#[test]
fn train_save_reload_predict_on_amazon_food_slice() {
    let out = std::env::temp_dir().join(format!("sequin-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut cfg = TrainConfig::new(
        fixture("bert-tiny-cls").to_string_lossy(),
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
    sequin_ok(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--input",
        dataset("amazon-food", "validation").to_str().unwrap(),
        "--output",
        pred.to_str().unwrap(),
        "--max-length",
        "64",
    ]);
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
    let _ = std::fs::remove_dir_all(&out);
}

/// Same seed, same data: bit-identical weights on CPU (tensor bytes; the safetensors header's
/// metadata order may vary).
#[test]
fn training_is_reproducible_on_cpu() {
    let run = |tag: &str| {
        let out = std::env::temp_dir().join(format!("sequin-repro-{tag}-{}", std::process::id()));
        let mut cfg = TrainConfig::new(
            fixture("bert-tiny-cls").to_string_lossy(),
            dataset("amazon-food", "train"),
            &out,
        );
        cfg.max_train_samples = Some(48);
        cfg.epochs = 1;
        cfg.batch_size = 16;
        cfg.max_length = 32;
        train_model(&cfg, &Device::flex()).unwrap();
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        bytes
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
    let cfg = |tag: &str, seed: u64| {
        let out = std::env::temp_dir().join(format!("sequin-conc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut cfg = TrainConfig::new(
            fixture("bert-tiny-cls").to_string_lossy(),
            dataset("amazon-food", "train"),
            &out,
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
        let all: Vec<Vec<u8>> = names
            .into_iter()
            .map(|n| st.tensor(n).unwrap().data().to_vec())
            .collect();
        let _ = std::fs::remove_dir_all(&cfg.output);
        all
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
    let _ = weights(&b);
}

/// Chunked long documents: the policy is saved with the model, and predict's logits are the
/// mean of the windows' own logits.
#[test]
fn chunked_documents_are_saved_and_aggregated() {
    use burn::tensor::{Int, Tensor, TensorData};
    use sequin_tokenize::LongText;

    let out = std::env::temp_dir().join(format!("sequin-chunk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    sequin_ok(&[
        "train",
        "--model",
        fixture("bert-tiny-cls").to_str().unwrap(),
        "--train",
        dataset("amazon-food", "train").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-train-samples",
        "64",
        "--epochs",
        "1",
        "--max-length",
        "32",
        "--long-text",
        "chunk",
        "--chunk-stride",
        "8",
        "--max-chunks",
        "4",
    ]);
    let policy = read_json(&out.join("sequin.json"));
    assert_eq!(policy["long_text"]["policy"], "chunk");
    assert_eq!(policy["long_text"]["stride"], 8);
    assert_eq!(policy["aggregate"], "mean");

    let device = Device::flex();
    let c = Classifier::load(&out, &device).unwrap();
    assert_eq!(
        c.policy.long_text,
        LongText::Chunk {
            stride: 8,
            max_chunks: 4,
            select: sequin_tokenize::ChunkSelect::First,
        }
    );
    let val = sequin_data::read_records(&dataset("amazon-food", "validation"), &Default::default())
        .unwrap();
    let val = &val[..6];
    let opts = c.encode_options(None);
    let preds = c.predict(val, opts, 4).unwrap();
    for (r, p) in val.iter().zip(&preds) {
        let rows = c
            .tokenizer
            .encode_long(&r.text, None, opts, c.policy.long_text)
            .unwrap();
        assert!((1..=4).contains(&rows.len()));
        let mut mean = vec![0f32; 2];
        for row in &rows {
            let n = row.input_ids.len();
            let ids: Vec<i64> = row.input_ids.iter().map(|&x| x as i64).collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
            let l: Vec<f32> = c
                .model
                .text
                .forward(ids, None, None)
                .into_data()
                .try_into_vec_as()
                .unwrap();
            for (m, x) in mean.iter_mut().zip(l) {
                *m += x / rows.len() as f32;
            }
        }
        assert!(
            max_abs_diff(&mean, &p.logits) < 1e-5,
            "{mean:?} vs {:?}",
            p.logits
        );
    }
    // A long review really is split.
    let long = val
        .iter()
        .map(|r| {
            c.tokenizer
                .encode_long(&r.text, None, opts, c.policy.long_text)
                .unwrap()
                .len()
        })
        .max()
        .unwrap();
    assert!(long > 1);
    let _ = std::fs::remove_dir_all(&out);
}

/// `predict --top-k all --function none|sigmoid`, as transformers' text-classification pipeline.
#[test]
fn predict_top_k_and_score_functions() {
    let dir = std::env::temp_dir().join(format!("sequin-topk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"great tea\"}\n{\"text\": \"awful\"}\n").unwrap();
    let model = fixture("bert-tiny-cls");
    let run = |extra: &[&str]| -> Vec<serde_json::Value> {
        let out = dir.join("out.jsonl");
        let mut args = vec![
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        sequin_ok(&args);
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let plain = run(&[]);
    assert!(plain[0].get("top_k").is_none());
    let raw = run(&["--top-k", "all", "--function", "none"]);
    for (r, p) in raw.iter().zip(&plain) {
        let logits = flat_f32(&r["logits"]);
        let top = r["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let scores: Vec<f32> = top
            .iter()
            .map(|t| t["score"].as_f64().unwrap() as f32)
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "not sorted: {scores:?}"
        );
        assert_eq!(scores[0], logits.iter().copied().fold(f32::MIN, f32::max));
        assert_eq!(r["label"], p["label"]);
    }
    let sig = run(&["--top-k", "2", "--function", "sigmoid"]);
    let l = flat_f32(&sig[0]["logits"]);
    let best = l.iter().copied().fold(f32::MIN, f32::max);
    assert!((sig[0]["score"].as_f64().unwrap() as f32 - 1.0 / (1.0 + (-best).exp())).abs() < 1e-6);
    assert_eq!(sig[0]["top_k"].as_array().unwrap().len(), 2);
    assert!(
        sequin_err(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            "x",
            "--output",
            "y",
            "--top-k",
            "0"
        ])
        .contains("positive number")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Longformer and ModernBERT folders that transformers wrote: `eval` and `predict` work on
/// them as they are, and a fine-tuned copy (new head, chunked long texts) saves, reloads and
/// predicts the same.
#[test]
fn long_document_families_train_eval_and_predict() {
    for (family, arch) in [
        ("longformer", "LongformerForSequenceClassification"),
        ("modernbert", "ModernBertForSequenceClassification"),
    ] {
        let src = fixture(&format!("{family}-tiny-cls"));
        let tmp = std::env::temp_dir().join(format!("sequin-{family}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();

        // eval on the transformers folder, with its own LABEL_n names.
        let data = tmp.join("labelled.jsonl");
        let texts = [
            "short text",
            "a longer text that runs past the attention window of these tiny models by far",
        ];
        let lines: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                serde_json::json!({"text": t, "label": format!("LABEL_{}", i % 2)}).to_string()
            })
            .collect();
        std::fs::write(&data, lines.join("\n")).unwrap();
        let c = Classifier::load(&src, &Device::flex()).unwrap();
        let recs = c.read(&data, &Default::default()).unwrap();
        let report = c
            .evaluate(&recs, &data, c.encode_options(Some(48)), 2)
            .unwrap();
        assert_eq!(report.summary.n, 2);

        // Fine-tune with chunked inputs; the folder names the right architecture.
        let out = tmp.join("run");
        sequin_ok(&[
            "train",
            "--model",
            src.to_str().unwrap(),
            "--train",
            dataset("amazon-food", "train").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-train-samples",
            "48",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--max-length",
            "40",
            "--long-text",
            "chunk",
            "--chunk-stride",
            "8",
            "--max-chunks",
            "3",
        ]);
        let config = read_json(&out.join("config.json"));
        assert_eq!(config["architectures"][0], arch);
        assert_eq!(config["model_type"], family);
        assert_eq!(config["id2label"]["0"], "great");

        // predict on the saved folder, with the saved policy and overriding it.
        let val = dataset("amazon-food", "validation");
        let p1 = tmp.join("p1.jsonl");
        let p2 = tmp.join("p2.jsonl");
        let args = |o: &std::path::Path| {
            vec![
                "predict".to_string(),
                "--model".into(),
                out.to_string_lossy().into_owned(),
                "--input".into(),
                val.to_string_lossy().into_owned(),
                "--output".into(),
                o.to_string_lossy().into_owned(),
            ]
        };
        let a1 = args(&p1);
        sequin_ok(&a1.iter().map(String::as_str).collect::<Vec<_>>());
        let mut a2 = args(&p2);
        a2.extend(["--long-text".into(), "truncate".into()]);
        sequin_ok(&a2.iter().map(String::as_str).collect::<Vec<_>>());
        let read = |p: &std::path::Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (r1, r2) = (read(&p1), read(&p2));
        assert_eq!(r1.len(), 398);
        assert_eq!(r1.len(), r2.len());
        // Long reviews are classified from more than their first window.
        assert!(r1.iter().zip(&r2).any(|(a, b)| a["logits"] != b["logits"]));

        // The reloaded folder gives the logits the in-memory reload gives, row by row.
        let c = Classifier::load(&out, &Device::flex()).unwrap();
        let recs = sequin_data::read_records(&val, &Default::default()).unwrap();
        let preds = c.predict(&recs[..5], c.encode_options(None), 5).unwrap();
        for (p, r) in preds.iter().zip(&r1) {
            let want: Vec<f32> = r["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert!(max_abs_diff(&p.logits, &want) < 1e-5);
        }
        let _ = std::fs::remove_dir_all(&tmp);
    }
}

/// Exact resume: training is killed with SIGKILL at several points (whatever it was doing:
/// a step, an evaluation, a checkpoint write), resumed from its last checkpoint each time, and
/// the final weights are bit-identical to an uninterrupted run's. A resume refuses changed
/// options or data.
///
/// The killed runs are this test binary re-run as a child (`SEQUIN_KILL_CHILD` holds the
/// `sequin` arguments), so the test needs no separately built executable.
#[test]
fn killed_and_resumed_training_is_bit_identical() {
    const CHILD: &str = "SEQUIN_KILL_CHILD";
    if run_as_child(CHILD) {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("sequin-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let train = tmp.join("train.parquet");
    std::fs::copy(dataset("amazon-food", "train"), &train).unwrap();
    let out = tmp.join("run");
    let args = |output: &std::path::Path| -> Vec<String> {
        [
            "train",
            "--model",
            fixture("bert-tiny-cls").to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--validation",
            fixture("../../datasets/amazon-food/validation.parquet")
                .to_str()
                .unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--max-train-samples",
            "240",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--max-length",
            "64",
            "--lr",
            "2e-3",
            "--eval-steps",
            "4",
            "--gradient-accumulation-steps",
            "2",
            "--save-total-limit",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // 240 examples / 16 = 15 batches, 8 optimizer steps per epoch (the last of one batch),
    // 24 steps in all, a checkpoint every 4.
    let spawn = |a: Vec<String>| {
        spawn_self(
            "e2e::killed_and_resumed_training_is_bit_identical",
            CHILD,
            &a,
        )
    };
    let last_step = |dir: &std::path::Path| sequin_train::list_checkpoints(dir).last().map(|c| c.0);
    let resume_args = || {
        vec![
            "train".to_string(),
            "--resume".into(),
            out.to_string_lossy().into_owned(),
        ]
    };
    let mut kills = Vec::new();
    let mut child = spawn(args(&out));
    for kill_after in [4, 12, 16] {
        let t0 = std::time::Instant::now();
        loop {
            if last_step(&out).is_some_and(|s| s >= kill_after) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child ended ({status}) before checkpoint {kill_after}");
            }
            assert!(
                t0.elapsed().as_secs() < 300,
                "no checkpoint {kill_after} after 300 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let at = last_step(&out).unwrap();
        kills.push(at);
        // Every checkpoint left behind is whole: its state parses and its weights load.
        for (step, dir) in sequin_train::list_checkpoints(&out) {
            let st: sequin_train::TrainerState = serde_json::from_str(
                &std::fs::read_to_string(dir.join("trainer_state.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(st.step, step);
            Classifier::load(&dir, &Device::flex()).unwrap();
        }
        if kill_after == 4 {
            // A resume with other options, or on changed data, is refused.
            let err = sequin_err(&["train", "--resume", out.to_str().unwrap(), "--lr", "1e-3"]);
            assert!(err.contains("lr") && err.contains("differ"), "{err}");
            std::fs::copy(dataset("amazon-food", "test"), &train).unwrap();
            let err = sequin_err(&["train", "--resume", out.to_str().unwrap()]);
            assert!(err.contains("data files changed"), "{err}");
            std::fs::copy(dataset("amazon-food", "train"), &train).unwrap();
        }
        child = spawn(resume_args());
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the last resumed run failed: {status}");
    assert_eq!(last_step(&out), Some(24));

    // The same run, never interrupted, in this process.
    let reference = tmp.join("reference");
    let a = args(&reference);
    let mut all = vec!["sequin"];
    all.extend(a.iter().map(String::as_str));
    sequin_cli::run_args(all).unwrap();

    for file in [
        "model.safetensors",
        "checkpoints/checkpoint-24/model.safetensors",
    ] {
        let x = std::fs::read(out.join(file)).unwrap();
        let y = std::fs::read(reference.join(file)).unwrap();
        let (sx, sy) = (
            safetensors::SafeTensors::deserialize(&x).unwrap(),
            safetensors::SafeTensors::deserialize(&y).unwrap(),
        );
        let mut names = sx.names();
        names.sort();
        assert_eq!(names.len(), 41);
        let differ: Vec<&str> = names
            .into_iter()
            .filter(|n| sx.tensor(n).unwrap().data() != sy.tensor(n).unwrap().data())
            .collect();
        assert!(
            differ.is_empty(),
            "{file}: killed at checkpoints {kills:?} and resumed, the weights differ from an uninterrupted run in {differ:?}"
        );
    }
    // The same evaluations were logged.
    let evals = |d: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("elapsed_s");
                v.as_object_mut().unwrap().remove("train_samples_per_s");
                v
            })
            .collect()
    };
    assert_eq!(evals(&out), evals(&reference));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `predict --long-text chunk` on one 30,000-word document: every window is read (with
/// `--chunk-select spread` under a cap, or all of them), in bounded row batches, and the
/// document gets one prediction.
#[test]
fn predict_chunks_a_30000_word_document() {
    let tmp = std::env::temp_dir().join(format!("sequin-30k-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let articles =
        sequin_data::read_records(&dataset("bbc-news", "train"), &Default::default()).unwrap();
    let mut words: Vec<&str> = Vec::new();
    for a in &articles {
        words.extend(a.text.split_whitespace());
        if words.len() >= 30_000 {
            break;
        }
    }
    words.truncate(30_000);
    let input = tmp.join("long.jsonl");
    std::fs::write(
        &input,
        serde_json::json!({"text": words.join(" ")}).to_string() + "\n",
    )
    .unwrap();
    let model = fixture("bert-tiny-cls");
    let c = Classifier::load(&model, &Device::flex()).unwrap();
    let opts = c.encode_options(Some(64));
    let windows = c
        .tokenizer
        .encode_long(
            &words.join(" "),
            None,
            opts,
            sequin_tokenize::LongText::Chunk {
                stride: 16,
                max_chunks: usize::MAX,
                select: sequin_tokenize::ChunkSelect::First,
            },
        )
        .unwrap();
    assert!(windows.len() > 800, "{} windows", windows.len());
    for (cap, out) in [("100000", "all.jsonl"), ("16", "spread.jsonl")] {
        let out = tmp.join(out);
        sequin_ok(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-length",
            "64",
            "--batch-size",
            "32",
            "--long-text",
            "chunk",
            "--chunk-stride",
            "16",
            "--max-chunks",
            cap,
            "--chunk-select",
            "spread",
        ]);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let p: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(p["logits"].as_array().unwrap().len(), 3);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Multi-label (movie genres from titles, a list column) and regression (the IMDB rating):
/// the HF `problem_type` is written, BCE / MSE train, thresholds are tuned on validation and
/// used by eval and predict.
#[test]
fn multi_label_and_regression_train_and_predict() {
    let tmp = std::env::temp_dir().join(format!("sequin-problem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
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
    let base = [
        "--model",
        fixture("bert-tiny-cls")
            .to_str()
            .unwrap()
            .to_string()
            .leak() as &str,
        "--train",
        dataset("movie-genres", "train")
            .to_str()
            .unwrap()
            .to_string()
            .leak(),
        "--validation",
        val_file.to_str().unwrap().to_string().leak(),
        "--max-train-samples",
        "1500",
        "--max-length",
        "24",
        "--epochs",
        "2",
        "--lr",
        "3e-3",
    ];
    // Multi-label: `labels` is a list<string> column.
    let out = tmp.join("genres");
    let mut args = vec![
        "train",
        "--output",
        out.to_str().unwrap(),
        "--label-column",
        "labels",
        "--tune-thresholds",
    ];
    args.extend(base);
    sequin_ok(&args);
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
    let mut args = vec![
        "train",
        "--output",
        out.to_str().unwrap(),
        "--label-column",
        "rating",
        "--problem-type",
        "regression",
    ];
    args.extend(base);
    sequin_ok(&args);
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
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Imbalance handling: class weights, focal loss and the balanced sampler, with a stratified
/// hold-out as validation data. The majority class is 65% of amazon-food: a balanced sampler
/// makes the model predict the minority class more often than plain sampling does.
#[test]
fn imbalance_options_train_and_hold_out_stratified() {
    let tmp = std::env::temp_dir().join(format!("sequin-imbalance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let val = sequin_data::read_records(&dataset("amazon-food", "validation"), &Default::default())
        .unwrap();
    let run = |name: &str, extra: &[&str]| -> (serde_json::Value, usize) {
        let out = tmp.join(name);
        let mut args = vec![
            "train",
            "--model",
            fixture("bert-tiny-cls")
                .to_str()
                .unwrap()
                .to_string()
                .leak() as &str,
            "--train",
            dataset("amazon-food", "train")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            "--output",
            out.to_str().unwrap().to_string().leak(),
            "--max-train-samples",
            "600",
            "--validation-split",
            "0.2",
            "--epochs",
            "3",
            "--lr",
            "3e-3",
            "--max-length",
            "48",
        ];
        args.extend(extra);
        sequin_ok(&args);
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
        fixture("bert-tiny-cls").to_str().unwrap(),
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
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `sequin tune --grid`: one normal run folder per point, and a results table (Markdown and
/// JSON) sorted by the validation metric with the best marked.
#[test]
fn tune_grid_writes_sorted_results() {
    let tmp = std::env::temp_dir().join(format!("sequin-tune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    sequin_ok(&[
        "tune",
        "--grid",
        "--model",
        fixture("bert-tiny-cls").to_str().unwrap(),
        "--train",
        dataset("amazon-food", "train").to_str().unwrap(),
        "--validation-split",
        "0.2",
        "--output",
        tmp.to_str().unwrap(),
        "--max-train-samples",
        "200",
        "--max-length",
        "32",
        "--lr-values",
        "1e-4,3e-3",
        "--batch-size-values",
        "16,32",
        "--metric",
        "macro_f1",
    ]);
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
    }
    let md = std::fs::read_to_string(tmp.join("tune_results.md")).unwrap();
    assert_eq!(md.matches("| ★ |").count(), 1);
    assert_eq!(md.lines().filter(|l| l.contains("trial-0")).count(), 4);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `predict` streams its input a chunk at a time and writes JSONL or Parquet; both carry the
/// same predictions in input order.
#[test]
fn predict_writes_jsonl_and_parquet() {
    let tmp = std::env::temp_dir().join(format!("sequin-predict-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let input = dataset("movie-genres", "validation"); // 4418 rows: more than one chunk
    let model = fixture("bert-tiny-cls");
    let mut lines = Vec::new();
    for out in ["p.jsonl", "p.parquet"] {
        let out = tmp.join(out);
        sequin_ok(&[
            "predict",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-length",
            "32",
            "--top-k",
            "2",
        ]);
        lines.push(out);
    }
    let jsonl: Vec<serde_json::Value> = std::fs::read_to_string(&lines[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(jsonl.len(), 4418);
    // Read the Parquet file back through sequin's own reader, its `label` column as the text.
    let cols = sequin_data::Columns {
        text: "label".into(),
        label: None,
        ..Default::default()
    };
    let parquet = sequin_data::read_records(&lines[1], &cols).unwrap();
    assert_eq!(parquet.len(), 4418);
    for (j, p) in jsonl.iter().zip(&parquet) {
        assert_eq!(j["label"].as_str().unwrap(), p.text);
    }
    // No temp files are left beside the outputs.
    let names: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Early stopping: with a learning rate too small to change anything, validation accuracy
/// never improves after the first evaluation, and the run stops after `patience` more.
#[test]
fn early_stopping_ends_a_stalled_run() {
    let tmp = std::env::temp_dir().join(format!("sequin-early-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    sequin_ok(&[
        "train",
        "--model",
        fixture("bert-tiny-cls").to_str().unwrap(),
        "--train",
        dataset("amazon-food", "train").to_str().unwrap(),
        "--validation-split",
        "0.25",
        "--output",
        tmp.to_str().unwrap(),
        "--max-train-samples",
        "200",
        "--batch-size",
        "16",
        "--epochs",
        "3",
        "--max-length",
        "32",
        "--lr",
        "1e-12",
        "--eval-steps",
        "2",
        "--early-stopping-patience",
        "2",
        "--lr-scheduler",
        "cosine",
        "--layer-lr-decay",
        "0.8",
        "--head-lr",
        "1e-12",
    ]);
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
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `sequin augment` on every bundled dataset: each row plus N variants with provenance, the
/// labels carried over (lists stay lists), the same bytes for the same seed, and the output
/// readable as training data.
#[test]
fn augment_every_dataset() {
    let tmp = std::env::temp_dir().join(format!("sequin-augment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
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
            sequin_ok(&[
                "augment",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--label-column",
                label,
                "--num-aug",
                "2",
                "--seed",
                seed,
            ]);
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
        sequin_ok(&[
            "augment",
            "--input",
            dataset("amazon-food", "validation").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--spec",
            "noise",
        ]);
        std::fs::read(out).unwrap()
    };
    assert_eq!(run("x.csv"), run("y.csv"));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Training with augmentation: `offline` multiplies the training set (validation untouched),
/// `per-epoch` varies the texts every epoch, deterministically for a seed.
#[test]
fn train_with_augmentation() {
    let tmp = std::env::temp_dir().join(format!("sequin-train-aug-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |name: &str, extra: &[&str]| -> (serde_json::Value, Vec<u8>) {
        let out = tmp.join(name);
        let mut args = vec![
            "train",
            "--model",
            fixture("bert-tiny-cls")
                .to_str()
                .unwrap()
                .to_string()
                .leak() as &str,
            "--train",
            dataset("amazon-food", "train")
                .to_str()
                .unwrap()
                .to_string()
                .leak(),
            "--validation-split",
            "0.2",
            "--output",
            out.to_str().unwrap().to_string().leak(),
            "--max-train-samples",
            "100",
            "--epochs",
            "2",
            "--max-length",
            "32",
        ];
        args.extend(extra);
        sequin_ok(&args);
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
    let _ = std::fs::remove_dir_all(&tmp);
}

/// A batch trained as parallel row shards has the loss it has whole: the shards' weighted
/// losses add up to the batch's mean, with plain cross-entropy and with class-weighted
/// cross-entropy and focal loss (whose means divide by the batch's class weights, not its
/// rows). Dropout is off (a copy of the fixture with zero dropout), so only float rounding
/// differs between shard counts.
#[test]
fn shards_give_the_batch_loss() {
    let tmp = std::env::temp_dir().join(format!("sequin-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixture("bert-tiny-cls")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, model.join(p.file_name().unwrap())).unwrap();
    }
    let mut config = read_json(&model.join("config.json"));
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    config["classifier_dropout"] = 0.0.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let train = dataset("amazon-food", "train");
    let loss = |name: &str, shards: &str, extra: &[&str]| -> f64 {
        let out = tmp.join(format!("{name}-{shards}"));
        let mut args = vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-train-samples",
            "24",
            "--batch-size",
            "24",
            "--epochs",
            "1",
            "--max-length",
            "48",
            "--shards",
            shards,
        ];
        args.extend(extra);
        sequin_ok(&args);
        let run = read_json(&out.join("run.json"));
        assert_eq!(run["config"]["shards"], shards.parse::<u64>().unwrap());
        run["summary"]["epochs"][0]["train_loss"].as_f64().unwrap()
    };
    for (name, extra) in [
        ("plain", &[][..]),
        ("weighted", &["--class-weights", "1,3"][..]),
        ("focal", &["--class-weights", "auto", "--loss", "focal"][..]),
    ] {
        let whole = loss(name, "1", extra);
        let sharded = loss(name, "3", extra);
        assert!(whole.is_finite() && whole > 0.0, "{name}: {whole}");
        assert!(
            (whole - sharded).abs() <= 1e-5 * whole,
            "{name}: 1 shard {whole}, 3 shards {sharded}"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
