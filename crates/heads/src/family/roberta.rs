//! RoBERTa and XLM-RoBERTa: `transformers.RobertaForSequenceClassification`; also the
//! classification head Longformer shares.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Tensor};
use sequin_encoders::common::{dropout, first_token};
use sequin_encoders::{BertConfig, EncoderError, RobertaModel};

use super::{CheckpointKeys, Family, Inputs, zero_bias};

/// `RobertaClassificationHead`: on `<s>`, dropout → `dense` → tanh → dropout → `out_proj`.
#[derive(Module, Debug)]
pub struct RobertaClassificationHead {
    /// `classifier.dense`
    pub dense: Linear,
    /// Dropout (`classifier_dropout`, else `hidden_dropout_prob`), used twice.
    pub dropout: Dropout,
    /// `classifier.out_proj`
    pub out_proj: Linear,
}

impl RobertaClassificationHead {
    /// A fresh head (as transformers initialises it).
    pub fn new(config: &BertConfig, num_labels: usize, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            dense: zero_bias(config.linear(h, h, device), h, device),
            dropout: DropoutConfig::new(config.head_dropout()).init(),
            out_proj: zero_bias(config.linear(h, num_labels, device), num_labels, device),
        }
    }

    /// On the first token: dropout → `dense` → tanh.
    ///
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]` → `[batch, hidden]`
    pub fn pool(&self, hidden: Tensor<3>) -> Tensor<2> {
        let x = first_token(hidden);
        tanh(self.dense.forward(dropout(&self.dropout, x)))
    }

    /// Dropout → `out_proj`: `[batch, hidden]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.out_proj.forward(dropout(&self.dropout, pooled))
    }

    /// `classify(pool(hidden))`: `[batch, seq, hidden]` → logits `[batch, num_labels]`.
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        self.classify(self.pool(hidden))
    }
}

/// `transformers.RobertaForSequenceClassification` (also XLM-RoBERTa's).
#[derive(Module, Debug)]
pub struct RobertaForSequenceClassification {
    /// `roberta`: the encoder, without pooler.
    pub roberta: RobertaModel,
    /// `classifier`
    pub classifier: RobertaClassificationHead,
}

impl Family for RobertaForSequenceClassification {
    type Config = BertConfig;
    const MODEL_TYPES: &'static [(&'static str, &'static str)] = &[
        ("roberta", "RobertaForSequenceClassification"),
        ("xlm-roberta", "XLMRobertaForSequenceClassification"),
    ];
    const KEYS: CheckpointKeys = CheckpointKeys {
        prefix: "roberta",
        base_roots: "embeddings|encoder|pooler",
        head: &["classifier."],
        head_rows: "classifier.out_proj.weight",
        fresh_ok: &[],
        ignored: &["lm_head.", "roberta.pooler."],
        bare_pooler_unused: true,
    };

    fn check(config: &BertConfig) -> Result<(), EncoderError> {
        config.validate().map(|_| ())
    }
    fn max_length(config: &BertConfig) -> usize {
        config.roberta_max_length()
    }
    fn vocab_size(config: &BertConfig) -> usize {
        config.vocab_size
    }
    fn init(config: &BertConfig, num_labels: usize, device: &Device) -> Result<Self, EncoderError> {
        Ok(Self {
            roberta: config.init_roberta(device)?,
            classifier: RobertaClassificationHead::new(config, num_labels, device),
        })
    }
    fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }
    fn pooled_size(&self) -> usize {
        self.classifier.out_proj.weight.dims()[0]
    }
    /// `tanh(dense(<s>))`.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        let hidden = self.roberta.forward(x.ids, x.token_types, x.pad);
        self.classifier.pool(hidden)
    }
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.classify(pooled)
    }
}
