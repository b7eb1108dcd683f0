//! DistilBERT: `transformers.DistilBertForSequenceClassification`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use sequin_encoders::common::{dropout, first_token};
use sequin_encoders::{DistilBertConfig, DistilBertModel, EncoderError};

use super::{CheckpointKeys, Family, Inputs, zero_bias};

/// `transformers.DistilBertForSequenceClassification`: on `[CLS]`, `pre_classifier` → ReLU →
/// dropout (`seq_classif_dropout`) → `classifier`.
#[derive(Module, Debug)]
pub struct DistilBertForSequenceClassification {
    /// `distilbert`
    pub distilbert: DistilBertModel,
    /// `pre_classifier`
    pub pre_classifier: Linear,
    /// Dropout (`seq_classif_dropout`).
    pub dropout: Dropout,
    /// `classifier`
    pub classifier: Linear,
}

impl Family for DistilBertForSequenceClassification {
    type Config = DistilBertConfig;
    const MODEL_TYPES: &'static [(&'static str, &'static str)] =
        &[("distilbert", "DistilBertForSequenceClassification")];
    const KEYS: CheckpointKeys = CheckpointKeys {
        prefix: "distilbert",
        base_roots: "embeddings|transformer",
        head: &["pre_classifier.", "classifier."],
        head_rows: "classifier.weight",
        fresh_ok: &[],
        ignored: &["vocab_transform.", "vocab_layer_norm.", "vocab_projector."],
        bare_pooler_unused: false,
    };

    fn check(config: &DistilBertConfig) -> Result<(), EncoderError> {
        config.validate().map(|_| ())
    }
    fn max_length(config: &DistilBertConfig) -> usize {
        config.max_position_embeddings
    }
    fn vocab_size(config: &DistilBertConfig) -> usize {
        config.vocab_size
    }
    fn init(
        config: &DistilBertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        let d = config.dim;
        Ok(Self {
            distilbert: config.init(device)?,
            pre_classifier: zero_bias(config.linear(d, d, device), d, device),
            dropout: DropoutConfig::new(config.seq_classif_dropout).init(),
            classifier: zero_bias(config.linear(d, num_labels, device), num_labels, device),
        })
    }
    fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// `relu(pre_classifier([CLS]))`. Token types are ignored: DistilBERT has none.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        let hidden = self.distilbert.forward(x.ids, x.pad);
        relu(self.pre_classifier.forward(first_token(hidden)))
    }
    /// Dropout → `classifier`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, pooled))
    }
}
