//! The interface every encoder family implements: its backbone ([`Backbone`]) and its sequence
//! classifier ([`Family`]), both defined in the family's one file (`bert.rs`, `roberta.rs`,
//! ...), as transformers keeps `BertModel` and `BertForSequenceClassification` in
//! `modeling_bert.py`.
//!
//! The families are listed once, in [`for_each_family!`](crate::for_each_family). Everything
//! that dispatches on the family (`SequenceClassifier` in `sequin-heads`; `ArchConfig`,
//! loading and saving in `sequin-hf`; the layer groups of `sequin-train`) is generated from
//! that list, so adding a family never means editing a `match`.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::EncoderError;

/// How a family's checkpoints spell their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointKeys {
    /// The base model's prefix in classifier checkpoints (`bert`, `roberta`, ...).
    pub prefix: &'static str,
    /// Top-level module names of a bare base-model checkpoint (keys without the prefix), as a
    /// regex alternation.
    pub base_roots: &'static str,
    /// Key prefixes of the classification head.
    pub head: &'static [&'static str],
    /// The head tensor whose first dimension is the label count.
    pub head_rows: &'static str,
    /// Key prefixes that may be absent and are then initialised afresh (besides the head).
    pub fresh_ok: &'static [&'static str],
    /// Key prefixes that a classifier ignores (pretraining heads, poolers it does not use).
    pub ignored: &'static [&'static str],
    /// Whether a bare base-model checkpoint's `pooler.*` goes unused (the classifier has its
    /// own head on the first token).
    pub bare_pooler_unused: bool,
    /// The modules LoRA adapts by default, by PEFT's names for this family.
    pub lora_targets: &'static [&'static str],
}

/// A batch of token rows, as every family's backbone and classifier reads it.
///
/// # Shapes
/// - ids, token_types, pad (true = padding), global (true = global attention): `[batch, seq]`
pub struct Inputs {
    /// Token ids.
    pub ids: Tensor<2, Int>,
    /// Token type ids (ignored by families without them).
    pub token_types: Option<Tensor<2, Int>>,
    /// The pad mask, `true` = padding (burn's convention).
    pub pad: Option<Tensor<2, Bool>>,
    /// Tokens with global attention (Longformer; ignored by the others). `None`: the first
    /// token, as transformers' sequence classifiers do.
    pub global: Option<Tensor<2, Bool>>,
}

impl Inputs {
    /// The inputs of a batch (no global-attention mask).
    pub fn new(
        ids: Tensor<2, Int>,
        token_types: Option<Tensor<2, Int>>,
        pad: Option<Tensor<2, Bool>>,
    ) -> Self {
        Self {
            ids,
            token_types,
            pad,
            global: None,
        }
    }

    /// The same inputs with a global-attention mask.
    pub fn with_global(mut self, global: Option<Tensor<2, Bool>>) -> Self {
        self.global = global;
        self
    }
}

/// An encoder family's base model (`transformers.BertModel`, ...): token rows in, the last
/// hidden state out.
pub trait Backbone: Module + Sized {
    /// The architecture fields of `config.json` (a serde struct mirroring it).
    type Config: Clone + std::fmt::Debug + PartialEq + serde::de::DeserializeOwned;

    /// Checks a config beyond what serde checks (activations, sizes, windows).
    fn check(config: &Self::Config) -> Result<(), EncoderError>;
    /// The longest input, special tokens included, the position table allows.
    fn max_length(config: &Self::Config) -> usize;
    /// Rows of the word-embedding table.
    fn vocab_size(config: &Self::Config) -> usize;
    /// A backbone with freshly initialised weights.
    fn init(config: &Self::Config, device: &Device) -> Result<Self, EncoderError>;
    /// The last hidden state.
    ///
    /// # Shapes
    /// - inputs: `[batch, seq]`
    /// - output: `[batch, seq, hidden]`
    fn forward(&self, x: Inputs) -> Tensor<3>;
}

/// The config type of a family (its backbone's).
pub type ConfigOf<F> = <<F as Family>::Backbone as Backbone>::Config;

/// An encoder family's sequence classifier, exactly as transformers builds it.
///
/// `forward` = `classify(pooled(..))`; mixup and metadata fusion work between the two.
pub trait Family: Module + Sized {
    /// The base model under the head.
    type Backbone: Backbone;
    /// The `model_type`s this family reads, each with transformers' class name for its
    /// sequence classifier.
    const MODEL_TYPES: &'static [(&'static str, &'static str)];
    /// How its checkpoints spell their keys.
    const KEYS: CheckpointKeys;

    /// A classifier with freshly initialised weights (the head as transformers initialises
    /// it).
    fn init(
        config: &ConfigOf<Self>,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError>;
    /// Number of output logits.
    fn num_labels(&self) -> usize;
    /// The base model under the head (what a sentence embedding pools).
    fn backbone(&self) -> &Self::Backbone;
    /// Width of [`Family::pooled`].
    fn pooled_size(&self) -> usize;
    /// The vector the final layer reads: `[batch, seq]` inputs → `[batch, pooled_size]`.
    fn pooled(&self, x: Inputs) -> Tensor<2>;
    /// The final dropout and linear layer: `[batch, pooled_size]` → `[batch, num_labels]`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2>;

    /// Checks a config beyond what serde checks (the backbone's [`Backbone::check`]).
    fn check(config: &ConfigOf<Self>) -> Result<(), EncoderError> {
        <Self::Backbone as Backbone>::check(config)
    }
    /// The longest input the backbone's position table allows.
    fn max_length(config: &ConfigOf<Self>) -> usize {
        <Self::Backbone as Backbone>::max_length(config)
    }
    /// Rows of the backbone's word-embedding table.
    fn vocab_size(config: &ConfigOf<Self>) -> usize {
        <Self::Backbone as Backbone>::vocab_size(config)
    }

    /// Logits: `classify(pooled(..))`.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: `[batch, num_labels]`
    fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classify(self.pooled(Inputs::new(input_ids, token_type_ids, pad_mask)))
    }
}

/// A linear layer's bias set to zero, as transformers initialises a head.
pub(crate) fn zero_bias(mut l: Linear, n: usize, device: &Device) -> Linear {
    l.bias = Some(Param::from_tensor(Tensor::zeros([n], device)));
    l
}

/// The registry: calls the macro `$m` with every family as `Variant => Type`. The one place a
/// family is registered; everything that dispatches on the family is generated from it.
#[macro_export]
macro_rules! for_each_family {
    ($m:ident) => {
        $m! {
            Bert => $crate::bert::BertForSequenceClassification,
            Roberta => $crate::roberta::RobertaForSequenceClassification,
            DistilBert => $crate::distilbert::DistilBertForSequenceClassification,
            Longformer => $crate::longformer::LongformerForSequenceClassification,
            ModernBert => $crate::modernbert::ModernBertForSequenceClassification,
        }
    };
}
