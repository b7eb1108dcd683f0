//! One path from records to logits: [`Inference`], used by `eval`, `predict`, the trainer's
//! evaluations and threshold tuning.
//!
//! Records are tokenised through `sequin-data`'s [`DocumentRows`], as training batches are
//! (every document becomes one row, or its windows under the long-text policy); rows go
//! through the model at most `batch_size` at a time in `shards` parallel row shards, and each
//! document's window logits are aggregated by [`Aggregate::rows`], the host twin of the
//! training path's `aggregate_chunks`.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use sequin_data::{DocumentRows, EncodedBatch, FeatureBatch, FittedFeatures, Record};
use sequin_heads::{Aggregate, aggregate_chunks};
use sequin_tokenize::{EncodeOptions, Tokenizer};

use crate::Result;
use crate::classifier::{Model, ScoreFunction, Targets};
use crate::folder::InputPolicy;
use crate::metrics::{
    Confusion, MultiLabelAccumulator, RegressionAccumulator, Report, RocAccumulator,
};

/// Logits per document of an encoded batch: chunk rows are aggregated. Differentiable; the
/// training step and inference share it.
pub(crate) fn doc_logits(
    model: &Model,
    b: EncodedBatch,
    aggregate: Aggregate,
    meta: Option<FeatureBatch>,
) -> Tensor<2> {
    let (numeric, categorical) = meta.map_or((None, None), |m| (m.numeric, m.categorical));
    let logits = model.forward(
        b.input_ids,
        Some(b.token_type_ids),
        Some(b.pad_mask),
        numeric,
        categorical,
    );
    match &b.chunks {
        Some(chunks) => aggregate_chunks(logits, chunks, aggregate),
        None => logits,
    }
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

/// Everything inference needs beside the records: an inference-mode model with its
/// tokenizer and fitted metadata transforms, how inputs are fitted, and how much runs at once.
#[derive(Clone, Copy)]
pub struct Inference<'a> {
    /// The model (inference mode).
    pub model: &'a Model,
    /// Its tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Its fitted metadata transforms, when it takes metadata.
    pub features: Option<&'a FittedFeatures>,
    /// How inputs are fitted and how windows are aggregated.
    pub policy: &'a InputPolicy,
    /// Rows per forward pass.
    pub batch_size: usize,
    /// Row shards of a batch run in parallel (see `shard`).
    pub shards: usize,
    /// The device the model is on.
    pub device: &'a Device,
    /// The temperature of the scores (1: none), for the calibration part of a report.
    pub temperature: f32,
}

impl Inference<'_> {
    fn opts(&self) -> EncodeOptions {
        EncodeOptions {
            max_length: self.policy.max_length,
            pad_to_multiple_of: None,
        }
    }

    /// Logits per document, with bounded memory however long the documents are: every
    /// document becomes its rows under the policy (one, or its windows), the rows go through
    /// the model at most `batch_size` at a time, and each document's window logits are
    /// aggregated.
    pub fn doc_logits(&self, records: &[&Record]) -> Result<Vec<Vec<f32>>> {
        let opts = self.opts();
        let docs = DocumentRows::encode(self.tokenizer, records, opts, self.policy.long_text)?;
        let (rows, counts) = (&docs.rows, &docs.counts);
        // The document of every row (its windows share its metadata).
        let row_doc = docs.row_documents();
        let meta = match (self.features, &self.model.fusion) {
            (Some(f), Some(_)) => Some((f, f.encode(Path::new("input"), 1, records)?)),
            _ => None,
        };
        let mut row_logits: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
        let size = self.batch_size.max(1);
        for (part, docs) in rows.chunks(size).zip(row_doc.chunks(size)) {
            // Row shards of the batch in parallel, each padded to its own longest row.
            let shards = crate::shard::sharded_map(part.len(), self.shards, |r| {
                let refs: Vec<_> = part[r.clone()].iter().collect();
                let b = EncodedBatch::from_rows(
                    self.tokenizer,
                    &refs,
                    opts.pad_to_multiple_of,
                    self.device,
                );
                // (Rows, not documents: nothing to aggregate here.)
                let meta = meta
                    .as_ref()
                    .map(|(f, enc)| f.batch(enc, &docs[r], self.device));
                let logits = doc_logits(self.model, b, Aggregate::Mean, meta);
                let k = logits.dims()[1];
                let flat: Vec<f32> = logits.into_data().try_into_vec_as().expect("f32 logits");
                flat.chunks(k).map(<[f32]>::to_vec).collect::<Vec<_>>()
            });
            row_logits.extend(shards.into_iter().flatten());
        }
        let mut out = Vec::with_capacity(records.len());
        let mut start = 0;
        for &n in counts {
            out.push(self.policy.aggregate.rows(&row_logits[start..start + n]));
            start += n;
        }
        Ok(out)
    }

    /// Logits of records in input order, batched by decreasing length; `progress` names the
    /// progress bar.
    pub fn logits(&self, records: &[Record], progress: &str) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); records.len()];
        self.by_length(records, progress, |chunk, logits| {
            for (l, &i) in logits.into_iter().zip(chunk) {
                out[i] = l;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs the records through the model in batches of decreasing length and hands each
    /// batch's indices and logits to `sink`.
    fn by_length(
        &self,
        records: &[Record],
        progress: &str,
        mut sink: impl FnMut(&[usize], Vec<Vec<f32>>) -> Result<()>,
    ) -> Result<()> {
        let order = length_order(records);
        let chunks = order.chunks(self.batch_size.max(1));
        let pb = crate::progress::bar(chunks.len() as u64, progress);
        for chunk in chunks {
            pb.inc(1);
            let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
            sink(chunk, self.doc_logits(&recs)?)?;
        }
        pb.finish_and_clear();
        Ok(())
    }

    /// Every metric on labelled records, streaming: a confusion matrix (or per-label counts,
    /// or regression sums) and a loss sum are kept, not the predictions.
    pub fn evaluate(
        &self,
        records: &[Record],
        targets: &Targets,
        labels: &[String],
    ) -> Result<Report> {
        let k = labels.len();
        let mut conf = Confusion::new(k);
        let mut roc = RocAccumulator::new(k);
        let mut multi = MultiLabelAccumulator::new(
            self.policy
                .thresholds
                .clone()
                .filter(|t| t.len() == k)
                .unwrap_or_else(|| vec![0.5; k]),
        );
        let mut reg = RegressionAccumulator::default();
        // Single-label logits and ids, for the calibration measures.
        let (mut all_logits, mut all_ids) = (Vec::new(), Vec::new());
        self.by_length(records, "evaluate", |chunk, logits| {
            match targets.select(chunk) {
                Targets::Classes(ids) => {
                    add_classes(&mut conf, &mut roc, &logits, &ids, k);
                    all_logits.extend(logits);
                    all_ids.extend(ids);
                }
                Targets::MultiHot(rows) => {
                    for (l, y) in logits.iter().zip(&rows) {
                        multi.add(l, y);
                    }
                }
                Targets::Values(values) => {
                    for (l, &y) in logits.iter().zip(&values) {
                        reg.add(l[0], y);
                    }
                }
            }
            Ok(())
        })?;
        Ok(match targets {
            Targets::Classes(_) => Report {
                calibration: Some(crate::metrics::CalibrationReport::of(
                    &all_logits,
                    &all_ids,
                    self.temperature,
                )),
                ..conf.report(labels, Some(&roc))
            },
            Targets::MultiHot(_) => multi.report(labels),
            Targets::Values(_) => Report {
                summary: reg.metrics(),
                micro_f1: 0.0,
                weighted_f1: 0.0,
                macro_precision: 0.0,
                macro_recall: 0.0,
                mcc: 0.0,
                auroc: None,
                confusion: Vec::new(),
                per_class: Vec::new(),
                calibration: None,
            },
        })
    }

    /// Sigmoid probabilities `[n][k]` of records, in order (for threshold tuning).
    pub fn sigmoid_probs(&self, records: &[Record]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(records.len());
        for chunk in records.chunks(self.batch_size.max(1)) {
            let recs: Vec<&Record> = chunk.iter().collect();
            for l in self.doc_logits(&recs)? {
                out.push(ScoreFunction::Sigmoid.apply(&l));
            }
        }
        Ok(out)
    }
}

/// Adds a batch of single-label logits to the confusion matrix, the loss sum and the ROC
/// accumulator.
fn add_classes(
    conf: &mut Confusion,
    roc: &mut RocAccumulator,
    logits: &[Vec<f32>],
    ids: &[usize],
    k: usize,
) {
    let mut probs = Vec::with_capacity(logits.len() * k);
    for (l, &t) in logits.iter().zip(ids) {
        // Cross-entropy from log-softmax, in f64.
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = l.iter().map(|&x| (x as f64 - max).exp()).sum();
        conf.add_loss(sum.ln() + max - l[t] as f64);
        probs.extend(l.iter().map(|&x| ((x as f64 - max).exp() / sum) as f32));
    }
    for (row, &t) in probs.chunks(k).zip(ids) {
        let pred = row
            .iter()
            .enumerate()
            .fold(0, |best, (i, &p)| if p > row[best] { i } else { best });
        conf.add(t, pred);
        roc.add(t, row);
    }
}
