//! ModernBERT, as `transformers`' `ModernBertModel`: pre-norm layers without position
//! embeddings, rotary embeddings with separate global and local θ, local (sliding-window)
//! attention in all layers but every `global_attn_every_n_layers`-th, a gated MLP, bias flags
//! from the config and a final norm.
//!
//! Checkpoint keys (`model.embeddings.tok_embeddings`, `model.layers.N.attn.Wqkv`,
//! `model.layers.N.mlp.Wi`, `model.final_norm`) are the field names. Layer 0 has no
//! `attn_norm` (transformers uses an identity there).

#![allow(non_snake_case)]

use std::collections::BTreeMap;

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
    Linear, LinearConfig,
};
use burn::tensor::{Bool, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::EncoderError;
use crate::common::{self, Activation};
use crate::family::{Backbone, CheckpointKeys, Family, Inputs, zero_bias};

fn d_vocab() -> usize {
    50368
}
fn d_hidden() -> usize {
    768
}
fn d_inter() -> usize {
    1152
}
fn d_layers() -> usize {
    22
}
fn d_heads() -> usize {
    12
}
fn d_act() -> String {
    "gelu".into()
}
fn d_max_pos() -> usize {
    8192
}
fn d_init() -> f64 {
    0.02
}
fn d_eps() -> f64 {
    1e-5
}
fn d_pad() -> usize {
    50283
}
fn d_local() -> usize {
    128
}
fn d_true() -> bool {
    true
}
fn d_pooling() -> Pooling {
    Pooling::Cls
}
fn d_every() -> usize {
    3
}
fn d_global_theta() -> f64 {
    160_000.0
}
fn d_local_theta() -> f64 {
    10_000.0
}

/// `classifier_pooling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token's hidden state.
    Cls,
    /// The mean over real (non-padding) tokens.
    Mean,
}

/// Attention kind of one layer (`layer_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Attends to every token.
    FullAttention,
    /// Attends to tokens within `local_attention / 2`.
    SlidingAttention,
}

/// One entry of `rope_parameters` (transformers ≥ 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeParameters {
    /// Only `default` RoPE is supported.
    #[serde(default)]
    pub rope_type: Option<String>,
    /// θ.
    pub rope_theta: Option<f64>,
}

/// A ModernBERT `config.json`. Both spellings are read: transformers 4's
/// `global_attn_every_n_layers` / `global_rope_theta` / `local_rope_theta` and transformers 5's
/// `layer_types` / `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModernBertConfig {
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Hidden size.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Gated MLP size (`Wi` produces twice this).
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Number of layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// MLP activation.
    #[serde(default = "d_act")]
    pub hidden_activation: String,
    /// Longest input.
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    /// Std of the initialiser.
    #[serde(default = "d_init")]
    pub initializer_range: f64,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// Whether LayerNorms have a bias.
    #[serde(default)]
    pub norm_bias: bool,
    /// Padding token id.
    #[serde(default = "d_pad")]
    pub pad_token_id: usize,
    /// Whether `Wqkv` and `Wo` have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Dropout on attention probabilities and after `Wo`.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Per-layer attention kinds (transformers ≥ 5).
    #[serde(default)]
    pub layer_types: Option<Vec<LayerType>>,
    /// Every n-th layer (from 0) is global (transformers 4).
    #[serde(default = "d_every")]
    pub global_attn_every_n_layers: usize,
    /// θ per layer kind (transformers ≥ 5).
    #[serde(default)]
    pub rope_parameters: Option<BTreeMap<String, RopeParameters>>,
    /// θ of global layers (transformers 4).
    #[serde(default = "d_global_theta")]
    pub global_rope_theta: f64,
    /// θ of local layers (transformers 4); `null` means the global θ.
    #[serde(default)]
    pub local_rope_theta: Option<f64>,
    /// Total local window.
    #[serde(default = "d_local")]
    pub local_attention: usize,
    /// Dropout after the embedding norm.
    #[serde(default)]
    pub embedding_dropout: f64,
    /// Whether `Wi` and `Wo` have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Dropout inside the MLP.
    #[serde(default)]
    pub mlp_dropout: f64,
    /// `cls` or `mean`.
    #[serde(default = "d_pooling")]
    pub classifier_pooling: Pooling,
    /// Dropout before the classifier.
    #[serde(default)]
    pub classifier_dropout: f64,
    /// Whether `head.dense` has a bias.
    #[serde(default)]
    pub classifier_bias: bool,
    /// Activation of the head.
    #[serde(default = "d_act")]
    pub classifier_activation: String,
    /// Unused here; kept so a round trip preserves it.
    #[serde(default = "d_true")]
    pub decoder_bias: bool,
}

/// What each layer does, resolved from either config spelling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerPlan {
    /// Half window for local layers; `None` for global ones.
    pub one_sided: Option<usize>,
    /// Rotary θ.
    pub theta: f64,
}

impl ModernBertConfig {
    /// Checks the config and resolves each layer's attention window and θ.
    pub fn plan(&self) -> Result<Vec<LayerPlan>, EncoderError> {
        let err = |m: String| Err(EncoderError::Config(m));
        common::check_dropouts(&[
            ("attention_dropout", self.attention_dropout),
            ("embedding_dropout", self.embedding_dropout),
            ("mlp_dropout", self.mlp_dropout),
            ("classifier_dropout", self.classifier_dropout),
        ])?;
        common::check_layers("num_hidden_layers", self.num_hidden_layers)?;
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !(self.hidden_size / self.num_attention_heads).is_multiple_of(2)
        {
            return err(format!(
                "hidden_size {} must split into num_attention_heads {} heads of even size",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let types = match &self.layer_types {
            Some(t) => {
                if t.len() != self.num_hidden_layers {
                    return err(format!(
                        "layer_types has {} entries for {} layers",
                        t.len(),
                        self.num_hidden_layers
                    ));
                }
                t.clone()
            }
            None => {
                if self.global_attn_every_n_layers == 0 {
                    return err("global_attn_every_n_layers must be positive".into());
                }
                (0..self.num_hidden_layers)
                    .map(|i| {
                        if i % self.global_attn_every_n_layers == 0 {
                            LayerType::FullAttention
                        } else {
                            LayerType::SlidingAttention
                        }
                    })
                    .collect()
            }
        };
        let theta = |key: &str, fallback: f64| -> Result<f64, EncoderError> {
            match self.rope_parameters.as_ref().and_then(|m| m.get(key)) {
                None => Ok(fallback),
                Some(p) => {
                    if let Some(t) = p.rope_type.as_deref()
                        && t != "default"
                    {
                        return Err(EncoderError::Config(format!(
                            "rope_parameters.{key}.rope_type `{t}` is not supported (only `default`)"
                        )));
                    }
                    Ok(p.rope_theta.unwrap_or(fallback))
                }
            }
        };
        let global_theta = theta("full_attention", self.global_rope_theta)?;
        let local_theta = theta(
            "sliding_attention",
            self.local_rope_theta
                .unwrap_or(if self.rope_parameters.is_some() {
                    d_local_theta()
                } else {
                    self.global_rope_theta
                }),
        )?;
        if self.local_attention < 2 {
            return err(format!(
                "local_attention {} is too small",
                self.local_attention
            ));
        }
        for (name, p) in [
            ("attention_dropout", self.attention_dropout),
            ("embedding_dropout", self.embedding_dropout),
            ("mlp_dropout", self.mlp_dropout),
            ("classifier_dropout", self.classifier_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return err(format!("{name} must be in [0, 1), got {p}"));
            }
        }
        Activation::from_hf(&self.hidden_activation)?;
        Activation::from_hf(&self.classifier_activation)?;
        Ok(types
            .into_iter()
            .map(|t| match t {
                LayerType::FullAttention => LayerPlan {
                    one_sided: None,
                    theta: global_theta,
                },
                LayerType::SlidingAttention => LayerPlan {
                    one_sided: Some(self.local_attention / 2),
                    theta: local_theta,
                },
            })
            .collect())
    }

    /// A linear layer initialised with `initializer_range`.
    pub fn linear(&self, d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
        LinearConfig::new(d_in, d_out)
            .with_bias(bias)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: self.initializer_range,
            })
            .init(device)
    }

    /// A LayerNorm with `norm_eps` and `norm_bias`.
    pub fn norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.hidden_size)
            .with_epsilon(self.norm_eps)
            .with_bias(self.norm_bias)
            .init(device)
    }

    /// Builds a randomly initialised [`ModernBertModel`].
    pub fn init(&self, device: &Device) -> Result<ModernBertModel, EncoderError> {
        let plan = self.plan()?;
        let act = Activation::from_hf(&self.hidden_activation)?;
        let h = self.hidden_size;
        let layers = plan
            .iter()
            .enumerate()
            .map(|(i, p)| ModernBertLayer {
                attn_norm: (i > 0).then(|| self.norm(device)),
                attn: ModernBertAttention {
                    Wqkv: self.linear(h, 3 * h, self.attention_bias, device),
                    Wo: self.linear(h, h, self.attention_bias, device),
                    dropout: DropoutConfig::new(self.attention_dropout).init(),
                    num_attention_heads: self.num_attention_heads,
                    one_sided: p.one_sided,
                    theta: p.theta,
                },
                mlp_norm: self.norm(device),
                mlp: ModernBertMlp {
                    Wi: self.linear(h, 2 * self.intermediate_size, self.mlp_bias, device),
                    Wo: self.linear(self.intermediate_size, h, self.mlp_bias, device),
                    drop: DropoutConfig::new(self.mlp_dropout).init(),
                    act,
                },
            })
            .collect();
        Ok(ModernBertModel {
            embeddings: ModernBertEmbeddings {
                tok_embeddings: EmbeddingConfig::new(self.vocab_size, h)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: self.initializer_range,
                    })
                    .init(device),
                norm: self.norm(device),
                drop: DropoutConfig::new(self.embedding_dropout).init(),
            },
            layers,
            final_norm: self.norm(device),
        })
    }
}

/// `embeddings`: token embeddings, norm, dropout (no positions: RoPE gives them).
#[derive(Module, Debug)]
pub struct ModernBertEmbeddings {
    /// `tok_embeddings`
    pub tok_embeddings: Embedding,
    /// `norm`
    pub norm: LayerNorm,
    /// `embedding_dropout`
    pub drop: Dropout,
}

/// `attn`: fused QKV projection, rotary embeddings, global or local attention, `Wo`.
#[derive(Module, Debug)]
pub struct ModernBertAttention {
    /// `Wqkv`
    pub Wqkv: Linear,
    /// `Wo`
    pub Wo: Linear,
    /// Dropout on probabilities and after `Wo` (`attention_dropout`).
    pub dropout: Dropout,
    /// Number of heads.
    pub num_attention_heads: usize,
    /// Half window of a local layer; `None` = global.
    pub one_sided: Option<usize>,
    /// Rotary θ.
    pub theta: f64,
}

impl ModernBertAttention {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, pad: `[batch, seq]` (true = pad)
    pub fn forward(&self, x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let [b, n, hidden] = x.dims();
        let heads = self.num_attention_heads;
        let d = hidden / heads;
        let qkv = common::dense(&self.Wqkv, x).reshape([b, n, 3, heads, d]);
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i, 1)
                .reshape([b, n, heads, d])
                .swap_dims(1, 2)
        };
        let (cos, sin) = common::rotary_tables(n, d, self.theta, &pad.device());
        let q = common::apply_rotary(part(0), cos.clone(), sin.clone());
        let k = common::apply_rotary(part(1), cos, sin);
        let v = part(2);
        let out = match self.one_sided {
            None => common::attention(q, k, v, Some(pad), &self.dropout),
            Some(w) => common::sliding_window_attention(q, k, v, pad, w, None, &self.dropout),
        };
        common::dropout(
            &self.dropout,
            common::dense(&self.Wo, common::merge_heads(out)),
        )
    }
}

/// `mlp`: `Wo(drop(act(input) · gate))` where `[input, gate] = Wi(x)`.
#[derive(Module, Debug)]
pub struct ModernBertMlp {
    /// `Wi`
    pub Wi: Linear,
    /// `Wo`
    pub Wo: Linear,
    /// `mlp_dropout`
    pub drop: Dropout,
    /// `hidden_activation`
    #[module(skip)]
    pub act: Activation,
}

impl ModernBertMlp {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let y = common::dense(&self.Wi, x);
        let half = y.dims()[2] / 2;
        let input = y.clone().narrow(2, 0, half);
        let gate = y.narrow(2, half, half);
        common::dense(
            &self.Wo,
            common::dropout(&self.drop, self.act.forward(input) * gate),
        )
    }
}

/// One pre-norm layer (`layers.N`).
#[derive(Module, Debug)]
pub struct ModernBertLayer {
    /// `attn_norm` (absent in layer 0).
    pub attn_norm: Option<LayerNorm>,
    /// `attn`
    pub attn: ModernBertAttention,
    /// `mlp_norm`
    pub mlp_norm: LayerNorm,
    /// `mlp`
    pub mlp: ModernBertMlp,
}

impl ModernBertLayer {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`, pad: `[batch, seq]` (true = pad)
    pub fn forward(&self, x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let normed = match &self.attn_norm {
            Some(n) => n.forward(x.clone()),
            None => x.clone(),
        };
        let x = x + self.attn.forward(normed, pad);
        x.clone() + self.mlp.forward(self.mlp_norm.forward(x))
    }
}

/// `transformers.ModernBertModel`.
#[derive(Module, Debug)]
pub struct ModernBertModel {
    /// `embeddings`
    pub embeddings: ModernBertEmbeddings,
    /// `layers.N`
    pub layers: Vec<ModernBertLayer>,
    /// `final_norm`
    pub final_norm: LayerNorm,
}

impl Backbone for ModernBertModel {
    type Config = ModernBertConfig;

    fn check(config: &ModernBertConfig) -> Result<(), EncoderError> {
        config.plan().map(|_| ())
    }
    fn max_length(config: &ModernBertConfig) -> usize {
        config.max_position_embeddings
    }
    fn vocab_size(config: &ModernBertConfig) -> usize {
        config.vocab_size
    }
    fn init(config: &ModernBertConfig, device: &Device) -> Result<Self, EncoderError> {
        config.init(device)
    }
    /// Token types do not exist in ModernBERT; they are ignored.
    fn forward(&self, x: Inputs) -> Tensor<3> {
        let (input_ids, pad_mask) = (x.ids, x.pad);
        let [b, n] = input_ids.dims();
        let pad = pad_mask.unwrap_or_else(|| Tensor::full([b, n], false, &input_ids.device()));
        let e = &self.embeddings;
        let mut x = common::dropout(&e.drop, e.norm.forward(e.tok_embeddings.forward(input_ids)));
        for layer in &self.layers {
            x = layer.forward(x, pad.clone());
        }
        self.final_norm.forward(x)
    }
}

/// `ModernBertPredictionHead`: `dense` → activation → `norm`.
#[derive(Module, Debug)]
pub struct ModernBertPredictionHead {
    /// `head.dense` (bias per `classifier_bias`)
    pub dense: Linear,
    /// `head.norm`
    pub norm: LayerNorm,
    /// `classifier_activation`
    #[module(skip)]
    pub act: Activation,
}

/// `transformers.ModernBertForSequenceClassification`: pooling (`classifier_pooling`: the
/// first token or the masked mean), `head`, dropout (`classifier_dropout`), `classifier`.
#[derive(Module, Debug)]
pub struct ModernBertForSequenceClassification {
    /// `model`
    pub model: ModernBertModel,
    /// `head`
    pub head: ModernBertPredictionHead,
    /// Dropout before the classifier.
    pub drop: Dropout,
    /// `classifier`
    pub classifier: Linear,
    /// `classifier_pooling`
    #[module(skip)]
    pub pooling: Pooling,
}

/// The masked mean over real tokens: `[batch, seq, hidden]` → `[batch, hidden]`.
fn masked_mean(hidden: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<2> {
    let [b, n, h] = hidden.dims();
    let real = pad.bool_not().float().reshape([b, n, 1]);
    let sum = (hidden * real.clone().expand([b, n, h]))
        .sum_dim(1)
        .reshape([b, h]);
    sum / real.sum_dim(1).reshape([b, 1]).expand([b, h])
}

impl Family for ModernBertForSequenceClassification {
    type Backbone = ModernBertModel;
    const MODEL_TYPES: &'static [(&'static str, &'static str)] =
        &[("modernbert", "ModernBertForSequenceClassification")];
    // `head` (dense, act, norm) is shared with the masked-LM model and is loaded from it, as
    // transformers does; only `classifier` is the task head.
    const KEYS: CheckpointKeys = CheckpointKeys {
        prefix: "model",
        base_roots: "embeddings|layers|final_norm",
        head: &["classifier."],
        head_rows: "classifier.weight",
        fresh_ok: &["head."],
        ignored: &["decoder."],
        bare_pooler_unused: false,
        lora_targets: &["Wqkv"],
    };

    fn init(
        config: &ModernBertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        let h = config.hidden_size;
        Ok(Self {
            model: config.init(device)?,
            head: ModernBertPredictionHead {
                dense: config.linear(h, h, config.classifier_bias, device),
                norm: config.norm(device),
                act: Activation::from_hf(&config.classifier_activation)?,
            },
            drop: DropoutConfig::new(config.classifier_dropout).init(),
            classifier: zero_bias(
                config.linear(h, num_labels, true, device),
                num_labels,
                device,
            ),
            pooling: config.classifier_pooling,
        })
    }
    fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    fn backbone(&self) -> &Self::Backbone {
        &self.model
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// Pooling → `head` (dense → activation → norm). Token types are ignored: ModernBERT has
    /// none.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        let pad = x.pad.clone();
        let hidden = self.model.forward(x);
        let pooled = match (self.pooling, pad) {
            (Pooling::Cls, _) => common::first_token(hidden),
            (Pooling::Mean, None) => hidden.mean_dim(1).squeeze_dim(1),
            (Pooling::Mean, Some(pad)) => masked_mean(hidden, pad),
        };
        let x = self.head.dense.forward(pooled);
        self.head.norm.forward(self.head.act.forward(x))
    }
    /// Dropout → `classifier`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(common::dropout(&self.drop, pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_config_spellings_give_the_same_plan() {
        let old: ModernBertConfig = serde_json::from_str(
            r#"{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 4,
                "global_attn_every_n_layers": 2, "global_rope_theta": 1000.0,
                "local_rope_theta": 50.0, "local_attention": 6}"#,
        )
        .unwrap();
        let new: ModernBertConfig = serde_json::from_str(
            r#"{"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 4,
                "layer_types": ["full_attention", "sliding_attention", "full_attention", "sliding_attention"],
                "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}},
                "local_attention": 6}"#,
        )
        .unwrap();
        let plan = old.plan().unwrap();
        assert_eq!(plan, new.plan().unwrap());
        assert_eq!(
            plan[0],
            LayerPlan {
                one_sided: None,
                theta: 1000.0
            }
        );
        assert_eq!(
            plan[1],
            LayerPlan {
                one_sided: Some(3),
                theta: 50.0
            }
        );
    }

    #[test]
    fn padding_does_not_change_real_tokens() {
        let device = Device::flex();
        let c: ModernBertConfig = serde_json::from_str(
            r#"{"vocab_size": 30, "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 3,
                "intermediate_size": 12, "local_attention": 4, "pad_token_id": 0}"#,
        )
        .unwrap();
        let m = c.init(&device).unwrap();
        let ids = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<2, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(v, [1, n]),
                &device,
            )
        };
        let short = m.forward(Inputs::new(ids(vec![1, 5, 6, 7, 8, 9, 2]), None, None));
        let mut mask = vec![false; 7];
        mask.extend([true; 3]);
        let mask =
            Tensor::<2, Bool>::from_data(burn::tensor::TensorData::new(mask, [1, 10]), &device);
        let padded = m
            .forward(Inputs::new(
                ids(vec![1, 5, 6, 7, 8, 9, 2, 0, 0, 0]),
                None,
                Some(mask),
            ))
            .narrow(1, 0, 7);
        short
            .into_data()
            .assert_approx_eq::<f32>(&padded.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }
}
