//! DistilBERT: `transformers.DistilBertForSequenceClassification`.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::relu;
use sequin_encoders::common::{dropout, first_token};
use sequin_encoders::{DistilBertConfig, DistilBertModel, EncoderError};

use super::{CheckpointKeys, Family, zero_bias};
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};

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

impl DistilBertForSequenceClassification {
    /// A fresh head on top of `distilbert`.
    pub fn new(
        distilbert: DistilBertModel,
        config: &DistilBertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Self {
        let d = config.dim;
        Self {
            distilbert,
            pre_classifier: zero_bias(config.linear(d, d, device), d, device),
            dropout: DropoutConfig::new(config.seq_classif_dropout).init(),
            classifier: zero_bias(config.linear(d, num_labels, device), num_labels, device),
        }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Token types are ignored: DistilBERT has none.
    ///
    /// # Shapes
    /// - input_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: logits `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classify(self.pooled(input_ids, pad_mask))
    }

    /// `relu(pre_classifier([CLS]))`: `[batch, seq]` → `[batch, dim]`.
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let x = first_token(self.distilbert.forward(input_ids, pad_mask));
        relu(self.pre_classifier.forward(x))
    }

    /// Dropout → `classifier`: `[batch, dim]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, pooled))
    }
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
        Ok(Self::new(config.init(device)?, config, num_labels, device))
    }
    fn num_labels(&self) -> usize {
        self.num_labels()
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// Token types are ignored: DistilBERT has none.
    fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        _token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.pooled(input_ids, pad_mask)
    }
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classify(pooled)
    }
}
