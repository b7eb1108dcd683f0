//! The family registry's products in this crate: [`SequenceClassifier`], one variant per
//! family listed in [`sequin_encoders::for_each_family!`], and the backbone prefixes.
//!
//! A family (its backbone, its sequence classifier and its [`Family`] impl) is one file in
//! `sequin-encoders`; nothing here names a family.

pub use sequin_encoders::bert::BertForSequenceClassification;
pub use sequin_encoders::distilbert::DistilBertForSequenceClassification;
pub use sequin_encoders::family::{Backbone, CheckpointKeys, ConfigOf, Family, Inputs};
pub use sequin_encoders::for_each_family;
pub use sequin_encoders::longformer::LongformerForSequenceClassification;
pub use sequin_encoders::modernbert::{
    ModernBertForSequenceClassification, ModernBertPredictionHead,
};
pub use sequin_encoders::roberta::{RobertaClassificationHead, RobertaForSequenceClassification};

use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor};

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

            /// The backbone's last hidden state (what a sentence embedding pools).
            ///
            /// # Shapes
            /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
            /// - output: `[batch, seq, hidden]`
            pub fn hidden(
                &self,
                input_ids: Tensor<2, Int>,
                token_type_ids: Option<Tensor<2, Int>>,
                pad_mask: Option<Tensor<2, Bool>>,
            ) -> Tensor<3> {
                let x = Inputs::new(input_ids, token_type_ids, pad_mask);
                match self {
                    $(Self::$v(m) => Backbone::forward(Family::backbone(m), x),)*
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

sequin_encoders::for_each_family!(sequence_classifier);
