//! DistilBERT, as `transformers`' `DistilBertModel`.
//!
//! No token types; config names of its own (`dim`, `n_layers`, `hidden_dim`, ...); attention
//! projections `q_lin/k_lin/v_lin/out_lin`; post-norm blocks with `sa_layer_norm` and
//! `output_layer_norm`. Checkpoint keys are spelt by the fields, under `distilbert.`.

#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::EncoderError;
use crate::common::{self, Activation};
use crate::family::{Backbone, CheckpointKeys, Family, Inputs, zero_bias};
use crate::fused;

fn d_act() -> String {
    "gelu".into()
}
fn d_drop() -> f64 {
    0.1
}
fn d_cls_drop() -> f64 {
    0.2
}
fn d_max_pos() -> usize {
    512
}
fn d_init() -> f64 {
    0.02
}

/// The architecture fields of a DistilBERT `config.json` (transformers' defaults when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistilBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub dim: usize,
    /// Number of layers.
    pub n_layers: usize,
    /// Number of attention heads.
    pub n_heads: usize,
    /// Feed-forward size.
    pub hidden_dim: usize,
    /// Feed-forward activation.
    #[serde(default = "d_act")]
    pub activation: String,
    /// Dropout on embeddings and sub-layer outputs.
    #[serde(default = "d_drop")]
    pub dropout: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "d_drop")]
    pub attention_dropout: f64,
    /// Dropout before the classifier.
    #[serde(default = "d_cls_drop")]
    pub seq_classif_dropout: f64,
    /// Number of position embeddings.
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    /// Std of the normal initialiser.
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: usize,
}

impl DistilBertConfig {
    /// Checks the values the model cannot run with.
    pub fn validate(&self) -> Result<Activation, EncoderError> {
        common::check_dropouts(&[
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("seq_classif_dropout", self.seq_classif_dropout),
        ])?;
        common::check_layers("n_layers", self.n_layers)?;
        if self.n_heads == 0 || !self.dim.is_multiple_of(self.n_heads) {
            return Err(EncoderError::Config(format!(
                "dim {} is not a multiple of n_heads {}",
                self.dim, self.n_heads
            )));
        }
        for (name, p) in [
            ("dropout", self.dropout),
            ("attention_dropout", self.attention_dropout),
            ("seq_classif_dropout", self.seq_classif_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(EncoderError::Config(format!(
                    "{name} must be in [0, 1), got {p}"
                )));
            }
        }
        Activation::from_hf(&self.activation)
    }

    /// A linear layer initialised as HF does.
    pub fn linear(&self, d_in: usize, d_out: usize, device: &Device) -> Linear {
        LinearConfig::new(d_in, d_out)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: self.initializer_range,
            })
            .init(device)
    }

    fn norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.dim)
            .with_epsilon(1e-12)
            .init(device)
    }

    /// Builds a randomly initialised [`DistilBertModel`].
    pub fn init(&self, device: &Device) -> Result<DistilBertModel, EncoderError> {
        let act = self.validate()?;
        let emb = |n| {
            EmbeddingConfig::new(n, self.dim)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: self.initializer_range,
                })
                .init(device)
        };
        let d = self.dim;
        let layer = (0..self.n_layers)
            .map(|_| TransformerBlock {
                attention: MultiHeadSelfAttention {
                    q_lin: self.linear(d, d, device),
                    k_lin: self.linear(d, d, device),
                    v_lin: self.linear(d, d, device),
                    out_lin: self.linear(d, d, device),
                    dropout: DropoutConfig::new(self.attention_dropout).init(),
                    n_heads: self.n_heads,
                },
                sa_layer_norm: self.norm(device),
                ffn: Ffn {
                    lin1: self.linear(d, self.hidden_dim, device),
                    lin2: self.linear(self.hidden_dim, d, device),
                    dropout: DropoutConfig::new(self.dropout).init(),
                    act,
                },
                output_layer_norm: self.norm(device),
            })
            .collect();
        Ok(DistilBertModel {
            embeddings: Embeddings {
                word_embeddings: emb(self.vocab_size),
                position_embeddings: emb(self.max_position_embeddings),
                LayerNorm: self.norm(device),
                dropout: DropoutConfig::new(self.dropout).init(),
            },
            transformer: Transformer { layer },
        })
    }
}

/// Word + position embeddings, LayerNorm, dropout.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// `embeddings.word_embeddings`
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings`
    pub position_embeddings: Embedding,
    /// `embeddings.LayerNorm`
    pub LayerNorm: LayerNorm,
    /// Dropout.
    pub dropout: Dropout,
}

/// `attention`: self-attention with its output projection.
#[derive(Module, Debug)]
pub struct MultiHeadSelfAttention {
    /// `q_lin`
    pub q_lin: Linear,
    /// `k_lin`
    pub k_lin: Linear,
    /// `v_lin`
    pub v_lin: Linear,
    /// `out_lin`
    pub out_lin: Linear,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub n_heads: usize,
}

/// `ffn`: lin1 → activation → lin2 → dropout.
#[derive(Module, Debug)]
pub struct Ffn {
    /// `lin1`
    pub lin1: Linear,
    /// `lin2`
    pub lin2: Linear,
    /// Dropout.
    pub dropout: Dropout,
    /// `activation`
    #[module(skip)]
    pub act: Activation,
}

/// `transformer.layer.N`
#[derive(Module, Debug)]
pub struct TransformerBlock {
    /// `attention`
    pub attention: MultiHeadSelfAttention,
    /// `sa_layer_norm`
    pub sa_layer_norm: LayerNorm,
    /// `ffn`
    pub ffn: Ffn,
    /// `output_layer_norm`
    pub output_layer_norm: LayerNorm,
}

/// `transformer`
#[derive(Module, Debug)]
pub struct Transformer {
    /// `transformer.layer.N`
    pub layer: Vec<TransformerBlock>,
}

/// `transformers.DistilBertModel`.
#[derive(Module, Debug)]
pub struct DistilBertModel {
    /// `embeddings`
    pub embeddings: Embeddings,
    /// `transformer`
    pub transformer: Transformer,
}

impl TransformerBlock {
    /// # Shapes
    /// - x: `[batch, seq, dim]`, pad_mask: `[batch, seq]` (true = pad)
    pub fn forward(&self, x: Tensor<3>, pad_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let a = &self.attention;
        let h = a.n_heads;
        let q = common::dense(&a.q_lin, x.clone());
        let k = common::dense(&a.k_lin, x.clone());
        let v = common::dense(&a.v_lin, x.clone());
        let ctx = common::multi_head_attention([q, k, v], h, pad_mask, &a.dropout);
        let sa = fused::dense_dropout_add_norm(&a.out_lin, ctx, None, x, &self.sa_layer_norm);
        let f = &self.ffn;
        let hidden = fused::dense_gelu(&f.lin1, f.act, sa.clone());
        fused::dense_dropout_add_norm(
            &f.lin2,
            hidden,
            Some(&f.dropout),
            sa,
            &self.output_layer_norm,
        )
    }
}

impl Backbone for DistilBertModel {
    type Config = DistilBertConfig;

    fn check(config: &DistilBertConfig) -> Result<(), EncoderError> {
        config.validate().map(|_| ())
    }
    fn max_length(config: &DistilBertConfig) -> usize {
        config.max_position_embeddings
    }
    fn vocab_size(config: &DistilBertConfig) -> usize {
        config.vocab_size
    }
    fn init(config: &DistilBertConfig, device: &Device) -> Result<Self, EncoderError> {
        config.init(device)
    }
    /// DistilBERT has no token types; they are ignored.
    fn forward(&self, x: Inputs) -> Tensor<3> {
        let [b, s] = x.ids.dims();
        let positions = Tensor::<1, Int>::arange(0..s as i64, &x.ids.device())
            .reshape([1, s])
            .expand([b, s]);
        let e = &self.embeddings;
        let h = e.word_embeddings.forward(x.ids) + e.position_embeddings.forward(positions);
        let mut h = common::dropout(&e.dropout, e.LayerNorm.forward(h));
        for layer in &self.transformer.layer {
            h = layer.forward(h, x.pad.clone());
        }
        h
    }
}

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
    type Backbone = DistilBertModel;
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
        lora_targets: &["q_lin", "v_lin"],
    };

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

    fn backbone(&self) -> &Self::Backbone {
        &self.distilbert
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// `relu(pre_classifier([CLS]))`. Token types are ignored: DistilBERT has none.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        let hidden = self.distilbert.forward(x);
        burn::tensor::activation::relu(self.pre_classifier.forward(common::first_token(hidden)))
    }
    /// Dropout → `classifier`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier
            .forward(common::dropout(&self.dropout, pooled))
    }
}
