//! `sequin predict`: score functions, top-k, JSONL and Parquet output.

use crate::common::*;

/// `predict --top-k all --function none|sigmoid`, as transformers' text-classification pipeline.
#[test]
fn predict_top_k_and_score_functions() {
    let guard = TestDir::new("topk");
    let dir = guard.root();
    let input = dir.join("in.jsonl");
    std::fs::write(&input, "{\"text\": \"great tea\"}\n{\"text\": \"awful\"}\n").unwrap();
    let model = tiny_bert();
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
        sequin("predict")
            .arg("--model", &model)
            .arg("--input", "x")
            .arg("--output", "y")
            .arg("--top-k", "0")
            .err()
            .contains("positive number")
    );
}

/// `predict` streams its input a chunk at a time and writes JSONL or Parquet; both carry the
/// same predictions in input order.
#[test]
fn predict_writes_jsonl_and_parquet() {
    let guard = TestDir::new("predict-out");
    let tmp = guard.root();
    let input = dataset("movie-genres", "validation"); // 4418 rows: more than one chunk
    let model = tiny_bert();
    let mut lines = Vec::new();
    for out in ["p.jsonl", "p.parquet"] {
        let out = tmp.join(out);
        sequin("predict")
            .arg("--model", &model)
            .arg("--input", &input)
            .arg("--output", &out)
            .arg("--max-length", "32")
            .arg("--top-k", "2")
            .ok();
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
}

#[test]
fn empty_and_blank_texts_are_predicted_as_transformers_predicts_them() {
    let fx = read_json(&fixture("parity.json"));
    assert_eq!(
        fx["inputs"][7]["text"], "",
        "fixture input 7 is the empty text"
    );
    let d = TestDir::new("predict-empty");
    let input = d.file("in.csv", b"text\nThis is great tea.\n\"\"\n\"   \"\n");
    let out = d.join("out.jsonl");
    sequin("predict")
        .arg("--model", tiny_bert())
        .arg("--input", &input)
        .arg("--output", &out)
        .ok();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "one output row per input row");
    let want = &fx["cls_logits_single"];
    for (row, fixture_row) in [(0, 0), (1, 7), (2, 7)] {
        let got = flat_f32(&rows[row]["logits"]);
        let diff = max_abs_diff(&got, &flat_f32(&want[fixture_row]));
        assert!(diff <= 1e-4, "row {row}: max |Δlogit| {diff}");
    }
}

/// `--precision int8`: one prediction per row, logits within a small distance of fp32's (the
/// real binary's `eval` output and `--version` are checked in `crates/cli/tests/process.rs`). (The accuracy change on real data is measured by
/// `cargo xtask bench`'s README figures; here the model is tiny and random.)
#[test]
fn low_precision_predicts_close_to_fp32() {
    let guard = TestDir::new("int8");
    let input = guard.file(
        "in.jsonl",
        b"{\"text\": \"great tea, would buy again\"}\n{\"text\": \"awful\"}\n{\"text\": \"\"}\n{\"text\": \"the package arrived late but the coffee was fine\"}\n",
    );
    let model = tiny_bert();
    let run = |precision: &str| -> Vec<Vec<f32>> {
        let out = guard.path(&format!("{precision}.jsonl"));
        sequin("predict")
            .arg("--model", &model)
            .arg("--input", &input)
            .arg("--output", &out)
            .arg("--precision", precision)
            .ok();
        jsonl_logits(std::path::Path::new(&out))
    };
    let fp32 = run("fp32");
    let scale = fp32.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    // bf16 keeps 8 bits of every operand's mantissa, int8 about 7 per row or column.
    for (precision, bound) in [("int8", 0.05), ("bf16", 0.02)] {
        let low = run(precision);
        assert_eq!(low.len(), 4, "{precision}: one output row per input row");
        let moved = fp32
            .iter()
            .zip(&low)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        assert!(
            moved > 0.0,
            "{precision} gave fp32's exact logits: nothing was converted"
        );
        assert!(
            moved < bound * scale + 0.01,
            "{precision} logits moved by {moved} (fp32 scale {scale})"
        );
    }
    assert!(
        sequin("predict")
            .arg("--model", &model)
            .arg("--input", &input)
            .arg("--output", guard.path("x.jsonl"))
            .arg("--precision", "int4")
            .err()
            .contains("int4")
    );
}
