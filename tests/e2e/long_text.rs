//! Long documents: chunked training and prediction, long-document families, a 30,000-word document.

use burn::tensor::Device;
use sequin_train::Classifier;

use crate::common::*;

/// Chunked long documents: the policy is saved with the model, and predict's logits are the
/// mean of the windows' own logits.
#[test]
fn chunked_documents_are_saved_and_aggregated() {
    use burn::tensor::{Int, Tensor, TensorData};
    use sequin_tokenize::LongText;

    let guard = TestDir::new("chunk");
    let out = guard.root();
    sequin("train")
        .arg("--model", tiny_bert())
        .arg("--train", dataset("amazon-food", "train"))
        .arg("--output", &out)
        .arg("--max-train-samples", "64")
        .arg("--epochs", "1")
        .arg("--max-length", "32")
        .arg("--long-text", "chunk")
        .arg("--chunk-stride", "8")
        .arg("--max-chunks", "4")
        .ok();
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
        let guard = TestDir::new(family);
        let tmp = guard.root();

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
        sequin("train")
            .arg("--model", &src)
            .arg("--train", dataset("amazon-food", "train"))
            .arg("--output", &out)
            .arg("--max-train-samples", "48")
            .arg("--epochs", "1")
            .arg("--batch-size", "16")
            .arg("--max-length", "40")
            .arg("--long-text", "chunk")
            .arg("--chunk-stride", "8")
            .arg("--max-chunks", "3")
            .ok();
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
    }
}

/// `predict --long-text chunk` on one 30,000-word document: every window is read (with
/// `--chunk-select spread` under a cap, or all of them), in bounded row batches, and the
/// document gets one prediction.
#[test]
fn predict_chunks_a_30000_word_document() {
    let guard = TestDir::new("30k");
    let tmp = guard.root();
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
    let model = tiny_bert();
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
        sequin("predict")
            .arg("--model", &model)
            .arg("--input", &input)
            .arg("--output", &out)
            .arg("--max-length", "64")
            .arg("--batch-size", "32")
            .arg("--long-text", "chunk")
            .arg("--chunk-stride", "16")
            .arg("--max-chunks", cap)
            .arg("--chunk-select", "spread")
            .ok();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let p: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(p["logits"].as_array().unwrap().len(), 3);
    }
}
