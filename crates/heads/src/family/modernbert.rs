//! ModernBERT: `transformers.ModernBertForSequenceClassification`.

use burn::nn::{Dropout, DropoutConfig, LayerNorm, Linear};
use sequin_encoders::common::{dropout, first_token};
use sequin_encoders::modernbert::Pooling;
use sequin_encoders::{Activation, EncoderError, ModernBertConfig, ModernBertModel};

use super::{CheckpointKeys, Family, zero_bias};
use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};

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

impl ModernBertForSequenceClassification {
    /// A fresh head (and prediction head) on top of `model`.
    pub fn new(
        model: ModernBertModel,
        config: &ModernBertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        let h = config.hidden_size;
        Ok(Self {
            model,
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

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

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

    /// Dropout → `classifier`: `[batch, hidden]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.drop, pooled))
    }

    /// Pooling → `head` (dense → activation → norm): `[batch, seq]` → `[batch, hidden]`.
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let hidden = self.model.forward(input_ids, pad_mask.clone());
        let pooled = match (self.pooling, pad_mask) {
            (Pooling::Cls, _) => first_token(hidden),
            (Pooling::Mean, None) => hidden.mean_dim(1).squeeze_dim(1),
            (Pooling::Mean, Some(pad)) => {
                let [b, n, h] = hidden.dims();
                let real = pad.bool_not().float().reshape([b, n, 1]);
                let sum = (hidden * real.clone().expand([b, n, h]))
                    .sum_dim(1)
                    .reshape([b, h]);
                sum / real.sum_dim(1).reshape([b, 1]).expand([b, h])
            }
        };
        let x = self.head.dense.forward(pooled);
        self.head.norm.forward(self.head.act.forward(x))
    }
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
        Self::new(config.init(device)?, config, num_labels, device)
    }
    fn num_labels(&self) -> usize {
        self.num_labels()
    }
    fn pooled_size(&self) -> usize {
        self.classifier.weight.dims()[0]
    }
    /// Token types are ignored: ModernBERT has none.
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
