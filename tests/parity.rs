//! Hugging Face parity: token ids exactly, logits and hidden states within 1e-4.

use burn::tensor::{Device, Tensor};
use sequin_data::{EncodedBatch, Record};
use sequin_heads::{Inputs, SequenceClassifier};
use sequin_hf::{ArchConfig, load_classifier};
use sequin_tokenize::{EncodeOptions, Tokenizer};
use sequin_train::Classifier;

use crate::common::*;

fn records(fx: &serde_json::Value) -> Vec<Record> {
    fx["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| Record {
            text: i["text"].as_str().unwrap().to_string(),
            text_pair: i["text_pair"].as_str().map(String::from),
            label: None,
            labels: None,
            features: Vec::new(),
        })
        .collect()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    flat_f32(v).into_iter().map(|x| x as u32).collect()
}

/// Token ids of the fixture inputs against transformers': one row at a time and as the padded
/// batch (multiple of 8). `want` holds `rows` and `batch`; token types are compared where the
/// HF tokenizer returns them.
fn check_tokenizer(
    name: &str,
    tok: &Tokenizer,
    inputs: &serde_json::Value,
    want: &serde_json::Value,
) {
    let max_length = want["max_length"].as_u64().unwrap() as usize;
    let opts = EncodeOptions {
        max_length,
        pad_to_multiple_of: None,
    };
    let recs = records(inputs);
    for (i, (r, w)) in recs
        .iter()
        .zip(want["rows"].as_array().unwrap())
        .enumerate()
    {
        let got = tok.encode(&r.text, r.text_pair.as_deref(), opts).unwrap();
        assert_eq!(
            got.input_ids,
            u32s(&w["input_ids"]),
            "{name} input_ids of row {i}: {:?}",
            r.text
        );
        assert_eq!(
            got.attention_mask,
            u32s(&w["attention_mask"]),
            "{name} mask of row {i}"
        );
        if !w["token_type_ids"].is_null() {
            assert_eq!(
                got.token_type_ids,
                u32s(&w["token_type_ids"]),
                "{name} types of row {i}"
            );
        }
    }
    let items: Vec<(&str, Option<&str>)> = recs
        .iter()
        .map(|r| (r.text.as_str(), r.text_pair.as_deref()))
        .collect();
    let b = tok
        .encode_batch(
            &items,
            EncodeOptions {
                max_length,
                pad_to_multiple_of: Some(8),
            },
        )
        .unwrap();
    assert_eq!(
        b.input_ids,
        u32s(&want["batch"]["input_ids"]),
        "{name} padded ids"
    );
    assert_eq!(
        b.attention_mask,
        u32s(&want["batch"]["attention_mask"]),
        "{name} padded mask"
    );
    if !want["batch"]["token_type_ids"].is_null() {
        assert_eq!(
            b.token_type_ids,
            u32s(&want["batch"]["token_type_ids"]),
            "{name} padded types"
        );
    }
}

#[test]
fn tokenizer_json_ids_match_transformers() {
    let fx = read_json(&fixture("parity.json"));
    // The fixture's tokenizer.json was saved by transformers from MiniLM's, padding/truncation
    // baked at 128; ours must override both.
    check_tokenizer(
        "tokenizer.json",
        &Tokenizer::from_dir(fixture("bert-tiny-cls")).unwrap(),
        &fx,
        &fx,
    );
}

#[test]
fn vocab_txt_only_folder_ids_match_transformers() {
    let fx = read_json(&fixture("parity.json"));
    let dir = fixture("vocab-only");
    assert!(!dir.join("tokenizer.json").exists());
    check_tokenizer("vocab.txt", &Tokenizer::from_dir(&dir).unwrap(), &fx, &fx);
}

#[test]
fn classifier_logits_match_transformers_batched_and_single() {
    let fx = read_json(&fixture("parity.json"));
    let c = Classifier::load(&fixture("bert-tiny-cls"), &Device::flex()).unwrap();
    assert_eq!(c.labels.names(), ["negative", "neutral", "positive"]);
    check_logits(
        "bert",
        &c,
        &fx,
        &fx["cls_logits_batch"],
        &fx["cls_logits_single"],
    );
}

/// Batched logits of a classifier on the fixture inputs, padded as transformers padded them.
fn batched_logits(c: &Classifier, fx: &serde_json::Value) -> Vec<f32> {
    batched_logits_at(c, fx, fx["max_length"].as_u64().unwrap() as usize)
}

fn batched_logits_at(c: &Classifier, fx: &serde_json::Value, max_length: usize) -> Vec<f32> {
    let device = Device::flex();
    let recs = records(fx);
    let refs: Vec<&Record> = recs.iter().collect();
    let opts = EncodeOptions {
        max_length,
        pad_to_multiple_of: Some(8),
    };
    let b = EncodedBatch::new(&c.tokenizer, &refs, None, opts, &device).unwrap();
    let logits: Tensor<2> =
        c.model
            .text
            .forward(b.input_ids, Some(b.token_type_ids), Some(b.pad_mask));
    logits.into_data().try_into_vec_as().unwrap()
}

/// Folders transformers writes in other ways: pickled `pytorch_model.bin`, and float16 weights.
#[test]
fn pytorch_bin_and_float16_folders_match_transformers() {
    let fx = read_json(&fixture("parity.json"));
    let device = Device::flex();
    let bin = Classifier::load(&fixture("bert-tiny-cls-bin"), &device).unwrap();
    check_logits(
        "pytorch_model.bin",
        &bin,
        &fx,
        &fx["cls_logits_batch"],
        &fx["cls_logits_single"],
    );
    let half = Classifier::load(&fixture("bert-tiny-cls-fp16"), &device).unwrap();
    let diff = max_abs_diff(
        &batched_logits(&half, &fx),
        &flat_f32(&fx["cls_fp16_logits_batch"]),
    );
    assert!(diff < 1e-4, "float16 folder logits differ by {diff}");
}

#[test]
fn bert_model_without_prefix_matches_hidden_states() {
    let fx = read_json(&fixture("parity.json"));
    let device = Device::flex();
    let dir = fixture("bert-tiny-base");
    // A bare BertModel: the head is new and reported as such; the pooler is loaded.
    let (model, cfg, report) = load_classifier(&dir, Some(2), &device).unwrap();
    let (ArchConfig::Bert(cfg), SequenceClassifier::Bert(model)) = (cfg.arch, model) else {
        panic!("not BERT")
    };
    assert_eq!(cfg.hidden_act, "gelu_new");
    assert_eq!(
        report.newly_initialized,
        ["classifier.bias", "classifier.weight"]
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let recs = records(&fx);
    let refs: Vec<&Record> = recs.iter().collect();
    let max_length = fx["max_length"].as_u64().unwrap() as usize;
    let b = EncodedBatch::new(
        &tok,
        &refs,
        None,
        EncodeOptions {
            max_length,
            pad_to_multiple_of: Some(8),
        },
        &device,
    )
    .unwrap();
    let (hidden, pooled) = model.bert.forward_pooled(Inputs::new(
        b.input_ids,
        Some(b.token_type_ids),
        Some(b.pad_mask.clone()),
    ));
    // Compare only real tokens: HF's values at padded positions are not meaningful.
    let mask: Vec<bool> = b.pad_mask.into_data().try_into_vec_as().unwrap();
    let got: Vec<f32> = hidden.into_data().try_into_vec_as().unwrap();
    let want = flat_f32(&fx["base_last_hidden_state"]);
    let h = cfg.hidden_size;
    let mut diff = 0f32;
    for (pos, pad) in mask.iter().enumerate() {
        if !pad {
            diff = diff.max(max_abs_diff(
                &got[pos * h..(pos + 1) * h],
                &want[pos * h..(pos + 1) * h],
            ));
        }
    }
    assert!(diff < 1e-4, "hidden states differ by {diff}");
    let got: Vec<f32> = pooled.into_data().try_into_vec_as().unwrap();
    let diff = max_abs_diff(&got, &flat_f32(&fx["base_pooler_output"]));
    assert!(diff < 1e-4, "pooler output differs by {diff}");
}

/// The real all-MiniLM-L6-v2 classifier (a new 2-label head) and the fixture, whenever
/// `cargo xtask fetch-model` has put the weights in `models/`; `None` (said on stderr) when not
/// fetched. `cargo xtask test` (the README's test command) fetches them and requires them.
fn minilm() -> Option<(
    serde_json::Value,
    sequin_heads::BertForSequenceClassification,
    sequin_hf::LoadReport,
)> {
    let dir = root().join("models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        assert!(
            std::env::var_os("SEQUIN_REQUIRE_MINILM").is_none(),
            "models/all-MiniLM-L6-v2 is missing"
        );
        eprintln!(
            "models/all-MiniLM-L6-v2 not fetched: run `cargo xtask fetch-model`; not checked"
        );
        return None;
    }
    let (model, _, report) = load_classifier(&dir, Some(2), &Device::flex()).unwrap();
    let SequenceClassifier::Bert(model) = model else {
        panic!("not BERT")
    };
    Some((read_json(&fixture("minilm.json")), model, report))
}

/// The MiniLM fixture's padded batch as model inputs, and its attention mask (1 = token).
fn minilm_inputs(fx: &serde_json::Value) -> (Inputs, Vec<u32>) {
    let device = Device::flex();
    let ids = u32s(&fx["batch"]["input_ids"]);
    let types = u32s(&fx["batch"]["token_type_ids"]);
    let mask = u32s(&fx["batch"]["attention_mask"]);
    let rows = fx["batch"]["input_ids"].as_array().unwrap().len();
    let seq = ids.len() / rows;
    let t = |v: &[u32]| {
        let d: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(d, [rows, seq]),
            &device,
        )
    };
    let pad = sequin_data::to_pad_mask(&mask, rows, seq, &device);
    (Inputs::new(t(&ids), Some(t(&types)), Some(pad)), mask)
}

/// The real all-MiniLM-L6-v2 weights (see [`minilm`]).
#[test]
fn minilm_real_weights_match_hidden_states() {
    let Some((fx, model, report)) = minilm() else {
        return;
    };
    assert_eq!(report.discarded, ["embeddings.position_ids"]);
    let (inputs, mask) = minilm_inputs(&fx);
    let (hidden, pooled) = model.bert.forward_pooled(inputs);
    let got: Vec<f32> = hidden.into_data().try_into_vec_as().unwrap();
    let want = flat_f32(&fx["last_hidden_state"]);
    let h = 384;
    let mut diff = 0f32;
    for (pos, m) in mask.iter().enumerate() {
        if *m == 1 {
            diff = diff.max(max_abs_diff(
                &got[pos * h..(pos + 1) * h],
                &want[pos * h..(pos + 1) * h],
            ));
        }
    }
    assert!(diff < 1e-4, "MiniLM hidden states differ by {diff}");
    let got: Vec<f32> = pooled.into_data().try_into_vec_as().unwrap();
    let diff = max_abs_diff(&got, &flat_f32(&fx["pooler_output"]));
    assert!(diff < 1e-4, "MiniLM pooler differs by {diff}");
}

/// `--precision int8` on the real MiniLM weights: every real token's hidden state keeps a
/// cosine similarity above 0.985 (0.990 measured) with transformers' fp32 one (dynamic int8
/// changes the numbers, not what they say), and unmarking the weights gives fp32 back exactly.
#[test]
fn minilm_int8_hidden_states_stay_close_to_transformers() {
    low_precision_stays_close(sequin_encoders::Precision::Int8, 0.985);
}

/// `--precision bf16` likewise, closer: bf16 keeps 8 bits of every operand's mantissa and
/// accumulates in f32 (cosine 0.99996 measured).
#[test]
fn minilm_bf16_hidden_states_stay_close_to_transformers() {
    low_precision_stays_close(sequin_encoders::Precision::Bf16, 0.999);
}

fn low_precision_stays_close(precision: sequin_encoders::Precision, min_cosine: f32) {
    use sequin_encoders::Backbone as _;
    let Some((fx, model, _)) = minilm() else {
        return;
    };
    let mask = minilm_inputs(&fx).1;
    let hidden = || -> Vec<f32> {
        let h = model.bert.forward(minilm_inputs(&fx).0);
        h.into_data().try_into_vec_as().unwrap()
    };
    let fp32 = hidden();
    let guard = sequin_encoders::LowPrecisionLinears::mark(&model, precision);
    let low = hidden();
    assert_eq!(
        guard.quantized(),
        6 * 6,
        "every layer's 6 linear weights run in {}",
        precision.name()
    );
    drop(guard);
    assert_eq!(hidden(), fp32, "unmarked weights run in fp32 again");
    let want = flat_f32(&fx["last_hidden_state"]);
    let h = 384;
    let (mut worst, mut moved) = (1f32, 0f32);
    for pos in (0..mask.len()).filter(|&p| mask[p] == 1) {
        let (a, b) = (&low[pos * h..][..h], &want[pos * h..][..h]);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        worst = worst.min(dot / (norm(a) * norm(b)));
        moved = moved.max(max_abs_diff(a, b));
    }
    eprintln!(
        "{} ({}): worst token cosine {worst:.5}, max |Δ| {moved:.4}",
        precision.name(),
        precision.kernel_name().unwrap_or("f32")
    );
    assert!(
        worst > min_cosine,
        "a {} hidden state drifted: cosine {worst}",
        precision.name()
    );
    assert!(
        moved > 0.0,
        "{} gave fp32's numbers: the layers were not converted",
        precision.name()
    );
}

/// Logits of the fixture inputs, padded as transformers padded them (multiple of 8) and one
/// row at a time through `predict`, against transformers' within 1e-4.
fn check_logits(
    name: &str,
    c: &Classifier,
    inputs: &serde_json::Value,
    batch: &serde_json::Value,
    single: &serde_json::Value,
) {
    let max_length = inputs["max_length"].as_u64().unwrap() as usize;
    check_logits_at(name, c, inputs, max_length, batch, single)
}

fn check_logits_at(
    name: &str,
    c: &Classifier,
    inputs: &serde_json::Value,
    max_length: usize,
    batch: &serde_json::Value,
    single: &serde_json::Value,
) {
    assert!(c.report.newly_initialized.is_empty(), "{}", c.report);
    let got = batched_logits_at(c, inputs, max_length);
    let diff = max_abs_diff(&got, &flat_f32(batch));
    assert!(diff < 1e-4, "{name} batched logits differ by {diff}");
    let opts = EncodeOptions {
        max_length,
        pad_to_multiple_of: None,
    };
    let preds = c.predict(&records(inputs), opts, 5).unwrap();
    let got: Vec<f32> = preds.iter().flat_map(|p| p.logits.clone()).collect();
    let diff = max_abs_diff(&got, &flat_f32(single));
    assert!(diff < 1e-4, "{name} per-row logits differ by {diff}");
    for p in &preds {
        assert!(p.score > 0.0 && p.score <= 1.0);
    }
}

/// A family's fixture: token ids exactly, batched and per-row logits within 1e-4.
fn family_parity(name: &str, dir: &str) {
    let fx = read_json(&fixture(&format!("{name}.json")));
    let inputs = read_json(&fixture("parity.json"));
    let c = Classifier::load(&fixture(dir), &Device::flex()).unwrap();
    check_tokenizer(name, &c.tokenizer, &inputs, &fx);
    let max_length = fx["max_length"].as_u64().unwrap() as usize;
    check_logits_at(
        name,
        &c,
        &inputs,
        max_length,
        &fx["logits_batch"],
        &fx["logits_single"],
    );
}

/// RoBERTa: byte-level BPE, `<s> A </s></s> B </s>` pairs, positions from `padding_idx + 1`
/// that skip padding, `classifier.dense → tanh → out_proj` head, no pooler.
#[test]
fn roberta_matches_transformers() {
    family_parity("roberta", "roberta-tiny-cls");
}

/// DistilBERT: its own config names, no token types, `pre_classifier → ReLU → classifier`.
#[test]
fn distilbert_matches_transformers() {
    family_parity("distilbert", "distilbert-tiny-cls");
}

/// Longformer: sliding windows of 4 and 8 tokens (one per layer), global attention on `<s>`,
/// 96-token inputs in padded batches and single rows.
#[test]
fn longformer_matches_transformers() {
    family_parity("longformer", "longformer-tiny-cls");
}

/// Another Longformer: one window of 6 for all three layers (inputs padded to a multiple of 6),
/// other sizes.
#[test]
fn longformer_other_window_matches_transformers() {
    family_parity("longformer-b", "longformer-b-tiny-cls");
}

/// A caller-given global-attention mask (rows with different numbers of global tokens).
#[test]
fn longformer_custom_global_mask_matches_transformers() {
    use burn::tensor::{Bool, Int, TensorData};
    for name in ["longformer", "longformer-b"] {
        let fx = read_json(&fixture(&format!("{name}.json")));
        let c = Classifier::load(&fixture(&format!("{name}-tiny-cls")), &Device::flex()).unwrap();
        let SequenceClassifier::Longformer(m) = &c.model.text else {
            panic!("{name} did not load as Longformer")
        };
        let device = Device::flex();
        let rows = |v: &serde_json::Value| -> (Vec<i64>, [usize; 2]) {
            let rows = v.as_array().unwrap();
            let n = rows[0].as_array().unwrap().len();
            let flat: Vec<i64> = rows
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
                .collect();
            (flat, [rows.len(), n])
        };
        let (ids, shape) = rows(&fx["batch"]["input_ids"]);
        let (mask, _) = rows(&fx["batch"]["attention_mask"]);
        let (global, _) = rows(&fx["global_mask"]);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &device);
        let pad = Tensor::<2, Bool>::from_data(
            TensorData::new(mask.iter().map(|&m| m == 0).collect::<Vec<_>>(), shape),
            &device,
        );
        let global = Tensor::<2, Bool>::from_data(
            TensorData::new(global.iter().map(|&g| g == 1).collect::<Vec<_>>(), shape),
            &device,
        );
        let got: Vec<f32> = m
            .forward_with_global(ids, None, Some(pad), Some(global))
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let diff = max_abs_diff(&got, &flat_f32(&fx["logits_batch_global"]));
        assert!(
            diff < 1e-4,
            "{name} logits with a global mask differ by {diff}"
        );
    }
}

/// ModernBERT: rotary embeddings, local layers (window 8) between global ones, gated MLP,
/// no biases, `cls` pooling; 96-token inputs.
#[test]
fn modernbert_matches_transformers() {
    family_parity("modernbert", "modernbert-tiny-cls");
}

/// Another ModernBERT: biases everywhere, window 12, global every 2nd layer, other θ,
/// gelu_new / silu, `mean` pooling.
#[test]
fn modernbert_other_config_matches_transformers() {
    family_parity("modernbert-b", "modernbert-b-tiny-cls");
}

/// XLM-RoBERTa's `model_type` (the RoBERTa code), other sizes, `gelu_new`, eps 1e-5, 96 tokens.
#[test]
fn xlm_roberta_other_size_matches_transformers() {
    family_parity("xlm-roberta-b", "xlm-roberta-b-tiny-cls");
}

/// DistilBERT with other sizes, ReLU, sinusoidal position table, 5 labels, 96 tokens.
#[test]
fn distilbert_other_size_matches_transformers() {
    family_parity("distilbert-b", "distilbert-b-tiny-cls");
}
