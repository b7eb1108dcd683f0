//! Classification heads for sequin, each exactly as its `transformers` counterpart, plus the
//! losses of HF's three `problem_type`s.
//!
//! Heads return logits, never probabilities. This crate knows nothing of strings or files.

#![allow(non_snake_case)]

pub mod loss;

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Bool, Device, Int, Tensor};
use sequin_encoders::{BertConfig, BertModel, EncoderError};
use serde::{Deserialize, Serialize};

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

/// `transformers.BertForSequenceClassification`: pooler (dense + tanh on `[CLS]`), dropout
/// (`classifier_dropout`, else `hidden_dropout_prob`), linear → logits.
///
/// Field names give the HF checkpoint keys: `bert.*`, `classifier.*`.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification {
    /// `bert`: the encoder with its pooler.
    pub bert: BertModel,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// `classifier`
    pub classifier: Linear,
}

impl BertForSequenceClassification {
    /// A new classifier on top of `bert`, with a freshly initialised head (normal weights with
    /// `initializer_range`, zero bias, as transformers initialises it).
    pub fn new(bert: BertModel, config: &BertConfig, num_labels: usize, device: &Device) -> Self {
        let mut classifier = config.linear(config.hidden_size, num_labels, device);
        classifier.bias = Some(Param::from_tensor(Tensor::zeros([num_labels], device)));
        Self {
            bert,
            dropout: DropoutConfig::new(
                config
                    .classifier_dropout
                    .unwrap_or(config.hidden_dropout_prob),
            )
            .init(),
            classifier,
        }
    }

    /// Builds a randomly initialised model from a config.
    pub fn init(
        config: &BertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        Ok(Self::new(config.init(device)?, config, num_labels, device))
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - pad_mask: `[batch, seq]`, `true` = padding
    /// - output: logits `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let (_, pooled) = self
            .bert
            .forward_pooled(input_ids, token_type_ids, pad_mask);
        self.classifier
            .forward(sequin_encoders::common::dropout(&self.dropout, pooled))
    }
}
