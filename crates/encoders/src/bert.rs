//! BERT, as `transformers`' `BertModel` (post-norm encoder, absolute positions, pooler).
//!
//! Module fields carry the HF checkpoint names (`embeddings.word_embeddings`,
//! `encoder.layer.N.attention.output.LayerNorm`, ...), so a checkpoint loads with one remap:
//! `attention.self` is spelt `attention.self_attn`, since `self` is a Rust keyword.

#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::tanh;
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::EncoderError;
use crate::common::{self, Activation};
use crate::family::{Backbone, CheckpointKeys, Family, Inputs, zero_bias};
use crate::fused;

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_init_range() -> f64 {
    0.02
}
fn default_pos_type() -> String {
    "absolute".into()
}

/// The architecture fields of a BERT `config.json`. Unknown keys are ignored; missing optional
/// keys take the defaults of `transformers.BertConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Activation of the feed-forward (`gelu`, `gelu_new`, `relu`, ...).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout on embeddings and sub-layer outputs.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Number of position embeddings.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Number of token types.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Std of the normal initialiser.
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
    /// Only `absolute` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// Dropout before the classifier; falls back to `hidden_dropout_prob`.
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

impl BertConfig {
    /// Checks the values that the model cannot run with.
    pub fn validate(&self) -> Result<Activation, EncoderError> {
        common::check_dropouts(&[
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", self.classifier_dropout.unwrap_or(0.0)),
        ])?;
        common::check_layers("num_hidden_layers", self.num_hidden_layers)?;
        if self.pad_token_id >= self.vocab_size {
            return Err(EncoderError::Config(format!(
                "pad_token_id {} is outside the vocabulary of vocab_size {}",
                self.pad_token_id, self.vocab_size
            )));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(EncoderError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.position_embedding_type != "absolute" {
            return Err(EncoderError::Config(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            )));
        }
        for (name, p) in [
            ("hidden_dropout_prob", Some(self.hidden_dropout_prob)),
            (
                "attention_probs_dropout_prob",
                Some(self.attention_probs_dropout_prob),
            ),
            ("classifier_dropout", self.classifier_dropout),
        ] {
            if let Some(p) = p
                && !(0.0..1.0).contains(&p)
            {
                return Err(EncoderError::Config(format!(
                    "{name} must be in [0, 1), got {p}"
                )));
            }
        }
        Activation::from_hf(&self.hidden_act)
    }

    fn normal(&self) -> Initializer {
        Initializer::Normal {
            mean: 0.0,
            std: self.initializer_range,
        }
    }

    /// The dropout of a classification head: `classifier_dropout`, else
    /// `hidden_dropout_prob` (as transformers' heads).
    pub fn head_dropout(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// A linear layer initialised as HF does (normal with `initializer_range`).
    pub fn linear(&self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        LinearConfig::new(d_in, d_out)
            .with_initializer(self.normal())
            .init(device)
    }

    /// A LayerNorm with `layer_norm_eps`.
    pub fn layer_norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.hidden_size)
            .with_epsilon(self.layer_norm_eps)
            .init(device)
    }

    fn embedding(&self, n: usize, device: &Device) -> Embedding {
        EmbeddingConfig::new(n, self.hidden_size)
            .with_initializer(self.normal())
            .init(device)
    }

    /// Builds a randomly initialised [`BertModel`] (with pooler).
    pub fn init(&self, device: &Device) -> Result<BertModel, EncoderError> {
        let (embeddings, encoder) = self.init_parts(None, device)?;
        Ok(BertModel {
            embeddings,
            encoder,
            pooler: BertPooler {
                dense: self.linear(self.hidden_size, self.hidden_size, device),
            },
        })
    }

    /// Embeddings and encoder stack, shared by BERT and RoBERTa.
    pub(crate) fn init_parts(
        &self,
        padding_idx: Option<usize>,
        device: &Device,
    ) -> Result<(BertEmbeddings, BertEncoder), EncoderError> {
        let act = self.validate()?;
        let drop = DropoutConfig::new(self.hidden_dropout_prob).init();
        let h = self.hidden_size;
        let layer = (0..self.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attn: BertSelfAttention {
                        query: self.linear(h, h, device),
                        key: self.linear(h, h, device),
                        value: self.linear(h, h, device),
                        dropout: DropoutConfig::new(self.attention_probs_dropout_prob).init(),
                        num_attention_heads: self.num_attention_heads,
                    },
                    output: BertSelfOutput {
                        dense: self.linear(h, h, device),
                        LayerNorm: self.layer_norm(device),
                        dropout: drop.clone(),
                    },
                },
                intermediate: BertIntermediate {
                    dense: self.linear(h, self.intermediate_size, device),
                    act,
                },
                output: BertOutput {
                    dense: self.linear(self.intermediate_size, h, device),
                    LayerNorm: self.layer_norm(device),
                    dropout: drop.clone(),
                },
            })
            .collect();
        Ok((
            BertEmbeddings {
                word_embeddings: self.embedding(self.vocab_size, device),
                position_embeddings: self.embedding(self.max_position_embeddings, device),
                token_type_embeddings: self.embedding(self.type_vocab_size.max(1), device),
                LayerNorm: self.layer_norm(device),
                dropout: drop,
                padding_idx,
            },
            BertEncoder { layer },
        ))
    }
}

/// Word + position + token-type embeddings, then LayerNorm and dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `embeddings.word_embeddings`
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings`
    pub position_embeddings: Embedding,
    /// `embeddings.token_type_embeddings`
    pub token_type_embeddings: Embedding,
    /// `embeddings.LayerNorm`
    pub LayerNorm: LayerNorm,
    /// Dropout (`hidden_dropout_prob`).
    pub dropout: Dropout,
    /// How position ids are made: `None` counts from 0 (BERT); `Some(padding_idx)` counts
    /// from `padding_idx + 1` over non-padding tokens only (RoBERTa).
    pub padding_idx: Option<usize>,
}

impl BertEmbeddings {
    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        let [b, s] = input_ids.dims();
        let device = input_ids.device();
        let positions = match self.padding_idx {
            None => Tensor::<1, Int>::arange(0..s as i64, &device)
                .reshape([1, s])
                .expand([b, s]),
            // transformers' create_position_ids_from_input_ids
            Some(pad) => {
                let real = input_ids.clone().not_equal_elem(pad as i64).int();
                (real.clone().cumsum(1) * real).add_scalar(pad as i64)
            }
        };
        let types = token_type_ids.unwrap_or_else(|| Tensor::<2, Int>::zeros([b, s], &device));
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(types)
            + self.position_embeddings.forward(positions);
        common::dropout(&self.dropout, self.LayerNorm.forward(x))
    }
}

/// Multi-head self-attention projections (`attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// `query`
    pub query: Linear,
    /// `key`
    pub key: Linear,
    /// `value`
    pub value: Linear,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_attention_heads: usize,
}

impl BertSelfAttention {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, pad_mask: `[batch, seq]` (true = pad)
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let q = common::dense(&self.query, x.clone());
        let k = common::dense(&self.key, x.clone());
        let v = common::dense(&self.value, x);
        common::multi_head_attention([q, k, v], self.num_attention_heads, pad_mask, &self.dropout)
    }
}

/// Output projection + residual + LayerNorm after attention (`attention.output`).
#[derive(Module, Debug)]
pub struct BertSelfOutput {
    /// `dense`
    pub dense: Linear,
    /// `LayerNorm`
    pub LayerNorm: LayerNorm,
    /// Dropout (`hidden_dropout_prob`).
    pub dropout: Dropout,
}

impl BertSelfOutput {
    /// `LayerNorm(dropout(dense(attended)) + residual)`.
    pub fn forward(&self, attended: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        fused::dense_dropout_add_norm(
            &self.dense,
            attended,
            Some(&self.dropout),
            residual,
            &self.LayerNorm,
        )
    }
}

/// `attention`: self-attention then its output block.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self` in the checkpoint.
    pub self_attn: BertSelfAttention,
    /// `attention.output`
    pub output: BertSelfOutput,
}

/// `intermediate`: the first feed-forward projection and activation.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `dense`
    pub dense: Linear,
    /// `hidden_act`
    #[module(skip)]
    pub act: Activation,
}

impl BertIntermediate {
    /// `act(dense(x))`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        fused::dense_gelu(&self.dense, self.act, x)
    }
}

/// `output`: the second feed-forward projection + residual + LayerNorm.
#[derive(Module, Debug)]
pub struct BertOutput {
    /// `dense`
    pub dense: Linear,
    /// `LayerNorm`
    pub LayerNorm: LayerNorm,
    /// Dropout (`hidden_dropout_prob`).
    pub dropout: Dropout,
}

impl BertOutput {
    /// `LayerNorm(dropout(dense(intermediate)) + residual)`.
    pub fn forward(&self, intermediate: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        fused::dense_dropout_add_norm(
            &self.dense,
            intermediate,
            Some(&self.dropout),
            residual,
            &self.LayerNorm,
        )
    }
}

/// One post-norm transformer layer (`encoder.layer.N`).
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention`
    pub attention: BertAttention,
    /// `intermediate`
    pub intermediate: BertIntermediate,
    /// `output`
    pub output: BertOutput,
}

impl BertLayer {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, pad_mask: `[batch, seq]` (true = pad)
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let a = self.attention.self_attn.forward(x.clone(), pad_mask);
        let x = self.attention.output.forward(a, x);
        let i = self.intermediate.forward(x.clone());
        self.output.forward(i, x)
    }
}

/// The stack of layers (`encoder`).
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `encoder.layer.N`
    pub layer: Vec<BertLayer>,
}

impl BertEncoder {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, pad_mask: `[batch, seq]` (true = pad)
    pub fn forward(&self, mut x: Tensor<3>, pad_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        for layer in &self.layer {
            x = layer.forward(x, pad_mask.clone());
        }
        x
    }
}

/// `pooler`: dense + tanh on the first token.
#[derive(Module, Debug)]
pub struct BertPooler {
    /// `pooler.dense`
    pub dense: Linear,
}

impl BertPooler {
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]` → `[batch, hidden]`
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        tanh(self.dense.forward(common::first_token(hidden)))
    }
}

/// `transformers.BertModel`.
#[derive(Module, Debug)]
pub struct BertModel {
    /// `embeddings`
    pub embeddings: BertEmbeddings,
    /// `encoder`
    pub encoder: BertEncoder,
    /// `pooler`
    pub pooler: BertPooler,
}

/// Embeddings, then the layer stack: the body BERT and RoBERTa share.
pub(crate) fn encode(embeddings: &BertEmbeddings, encoder: &BertEncoder, x: Inputs) -> Tensor<3> {
    encoder.forward(embeddings.forward(x.ids, x.token_types), x.pad)
}

impl Backbone for BertModel {
    type Config = BertConfig;

    fn check(config: &BertConfig) -> Result<(), EncoderError> {
        config.validate().map(|_| ())
    }
    fn max_length(config: &BertConfig) -> usize {
        config.max_position_embeddings
    }
    fn vocab_size(config: &BertConfig) -> usize {
        config.vocab_size
    }
    fn init(config: &BertConfig, device: &Device) -> Result<Self, EncoderError> {
        config.init(device)
    }
    /// Embeddings, then the layer stack (the pooler is [`BertModel::forward_pooled`]'s).
    fn forward(&self, x: Inputs) -> Tensor<3> {
        encode(&self.embeddings, &self.encoder, x)
    }
}

impl BertModel {
    /// Runs the encoder and the pooler: `(last_hidden_state, pooler_output)`.
    ///
    /// # Shapes
    /// - inputs: `[batch, seq]`
    /// - output: `[batch, seq, hidden]` and `[batch, hidden]`
    pub fn forward_pooled(&self, x: Inputs) -> (Tensor<3>, Tensor<2>) {
        let hidden = Backbone::forward(self, x);
        let pooled = self.pooler.forward(hidden.clone());
        (hidden, pooled)
    }
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
        let h = config.hidden_size;
        Self {
            bert,
            dropout: DropoutConfig::new(config.head_dropout()).init(),
            classifier: zero_bias(config.linear(h, num_labels, device), num_labels, device),
        }
    }
}

impl Family for BertForSequenceClassification {
    type Backbone = BertModel;
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
        lora_targets: &["query", "value"],
    };

    fn init(config: &BertConfig, num_labels: usize, device: &Device) -> Result<Self, EncoderError> {
        Ok(Self::new(config.init(device)?, config, num_labels, device))
    }
    fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    fn backbone(&self) -> &Self::Backbone {
        &self.bert
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// The pooler output (dense + tanh on `[CLS]`).
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        self.bert.forward_pooled(x).1
    }
    /// Dropout → `classifier`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier
            .forward(common::dropout(&self.dropout, pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn tiny() -> BertConfig {
        serde_json::from_str(
            r#"{"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 16, "some_unknown_key": 1}"#,
        )
        .unwrap()
    }

    #[test]
    fn config_defaults_follow_transformers() {
        let c = tiny();
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.hidden_act, "gelu");
        assert_eq!(c.max_position_embeddings, 512);
        assert_eq!(c.classifier_dropout, None);
    }

    #[test]
    fn padding_does_not_change_real_tokens() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        let ids = Tensor::<2, Int>::from_data(TensorData::from([[2i64, 5, 6, 3]]), &device);
        let short = model.forward(Inputs::new(ids, None, None));
        let ids = Tensor::<2, Int>::from_data(TensorData::from([[2i64, 5, 6, 3, 0, 0]]), &device);
        let mask = Tensor::<2, Bool>::from_data(
            TensorData::from([[false, false, false, false, true, true]]),
            &device,
        );
        let padded = model
            .forward(Inputs::new(ids, None, Some(mask)))
            .slice([0..1, 0..4, 0..8]);
        short
            .into_data()
            .assert_approx_eq::<f32>(&padded.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }

    #[test]
    fn bad_heads_is_a_config_error() {
        let mut c = tiny();
        c.num_attention_heads = 3;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("num_attention_heads 3"), "{err}");
    }
}
