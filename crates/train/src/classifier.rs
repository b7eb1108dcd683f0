//! A trained classifier folder, loaded for evaluation and prediction.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use sequin_data::{Columns, EncodedBatch, LabelMap, Record, read_records};
use sequin_heads::{SequenceClassifier, loss};
use sequin_hf::{HfConfig, LoadReport, load_classifier};
use sequin_tokenize::{EncodeOptions, Tokenizer};
use serde::Serialize;

use crate::metrics::{Confusion, EvalMetrics};
use crate::{Result, TrainError};

/// One prediction, as `sequin predict` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The `id2label` name of the top class.
    pub label: String,
    /// Softmax probability of that class.
    pub score: f32,
    /// Raw logits.
    pub logits: Vec<f32>,
}

/// A sequence classifier with its tokenizer and label names, ready for inference.
pub struct Classifier {
    /// The model (inference mode: dropout off, no autodiff).
    pub model: SequenceClassifier,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Class names in id order.
    pub labels: LabelMap,
    /// Its `config.json`.
    pub config: HfConfig,
    /// What loading did.
    pub report: LoadReport,
    /// The folder.
    pub dir: PathBuf,
    device: Device,
}

/// Order of indices by decreasing text length, so that batches pad little.
pub(crate) fn length_order(records: &[Record]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..records.len()).collect();
    idx.sort_by_key(|&i| {
        std::cmp::Reverse(
            records[i].text.len() + records[i].text_pair.as_ref().map_or(0, |p| p.len()),
        )
    });
    idx
}

impl Classifier {
    /// Loads a sequence-classification folder (as sequin or transformers saved it).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (model, config, report) = load_classifier(dir, None, device)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let n = model.num_labels();
        let names = match &config.labels {
            Some(l) if l.len() == n => l.clone(),
            _ => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        };
        Ok(Self {
            model: model.valid(),
            tokenizer,
            labels: LabelMap::new(names),
            config,
            report,
            dir: dir.to_path_buf(),
            device: device.clone(),
        })
    }

    /// Wraps an in-memory model.
    pub fn from_parts(
        model: SequenceClassifier,
        tokenizer: Tokenizer,
        labels: LabelMap,
        config: HfConfig,
        dir: PathBuf,
        device: &Device,
    ) -> Self {
        Self {
            model: model.valid(),
            tokenizer,
            labels,
            config,
            report: LoadReport::default(),
            dir,
            device: device.clone(),
        }
    }

    /// The `max_length` the folder was trained with (`tokenizer_config.json`'s
    /// `model_max_length`, capped by the position table), 128 if unknown.
    pub fn default_max_length(&self) -> usize {
        let from_tok = std::fs::read_to_string(self.dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("model_max_length").and_then(|m| m.as_u64()))
            .map(|m| m as usize);
        from_tok.unwrap_or(128).min(self.config.arch.max_length())
    }

    /// Logits `[n, num_labels]` for records, in the order given; batches are formed by length.
    pub fn logits(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); records.len()];
        let order = length_order(records);
        for chunk in order.chunks(batch_size.max(1)) {
            let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
            let logits = self.forward(&recs, opts)?;
            let k = logits.dims()[1];
            let flat: Vec<f32> = logits.into_data().try_into_vec_as().expect("f32 logits");
            for (j, &i) in chunk.iter().enumerate() {
                out[i] = flat[j * k..(j + 1) * k].to_vec();
            }
        }
        Ok(out)
    }

    fn forward(&self, recs: &[&Record], opts: EncodeOptions) -> Result<Tensor<2>> {
        let b = EncodedBatch::new(&self.tokenizer, recs, None, opts, &self.device)?;
        Ok(self
            .model
            .forward(b.input_ids, Some(b.token_type_ids), Some(b.pad_mask)))
    }

    /// Predictions for records, in input order.
    pub fn predict(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        let logits = self.logits(records, opts, batch_size)?;
        Ok(logits
            .into_iter()
            .map(|l| {
                let t = Tensor::<1>::from_floats(l.as_slice(), &self.device);
                let p: Vec<f32> = softmax(t, 0).into_data().try_into_vec_as().expect("f32");
                let (best, score) = p
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::MIN), |a, (i, v)| if v > a.1 { (i, v) } else { a });
                Prediction {
                    label: self.labels.names()[best].clone(),
                    score,
                    logits: l,
                }
            })
            .collect())
    }

    /// Accuracy, macro-F1 and mean cross-entropy on labelled records.
    pub fn evaluate(
        &self,
        records: &[Record],
        path: &Path,
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<EvalMetrics> {
        let ids = self.labels.encode(records, path)?;
        evaluate_model(
            &self.model,
            &self.tokenizer,
            records,
            &ids,
            self.labels.len(),
            opts,
            batch_size,
            &self.device,
        )
    }

    /// Reads a data file with these columns.
    pub fn read(&self, path: &Path, cols: &Columns) -> Result<Vec<Record>> {
        read_records(path, cols).map_err(TrainError::from)
    }
}

/// Evaluates an inference-mode model on labelled records (streaming: only a confusion matrix
/// and a loss sum are kept).
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_model(
    model: &SequenceClassifier,
    tokenizer: &Tokenizer,
    records: &[Record],
    label_ids: &[usize],
    num_labels: usize,
    opts: EncodeOptions,
    batch_size: usize,
    device: &Device,
) -> Result<EvalMetrics> {
    let mut conf = Confusion::new(num_labels);
    for chunk in length_order(records).chunks(batch_size.max(1)) {
        let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
        let ids: Vec<usize> = chunk.iter().map(|&i| label_ids[i]).collect();
        let b = EncodedBatch::new(tokenizer, &recs, Some(&ids), opts, device)?;
        let logits = model.forward(b.input_ids, Some(b.token_type_ids), Some(b.pad_mask));
        let targets = b.labels.expect("labelled");
        let loss: f32 = loss::cross_entropy(logits.clone(), targets).into_scalar();
        conf.add_loss(loss as f64 * chunk.len() as f64);
        let preds: Vec<i64> = logits
            .argmax(1)
            .into_data()
            .try_into_vec_as()
            .expect("int argmax");
        for (p, t) in preds.iter().zip(&ids) {
            conf.add(*t, *p as usize);
        }
    }
    Ok(conf.metrics())
}
