//! Sentence embeddings and the SetFit head: a sentence-transformers pooling of the backbone's
//! last hidden state (mean, CLS or max over real tokens), L2-normalised when the
//! sentence-transformers pipeline has a `Normalize` module, and a linear layer on top (the
//! logistic regression SetFit fits on the frozen embeddings).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Bool, Device, Tensor};
use serde::{Deserialize, Serialize};

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SentencePooling {
    /// The mean of the real tokens' vectors (`pooling_mode_mean_tokens`).
    #[default]
    Mean,
    /// The first token's vector (`pooling_mode_cls_token`).
    Cls,
    /// The element-wise maximum over the real tokens (`pooling_mode_max_tokens`).
    Max,
}

/// How a sentence embedding is made: pooling, then optional L2 normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SentenceEmbedding {
    /// The pooling mode.
    pub pooling: SentencePooling,
    /// Whether the vector is L2-normalised (a `Normalize` module in `modules.json`).
    pub normalize: bool,
}

impl SentenceEmbedding {
    /// The sentence vectors of a batch.
    ///
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]`; pad_mask (true = pad): `[batch, seq]`
    /// - output: `[batch, hidden]`
    pub fn embed(&self, hidden: Tensor<3>, pad_mask: Option<Tensor<2, Bool>>) -> Tensor<2> {
        let [b, n, h] = hidden.dims();
        let v = match (self.pooling, pad_mask) {
            (SentencePooling::Cls, _) => hidden.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            (SentencePooling::Mean, None) => hidden.mean_dim(1).reshape([b, h]),
            (SentencePooling::Mean, Some(pad)) => {
                let real = pad.bool_not().float().reshape([b, n, 1]);
                let sum = (hidden * real.clone().expand([b, n, h]))
                    .sum_dim(1)
                    .reshape([b, h]);
                // sentence-transformers clamps the token count at 1e-9.
                sum / real
                    .sum_dim(1)
                    .clamp_min(1e-9)
                    .reshape([b, 1])
                    .expand([b, h])
            }
            (SentencePooling::Max, None) => hidden.max_dim(1).reshape([b, h]),
            (SentencePooling::Max, Some(pad)) => {
                // Padding set to -1e9 first, as sentence-transformers does.
                let pad = pad.reshape([b, n, 1]).expand([b, n, h]);
                hidden.mask_fill(pad, -1e9).max_dim(1).reshape([b, h])
            }
        };
        match self.normalize {
            // torch.nn.functional.normalize: x / max(‖x‖, 1e-12).
            true => {
                let norm = (v.clone() * v.clone())
                    .sum_dim(1)
                    .sqrt()
                    .clamp_min(1e-12)
                    .expand([b, h]);
                v / norm
            }
            false => v,
        }
    }
}

/// A SetFit classifier's head: a sentence embedding of the backbone's hidden state, then a
/// linear layer to the logits.
#[derive(Module, Debug)]
pub struct SentenceHead {
    /// `[hidden] → [num_labels]`.
    pub linear: Linear,
    /// How the embedding is made.
    #[module(skip)]
    pub embedding: SentenceEmbedding,
}

impl SentenceHead {
    /// A zero-initialised head for `hidden`-wide embeddings (its weights are fitted, not
    /// trained from a random start).
    pub fn init(
        embedding: SentenceEmbedding,
        hidden: usize,
        num_labels: usize,
        device: &Device,
    ) -> Self {
        let linear = LinearConfig::new(hidden, num_labels)
            .with_initializer(burn::nn::Initializer::Zeros)
            .init(device);
        Self { linear, embedding }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    /// Logits from the backbone's hidden state.
    ///
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]`; pad_mask (true = pad): `[batch, seq]`
    /// - output: `[batch, num_labels]`
    pub fn forward(&self, hidden: Tensor<3>, pad_mask: Option<Tensor<2, Bool>>) -> Tensor<2> {
        self.linear.forward(self.embedding.embed(hidden, pad_mask))
    }
}
