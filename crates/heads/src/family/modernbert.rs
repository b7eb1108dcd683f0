//! ModernBERT: `transformers.ModernBertForSequenceClassification`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, Linear};
use burn::tensor::{Bool, Device, Tensor};
use sequin_encoders::common::{dropout, first_token};
use sequin_encoders::modernbert::Pooling;
use sequin_encoders::{Activation, EncoderError, ModernBertConfig, ModernBertModel};

use super::{CheckpointKeys, Family, Inputs, zero_bias};

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
    type Config = ModernBertConfig;
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
    };

    fn check(config: &ModernBertConfig) -> Result<(), EncoderError> {
        config.plan().map(|_| ())
    }
    fn max_length(config: &ModernBertConfig) -> usize {
        config.max_position_embeddings
    }
    fn vocab_size(config: &ModernBertConfig) -> usize {
        config.vocab_size
    }
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
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// Pooling → `head` (dense → activation → norm). Token types are ignored: ModernBERT has
    /// none.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        let hidden = self.model.forward(x.ids, x.pad.clone());
        let pooled = match (self.pooling, x.pad) {
            (Pooling::Cls, _) => first_token(hidden),
            (Pooling::Mean, None) => hidden.mean_dim(1).squeeze_dim(1),
            (Pooling::Mean, Some(pad)) => masked_mean(hidden, pad),
        };
        let x = self.head.dense.forward(pooled);
        self.head.norm.forward(self.head.act.forward(x))
    }
    /// Dropout → `classifier`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.drop, pooled))
    }
}
