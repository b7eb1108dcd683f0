//! BERT: `transformers.BertForSequenceClassification`.

use burn::nn::{Dropout, DropoutConfig, Linear};
use sequin_encoders::common::dropout;
use sequin_encoders::{BertConfig, BertModel, EncoderError};

use super::{CheckpointKeys, Family, zero_bias};
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};

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
        let classifier = zero_bias(
            config.linear(config.hidden_size, num_labels, device),
            num_labels,
            device,
        );
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
        self.classify(self.pooled(input_ids, token_type_ids, pad_mask))
    }

    /// The pooler output (dense + tanh on `[CLS]`): what the classifier reads.
    ///
    /// # Shapes
    /// - inputs `[batch, seq]` → `[batch, hidden]`
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.bert
            .forward_pooled(input_ids, token_type_ids, pad_mask)
            .1
    }

    /// Dropout → `classifier` on a pooled vector: `[batch, hidden]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, pooled))
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
        BertForSequenceClassification::init(config, num_labels, device)
    }
    fn num_labels(&self) -> usize {
        self.num_labels()
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.pooled(input_ids, token_type_ids, pad_mask)
    }
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classify(pooled)
    }
}
