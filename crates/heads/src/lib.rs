//! Classification heads for sequin: the `SequenceClassifier` of every registered family (each
//! exactly as its `transformers` counterpart, defined in `sequin-encoders`), metadata fusion,
//! chunk aggregation, and the losses of HF's three `problem_type`s.
//!
//! Heads return logits, never probabilities. This crate knows nothing of strings or files.

#![allow(non_snake_case)]

pub mod fusion;
pub mod loss;
pub mod registry;
pub mod sentence;

pub use fusion::{FusionConfig, FusionHead, FusionMethod};
pub use registry::{
    Backbone, BertForSequenceClassification, CheckpointKeys, ConfigOf,
    DistilBertForSequenceClassification, Family, Inputs, LongformerForSequenceClassification,
    ModernBertForSequenceClassification, ModernBertPredictionHead, RobertaClassificationHead,
    RobertaForSequenceClassification, SequenceClassifier, backbone_prefixes, for_each_family,
};
pub use sentence::{SentenceEmbedding, SentenceHead, SentencePooling};

use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

/// How the logits of a document's windows become the document's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// Mean of the windows' logits.
    #[default]
    Mean,
    /// Element-wise maximum of the windows' logits.
    Max,
}

/// Aggregates window logits `[rows, k]` into document logits `[documents, k]`, where
/// `chunks[d]` consecutive rows belong to document `d`. Differentiable.
pub fn aggregate_chunks(logits: Tensor<2>, chunks: &[usize], how: Aggregate) -> Tensor<2> {
    let [rows, k] = logits.dims();
    debug_assert_eq!(chunks.iter().sum::<usize>(), rows);
    let device = logits.device();
    match how {
        Aggregate::Mean => {
            // A [documents, rows] averaging matrix.
            let mut w = vec![0f32; chunks.len() * rows];
            let mut start = 0;
            for (d, &n) in chunks.iter().enumerate() {
                for r in start..start + n {
                    w[d * rows + r] = 1.0 / n as f32;
                }
                start += n;
            }
            let w = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(w, [chunks.len(), rows]),
                &device,
            );
            w.matmul(logits)
        }
        Aggregate::Max => {
            let mut start = 0;
            let docs: Vec<Tensor<2>> = chunks
                .iter()
                .map(|&n| {
                    let m = logits.clone().slice([start..start + n, 0..k]).max_dim(0);
                    start += n;
                    m
                })
                .collect();
            Tensor::cat(docs, 0)
        }
    }
}

impl Aggregate {
    /// Aggregates one document's window logits on the host (`rows[w][k]`, at least one row):
    /// the same rule as [`aggregate_chunks`], for inference results already read back.
    pub fn rows(self, rows: &[Vec<f32>]) -> Vec<f32> {
        let n = rows.len();
        if n == 1 {
            return rows[0].clone();
        }
        let k = rows[0].len();
        match self {
            Aggregate::Mean => (0..k)
                .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / n as f32)
                .collect(),
            Aggregate::Max => (0..k)
                .map(|j| rows.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max))
                .collect(),
        }
    }
}

/// HF `problem_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// One class per example; cross-entropy.
    #[default]
    SingleLabelClassification,
    /// Any number of classes per example; BCE with logits.
    MultiLabelClassification,
    /// One real target (`num_labels` = 1); MSE.
    Regression,
}

/// A text classifier with optional metadata fusion: without a fusion head it is exactly the
/// HF model (`text`); with one, the fusion head reads `text`'s pooled vector and the metadata,
/// and `text`'s own final layer is not used. A SetFit model has a sentence head instead: it
/// reads a sentence embedding of `text`'s backbone, and `text`'s pooler and final layer are
/// not used.
#[derive(Module, Debug)]
pub struct Model {
    /// The HF sequence classifier (saved in HF layout).
    pub text: SequenceClassifier,
    /// The fusion head, when the model takes metadata.
    pub fusion: Option<FusionHead>,
    /// The sentence-embedding head of a SetFit model.
    pub sentence: Option<SentenceHead>,
}

impl Model {
    /// A text-only classifier.
    pub fn text_only(text: SequenceClassifier) -> Self {
        Self {
            text,
            fusion: None,
            sentence: None,
        }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        match (&self.sentence, &self.fusion) {
            (Some(s), _) => s.num_labels(),
            (None, Some(f)) => f.num_labels(),
            (None, None) => self.text.num_labels(),
        }
    }

    /// Logits for a batch.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
    /// - numeric: `[batch, numeric_width]`, categorical: `[batch, columns]` (used only with a
    ///   fusion head)
    /// - output: `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
        numeric: Option<Tensor<2>>,
        categorical: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        if let Some(s) = &self.sentence {
            let hidden = self
                .text
                .hidden(input_ids, token_type_ids, pad_mask.clone());
            return s.forward(hidden, pad_mask);
        }
        match &self.fusion {
            None => self.text.forward(input_ids, token_type_ids, pad_mask),
            Some(f) => f.forward(
                self.text.pooled(input_ids, token_type_ids, pad_mask),
                numeric,
                categorical,
            ),
        }
    }
}
