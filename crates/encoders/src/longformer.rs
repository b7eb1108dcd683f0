//! Longformer, as `transformers`' `LongformerModel`: RoBERTa's embeddings and post-norm layers,
//! with sliding-window self-attention (a window per layer) and global attention through
//! separate `query_global` / `key_global` / `value_global` projections.
//!
//! Checkpoint keys are BERT's under `longformer.`, plus the three global projections in
//! `attention.self`. As transformers does, inputs are padded to a multiple of the largest
//! window (the padding is masked and cut off again).

#![allow(non_snake_case)]

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::EncoderError;
use crate::bert::{BertConfig, BertEmbeddings, BertIntermediate, BertOutput, BertSelfOutput};
use crate::common::{self, ExtraKeys};
use crate::family::{Backbone, CheckpointKeys, Family, Inputs};
use crate::roberta::RobertaClassificationHead;

/// `attention_window`: one even size for all layers, or one per layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttentionWindow {
    /// The same window in every layer.
    One(usize),
    /// A window per layer.
    PerLayer(Vec<usize>),
}

fn default_window() -> AttentionWindow {
    AttentionWindow::One(512)
}

/// A Longformer `config.json`: BERT's fields plus `attention_window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongformerConfig {
    /// The BERT-style fields (`pad_token_id` is the padding index, as in RoBERTa).
    #[serde(flatten)]
    pub bert: BertConfig,
    /// Total window (both sides) of each layer's local attention.
    #[serde(default = "default_window")]
    pub attention_window: AttentionWindow,
}

impl LongformerConfig {
    /// The window of each layer, checked: one per layer, even, positive.
    pub fn windows(&self) -> Result<Vec<usize>, EncoderError> {
        let n = self.bert.num_hidden_layers;
        let w = match &self.attention_window {
            AttentionWindow::One(w) => vec![*w; n],
            AttentionWindow::PerLayer(v) => v.clone(),
        };
        if w.len() != n {
            return Err(EncoderError::Config(format!(
                "attention_window has {} entries for {n} layers",
                w.len()
            )));
        }
        if let Some(bad) = w.iter().find(|&&x| x == 0 || x % 2 == 1) {
            return Err(EncoderError::Config(format!(
                "attention_window {bad} must be even and positive"
            )));
        }
        Ok(w)
    }

    /// Checks the values the model cannot run with.
    pub fn validate(&self) -> Result<(), EncoderError> {
        self.bert.validate()?;
        self.windows()?;
        Ok(())
    }

    /// The longest input (special tokens included) the position table allows.
    pub fn max_length(&self) -> usize {
        self.bert.roberta_max_length()
    }

    /// Builds a randomly initialised [`LongformerModel`].
    pub fn init(&self, device: &Device) -> Result<LongformerModel, EncoderError> {
        let windows = self.windows()?;
        let c = &self.bert;
        if c.max_position_embeddings <= c.pad_token_id.saturating_add(1) {
            return Err(EncoderError::Config(format!(
                "max_position_embeddings {} leaves no positions after padding_idx {}",
                c.max_position_embeddings, c.pad_token_id
            )));
        }
        let (embeddings, encoder) = c.init_parts(Some(c.pad_token_id), device)?;
        let h = c.hidden_size;
        let layer = encoder
            .layer
            .into_iter()
            .zip(&windows)
            .map(|(l, &w)| {
                let s = l.attention.self_attn;
                LongformerLayer {
                    attention: LongformerAttention {
                        self_attn: LongformerSelfAttention {
                            query: s.query,
                            key: s.key,
                            value: s.value,
                            query_global: c.linear(h, h, device),
                            key_global: c.linear(h, h, device),
                            value_global: c.linear(h, h, device),
                            dropout: DropoutConfig::new(c.attention_probs_dropout_prob).init(),
                            num_attention_heads: c.num_attention_heads,
                            one_sided: w / 2,
                        },
                        output: l.attention.output,
                    },
                    intermediate: l.intermediate,
                    output: l.output,
                }
            })
            .collect();
        Ok(LongformerModel {
            embeddings,
            encoder: LongformerEncoder { layer },
            pad_token_id: c.pad_token_id,
            window: windows.iter().copied().max().unwrap_or(2),
        })
    }
}

/// Which tokens attend globally, prepared once per batch for every layer.
#[derive(Debug, Clone)]
pub struct GlobalTokens {
    /// `[batch, slots, seq]`: row `g` of a batch row picks its `g`-th global token (zeros for
    /// unused slots).
    pub pick: Tensor<3>,
    /// `[batch, slots]`, `true` = unused slot.
    pub invalid: Tensor<2, Bool>,
    /// `[batch, seq, 1]`: 1 at global tokens.
    pub is_global: Tensor<3>,
    /// `[batch, seq]`: padding or global, the keys the sliding window leaves out.
    pub excluded: Tensor<2, Bool>,
    /// `[batch, seq]`, `true` = padding.
    pub pad: Tensor<2, Bool>,
}

impl GlobalTokens {
    /// From a global-attention mask (`true` = global; padding is never global).
    ///
    /// # Shapes
    /// - global, pad: `[batch, seq]`
    pub fn new(global: Tensor<2, Bool>, pad: Tensor<2, Bool>) -> Self {
        let [b, n] = global.dims();
        let device = global.device();
        let global = global.bool_and(pad.clone().bool_not());
        // Read as integers: backends store booleans differently (wgpu as u32).
        let flags: Vec<bool> = global
            .clone()
            .int()
            .into_data()
            .iter::<i64>()
            .map(|v| v != 0)
            .collect();
        let positions: Vec<Vec<usize>> = flags
            .chunks(n)
            .map(|row| (0..n).filter(|&j| row[j]).collect())
            .collect();
        let slots = positions.iter().map(Vec::len).max().unwrap_or(0);
        let mut pick = vec![0f32; b * slots * n];
        let mut invalid = vec![true; b * slots];
        for (bi, ps) in positions.iter().enumerate() {
            for (g, &j) in ps.iter().enumerate() {
                pick[(bi * slots + g) * n + j] = 1.0;
                invalid[bi * slots + g] = false;
            }
        }
        Self {
            pick: Tensor::from_data(TensorData::new(pick, [b, slots, n]), &device),
            invalid: Tensor::from_data(TensorData::new(invalid, [b, slots]), &device),
            is_global: global.clone().float().reshape([b, n, 1]),
            excluded: global.bool_or(pad.clone()),
            pad,
        }
    }

    /// Number of global slots (the most global tokens in any row).
    pub fn slots(&self) -> usize {
        self.pick.dims()[1]
    }
}

/// `attention.self`: local and global projections.
#[derive(Module, Debug)]
pub struct LongformerSelfAttention {
    /// `query`
    pub query: Linear,
    /// `key`
    pub key: Linear,
    /// `value`
    pub value: Linear,
    /// `query_global`
    pub query_global: Linear,
    /// `key_global`
    pub key_global: Linear,
    /// `value_global`
    pub value_global: Linear,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_attention_heads: usize,
    /// Half the layer's `attention_window`.
    pub one_sided: usize,
}

impl LongformerSelfAttention {
    /// Local tokens attend to their window and to the global tokens (ordinary projections);
    /// global tokens attend to every real token through the global projections.
    ///
    /// # Shapes
    /// - x: `[batch, seq, hidden]` → `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, g: &GlobalTokens) -> Tensor<3> {
        let h = self.num_attention_heads;
        let [b, n, hidden] = x.dims();
        let q = common::split_heads(common::dense(&self.query, x.clone()), h);
        let k = common::dense(&self.key, x.clone());
        let v = common::dense(&self.value, x.clone());
        let slots = g.slots();
        let extra = (slots > 0).then(|| ExtraKeys {
            k: common::split_heads(g.pick.clone().matmul(k.clone()), h),
            v: common::split_heads(g.pick.clone().matmul(v.clone()), h),
            invalid: g.invalid.clone(),
        });
        let local = common::merge_heads(common::sliding_window_attention(
            q,
            common::split_heads(k, h),
            common::split_heads(v, h),
            g.excluded.clone(),
            self.one_sided,
            extra,
            &self.dropout,
        ));
        if slots == 0 {
            return local;
        }
        // Global rows: their own projections, over every non-padding key.
        let xg = g.pick.clone().matmul(x.clone()); // [b, slots, hidden]
        let qg = common::split_heads(common::dense(&self.query_global, xg), h);
        let kg = common::split_heads(common::dense(&self.key_global, x.clone()), h);
        let vg = common::split_heads(common::dense(&self.value_global, x), h);
        let out = common::merge_heads(common::attention(
            qg,
            kg,
            vg,
            Some(g.pad.clone()),
            &self.dropout,
        )); // [b, slots, hidden]
        let scattered = g.pick.clone().swap_dims(1, 2).matmul(out); // [b, n, hidden]
        let keep = g
            .is_global
            .clone()
            .neg()
            .add_scalar(1.0)
            .expand([b, n, hidden]);
        local * keep + scattered
    }
}

/// `attention`: self-attention then its output block.
#[derive(Module, Debug)]
pub struct LongformerAttention {
    /// `attention.self` in the checkpoint.
    pub self_attn: LongformerSelfAttention,
    /// `attention.output`
    pub output: BertSelfOutput,
}

/// One post-norm layer (`encoder.layer.N`).
#[derive(Module, Debug)]
pub struct LongformerLayer {
    /// `attention`
    pub attention: LongformerAttention,
    /// `intermediate`
    pub intermediate: BertIntermediate,
    /// `output`
    pub output: BertOutput,
}

impl LongformerLayer {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, g: &GlobalTokens) -> Tensor<3> {
        let a = self.attention.self_attn.forward(x.clone(), g);
        let x = self.attention.output.forward(a, x);
        let i = self.intermediate.forward(x.clone());
        self.output.forward(i, x)
    }
}

/// The stack of layers (`encoder`).
#[derive(Module, Debug)]
pub struct LongformerEncoder {
    /// `encoder.layer.N`
    pub layer: Vec<LongformerLayer>,
}

/// `transformers.LongformerModel` without its pooler (`add_pooling_layer=False`).
#[derive(Module, Debug)]
pub struct LongformerModel {
    /// `embeddings`
    pub embeddings: BertEmbeddings,
    /// `encoder`
    pub encoder: LongformerEncoder,
    /// Token id used to pad inputs to a multiple of the window.
    pub pad_token_id: usize,
    /// The largest window: inputs are padded to a multiple of it.
    pub window: usize,
}

impl Backbone for LongformerModel {
    type Config = LongformerConfig;

    fn check(config: &LongformerConfig) -> Result<(), EncoderError> {
        config.validate()
    }
    fn max_length(config: &LongformerConfig) -> usize {
        config.max_length()
    }
    fn vocab_size(config: &LongformerConfig) -> usize {
        config.bert.vocab_size
    }
    fn init(config: &LongformerConfig, device: &Device) -> Result<Self, EncoderError> {
        config.init(device)
    }
    /// Runs the encoder. `x.global` marks the tokens with global attention (`true`); `None`
    /// gives it to the first token only, as `LongformerForSequenceClassification` does.
    fn forward(&self, x: Inputs) -> Tensor<3> {
        let Inputs {
            ids: input_ids,
            token_types: token_type_ids,
            pad: pad_mask,
            global: global_mask,
        } = x;
        let [b, n] = input_ids.dims();
        let device = input_ids.device();
        let pad_mask = pad_mask.unwrap_or_else(|| Tensor::full([b, n], false, &device));
        let global_mask = global_mask.unwrap_or_else(|| {
            Tensor::cat(
                vec![
                    Tensor::<2, Bool>::full([b, 1], true, &device),
                    Tensor::full([b, n - 1], false, &device),
                ],
                1,
            )
        });
        let extra = (self.window - n % self.window) % self.window;
        let (ids, types, pad, global) = if extra == 0 {
            (input_ids, token_type_ids, pad_mask, global_mask)
        } else {
            (
                Tensor::cat(
                    vec![
                        input_ids,
                        Tensor::full([b, extra], self.pad_token_id as i64, &device),
                    ],
                    1,
                ),
                token_type_ids.map(|t| Tensor::cat(vec![t, Tensor::zeros([b, extra], &device)], 1)),
                Tensor::cat(vec![pad_mask, Tensor::full([b, extra], true, &device)], 1),
                Tensor::cat(
                    vec![global_mask, Tensor::full([b, extra], false, &device)],
                    1,
                ),
            )
        };
        let g = GlobalTokens::new(global, pad);
        let mut x = self.embeddings.forward(ids, types);
        for layer in &self.encoder.layer {
            x = layer.forward(x, &g);
        }
        x.narrow(1, 0, n)
    }
}

/// `transformers.LongformerForSequenceClassification`: RoBERTa's head on `<s>`, with global
/// attention on `<s>` unless the caller gives a global-attention mask.
#[derive(Module, Debug)]
pub struct LongformerForSequenceClassification {
    /// `longformer`: the encoder, without pooler.
    pub longformer: LongformerModel,
    /// `classifier`
    pub classifier: RobertaClassificationHead,
}

impl LongformerForSequenceClassification {
    /// Logits with a caller-given global-attention mask (`None`: the first token).
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad), global_mask (true = global):
    ///   `[batch, seq]`
    /// - output: logits `[batch, num_labels]`
    pub fn forward_with_global(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
        global_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let x = Inputs::new(input_ids, token_type_ids, pad_mask).with_global(global_mask);
        self.classifier.forward(self.longformer.forward(x))
    }
}

impl Family for LongformerForSequenceClassification {
    type Backbone = LongformerModel;
    const MODEL_TYPES: &'static [(&'static str, &'static str)] =
        &[("longformer", "LongformerForSequenceClassification")];
    const KEYS: CheckpointKeys = CheckpointKeys {
        prefix: "longformer",
        base_roots: "embeddings|encoder|pooler",
        head: &["classifier."],
        head_rows: "classifier.out_proj.weight",
        fresh_ok: &[],
        ignored: &["lm_head.", "longformer.pooler."],
        bare_pooler_unused: true,
        lora_targets: &["query", "value"],
    };

    fn init(
        config: &LongformerConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        Ok(Self {
            longformer: config.init(device)?,
            classifier: RobertaClassificationHead::new(&config.bert, num_labels, device),
        })
    }
    fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }

    fn backbone(&self) -> &Self::Backbone {
        &self.longformer
    }
    fn pooled_size(&self) -> usize {
        self.classifier.out_proj.weight.dims()[0]
    }
    /// With global attention on the first token, unless `x.global` says otherwise.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        self.classifier.pool(self.longformer.forward(x))
    }
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.classify(pooled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(window: &str) -> LongformerConfig {
        serde_json::from_str(&format!(
            r#"{{"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 2, "pad_token_id": 1,
                "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 64,
                "attention_window": {window}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn windows_per_layer_are_checked() {
        assert_eq!(tiny("4").windows().unwrap(), vec![4, 4]);
        assert_eq!(tiny("[2, 6]").windows().unwrap(), vec![2, 6]);
        assert!(tiny("[2]").windows().is_err());
        assert!(
            tiny("3")
                .windows()
                .unwrap_err()
                .to_string()
                .contains("even")
        );
    }

    #[test]
    fn padding_does_not_change_real_tokens() {
        let device = Device::flex();
        let model = tiny("[2, 4]").init(&device).unwrap();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::from([[0i64, 5, 6, 7, 8, 9, 2]]), &device);
        let short = model.forward(Inputs::new(ids, None, None));
        let ids = Tensor::<2, Int>::from_data(
            TensorData::from([[0i64, 5, 6, 7, 8, 9, 2, 1, 1]]),
            &device,
        );
        let mask = Tensor::<2, Bool>::from_data(
            TensorData::from([[false, false, false, false, false, false, false, true, true]]),
            &device,
        );
        let padded = model
            .forward(Inputs::new(ids, None, Some(mask)))
            .narrow(1, 0, 7);
        short
            .into_data()
            .assert_approx_eq::<f32>(&padded.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }
}
