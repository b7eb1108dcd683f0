//! BERT: `transformers.BertForSequenceClassification`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor};
use sequin_encoders::common::dropout;
use sequin_encoders::{BertConfig, BertModel, EncoderError};

use super::{CheckpointKeys, Family, Inputs, zero_bias};

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
        let h = config.hidden_size;
        Self {
            bert,
            dropout: DropoutConfig::new(config.head_dropout()).init(),
            classifier: zero_bias(config.linear(h, num_labels, device), num_labels, device),
        }
    }
}

impl Family for BertForSequenceClassification {
    type Config = BertConfig;
    const MODEL_TYPES: &'static [(&'static str, &'static str)] =
        &[("bert", "BertForSequenceClassification")];
    const KEYS: CheckpointKeys = CheckpointKeys {
        prefix: "bert",
        base_roots: "embeddings|encoder|pooler",
        head: &["classifier."],
        head_rows: "classifier.weight",
        fresh_ok: &["bert.pooler."],
        ignored: &["cls."],
        bare_pooler_unused: false,
    };

    fn check(config: &BertConfig) -> Result<(), EncoderError> {
        config.validate().map(|_| ())
    }
    fn max_length(config: &BertConfig) -> usize {
        config.max_position_embeddings
    }
    fn vocab_size(config: &BertConfig) -> usize {
        config.vocab_size
    }
    fn init(config: &BertConfig, num_labels: usize, device: &Device) -> Result<Self, EncoderError> {
        Ok(Self::new(config.init(device)?, config, num_labels, device))
    }
    fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// The pooler output (dense + tanh on `[CLS]`).
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        self.bert.forward_pooled(x.ids, x.token_types, x.pad).1
    }
    /// Dropout → `classifier`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, pooled))
    }
}
