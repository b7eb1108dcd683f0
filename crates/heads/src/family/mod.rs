//! The family registry: every supported encoder family behind one interface, [`Family`], and
//! listed once, in [`for_each_family!`](crate::for_each_family).
//!
//! A family is its backbone (a file in `sequin-encoders`) and its sequence classifier (a file
//! here) that implements [`Family`]: the config it reads from `config.json`, the
//! `model_type`s it answers to, how its checkpoints spell their keys, and its head split into
//! `pooled` and `classify`. Everything that dispatches on the family (the
//! [`SequenceClassifier`] enum here; `ArchConfig`, loading and saving in `sequin-hf`; the
//! layer groups of `sequin-train`) is generated from the registry, so adding a family never
//! means editing a `match`.

mod bert;
mod distilbert;
mod longformer;
mod modernbert;
mod roberta;

pub use bert::BertForSequenceClassification;
pub use distilbert::DistilBertForSequenceClassification;
pub use longformer::LongformerForSequenceClassification;
pub use modernbert::{ModernBertForSequenceClassification, ModernBertPredictionHead};
pub use roberta::{RobertaClassificationHead, RobertaForSequenceClassification};

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Bool, Device, Int, Tensor};
use sequin_encoders::EncoderError;

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
}

/// A batch of token rows, as every family's classifier reads it.
///
/// # Shapes
/// - ids, token_types, pad (true = padding): `[batch, seq]`
pub struct Inputs {
    /// Token ids.
    pub ids: Tensor<2, Int>,
    /// Token type ids (ignored by families without them).
    pub token_types: Option<Tensor<2, Int>>,
    /// The pad mask, `true` = padding (burn's convention).
    pub pad: Option<Tensor<2, Bool>>,
}

impl Inputs {
    /// The inputs of a batch.
    pub fn new(
        ids: Tensor<2, Int>,
        token_types: Option<Tensor<2, Int>>,
        pad: Option<Tensor<2, Bool>>,
    ) -> Self {
        Self {
            ids,
            token_types,
            pad,
        }
    }
}

/// An encoder family's sequence classifier, exactly as transformers builds it.
///
/// `forward` = `classify(pooled(..))`; mixup and metadata fusion work between the two.
pub trait Family: Module + Sized {
    /// The architecture fields of `config.json` (a serde struct mirroring it).
    type Config: Clone + std::fmt::Debug + PartialEq + serde::de::DeserializeOwned;
    /// The `model_type`s this family reads, each with transformers' class name for its
    /// sequence classifier.
    const MODEL_TYPES: &'static [(&'static str, &'static str)];
    /// How its checkpoints spell their keys.
    const KEYS: CheckpointKeys;

    /// Checks a config beyond what serde checks (activations, sizes, windows).
    fn check(config: &Self::Config) -> Result<(), EncoderError>;
    /// The longest input, special tokens included, the position table allows.
    fn max_length(config: &Self::Config) -> usize;
    /// Rows of the word-embedding table.
    fn vocab_size(config: &Self::Config) -> usize;
    /// A classifier with freshly initialised weights (the head as transformers initialises
    /// it).
    fn init(
        config: &Self::Config,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError>;
    /// Number of output logits.
    fn num_labels(&self) -> usize;
    /// Width of [`Family::pooled`].
    fn pooled_size(&self) -> usize;
    /// The vector the final layer reads: `[batch, seq]` inputs → `[batch, pooled_size]`.
    fn pooled(&self, x: Inputs) -> Tensor<2>;
    /// The final dropout and linear layer: `[batch, pooled_size]` → `[batch, num_labels]`.
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2>;

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
            Bert => $crate::BertForSequenceClassification,
            Roberta => $crate::RobertaForSequenceClassification,
            DistilBert => $crate::DistilBertForSequenceClassification,
            Longformer => $crate::LongformerForSequenceClassification,
            ModernBert => $crate::ModernBertForSequenceClassification,
        }
    };
}

macro_rules! sequence_classifier {
    ($($v:ident => $t:ty),* $(,)?) => {
        /// Any supported family's sequence classifier (one variant per registered family).
        #[derive(Module, Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum SequenceClassifier {
            $(
                #[allow(missing_docs)]
                $v($t),
            )*
        }

        impl SequenceClassifier {
            /// Number of output logits.
            pub fn num_labels(&self) -> usize {
                match self {
                    $(Self::$v(m) => Family::num_labels(m),)*
                }
            }

            /// Logits for a batch: `classify(pooled(..))`.
            ///
            /// # Shapes
            /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
            /// - output: `[batch, num_labels]`
            pub fn forward(
                &self,
                input_ids: Tensor<2, Int>,
                token_type_ids: Option<Tensor<2, Int>>,
                pad_mask: Option<Tensor<2, Bool>>,
            ) -> Tensor<2> {
                self.classify(self.pooled(input_ids, token_type_ids, pad_mask))
            }

            /// The pooled text vector that the final linear layer reads (see
            /// [`Family::pooled`]).
            pub fn pooled(
                &self,
                input_ids: Tensor<2, Int>,
                token_type_ids: Option<Tensor<2, Int>>,
                pad_mask: Option<Tensor<2, Bool>>,
            ) -> Tensor<2> {
                let x = Inputs::new(input_ids, token_type_ids, pad_mask);
                match self {
                    $(Self::$v(m) => Family::pooled(m, x),)*
                }
            }

            /// The final dropout and linear layer on a pooled vector.
            pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
                match self {
                    $(Self::$v(m) => Family::classify(m, pooled),)*
                }
            }

            /// Width of [`Self::pooled`].
            pub fn pooled_size(&self) -> usize {
                match self {
                    $(Self::$v(m) => Family::pooled_size(m),)*
                }
            }

            /// How this family's checkpoints spell their keys.
            pub fn keys(&self) -> &'static CheckpointKeys {
                match self {
                    $(Self::$v(_) => &<$t as Family>::KEYS,)*
                }
            }
        }

        /// The base-model prefixes of every family's checkpoints (`bert`, `roberta`, ...):
        /// the module names under which a classifier keeps its backbone.
        pub fn backbone_prefixes() -> Vec<&'static str> {
            vec![$(<$t as Family>::KEYS.prefix),*]
        }
    };
}

crate::for_each_family!(sequence_classifier);
