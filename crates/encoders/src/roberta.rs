//! RoBERTa (and XLM-RoBERTa, the same code), as `transformers`' `RobertaModel` and
//! `RobertaForSequenceClassification`, with the classification head Longformer shares.
//!
//! The architecture is BERT's, with two differences that matter for parity: position ids start
//! at `padding_idx + 1` and skip padding tokens, and sequence classification uses no pooler.
//! Checkpoint keys are BERT's under `roberta.`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Tensor};

use crate::EncoderError;
use crate::bert::{BertConfig, BertEmbeddings, BertEncoder};
use crate::common::{dropout, first_token};
use crate::family::{Backbone, CheckpointKeys, Family, Inputs, zero_bias};

/// RoBERTa's `config.json` has BERT's fields (`pad_token_id` is the padding index).
pub type RobertaConfig = BertConfig;

impl BertConfig {
    /// Builds a randomly initialised [`RobertaModel`] (no pooler).
    pub fn init_roberta(&self, device: &Device) -> Result<RobertaModel, EncoderError> {
        if self.max_position_embeddings <= self.pad_token_id.saturating_add(1) {
            return Err(EncoderError::Config(format!(
                "max_position_embeddings {} leaves no positions after padding_idx {}",
                self.max_position_embeddings, self.pad_token_id
            )));
        }
        let (embeddings, encoder) = self.init_parts(Some(self.pad_token_id), device)?;
        Ok(RobertaModel {
            embeddings,
            encoder,
        })
    }

    /// The longest input (special tokens included) RoBERTa's position table allows.
    pub fn roberta_max_length(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.pad_token_id.saturating_add(1))
    }
}

/// `transformers.RobertaModel` without its pooler (`add_pooling_layer=False`).
#[derive(Module, Debug)]
pub struct RobertaModel {
    /// `embeddings`
    pub embeddings: BertEmbeddings,
    /// `encoder`
    pub encoder: BertEncoder,
}

impl Backbone for RobertaModel {
    type Config = BertConfig;

    fn check(config: &BertConfig) -> Result<(), EncoderError> {
        config.validate().map(|_| ())
    }
    fn max_length(config: &BertConfig) -> usize {
        config.roberta_max_length()
    }
    fn vocab_size(config: &BertConfig) -> usize {
        config.vocab_size
    }
    fn init(config: &BertConfig, device: &Device) -> Result<Self, EncoderError> {
        config.init_roberta(device)
    }
    /// As BERT's (with RoBERTa's positions).
    fn forward(&self, x: Inputs) -> Tensor<3> {
        crate::bert::encode(&self.embeddings, &self.encoder, x)
    }
}

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
    type Backbone = RobertaModel;
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
        lora_targets: &["query", "value"],
    };

    fn init(config: &BertConfig, num_labels: usize, device: &Device) -> Result<Self, EncoderError> {
        Ok(Self {
            roberta: config.init_roberta(device)?,
            classifier: RobertaClassificationHead::new(config, num_labels, device),
        })
    }
    fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }

    fn backbone(&self) -> &Self::Backbone {
        &self.roberta
    }
    fn pooled_size(&self) -> usize {
        self.classifier.out_proj.weight.dims()[0]
    }
    /// `tanh(dense(<s>))`.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        self.classifier.pool(self.roberta.forward(x))
    }
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.classify(pooled)
    }
}
