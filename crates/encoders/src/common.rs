//! Shared math for every encoder family: activations, masks and attention.
//!
//! Mask convention: everything in this crate takes burn's *pad mask*, `true` = padding. The
//! conversion from Hugging Face's `attention_mask` (1 = real token) happens once, in
//! `sequin-data`.

use std::sync::Mutex;

use burn::nn::Dropout;
use burn::tensor::activation;
use burn::tensor::{Bool, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::EncoderError;

/// Activation functions named as in HF `config.json` (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` (HF `gelu`).
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh approximation of GELU (HF `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    #[serde(rename = "gelu_new")]
    GeluNew,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
    /// SiLU / swish.
    #[serde(rename = "silu")]
    Silu,
    /// tanh.
    #[serde(rename = "tanh")]
    Tanh,
}

impl Activation {
    /// Every name accepted by [`Activation::from_hf`].
    pub const NAMES: [&'static str; 8] = [
        "gelu",
        "gelu_new",
        "gelu_pytorch_tanh",
        "gelu_fast",
        "relu",
        "silu",
        "swish",
        "tanh",
    ];

    /// Parses an HF activation name.
    pub fn from_hf(name: &str) -> Result<Self, EncoderError> {
        Ok(match name {
            "gelu" | "gelu_python" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluNew,
            "relu" => Self::Relu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            other => {
                return Err(EncoderError::Config(format!(
                    "unsupported activation `{other}`; supported: {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }

    /// Applies the activation element-wise.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => activation::gelu(x),
            Self::GeluNew => gelu_tanh(x),
            Self::Relu => activation::relu(x),
            Self::Silu => activation::silu(x),
            Self::Tanh => activation::tanh(x),
        }
    }
}

static DROPOUT_RNG: Mutex<Option<ChaCha8Rng>> = Mutex::new(None);

/// Seeds the generator of dropout masks (sequin's, not the backend's: one ChaCha8 stream,
/// drawn 32 bits per element, much faster than a per-element distribution sampler).
pub fn seed_dropout(seed: u64) {
    *DROPOUT_RNG.lock().unwrap_or_else(|p| p.into_inner()) = Some(ChaCha8Rng::seed_from_u64(seed));
}

/// Inverted dropout with `d`'s probability, active only when `d` is in training mode and the
/// tensor lives on an autodiff device (as burn's `Dropout::forward`).
pub fn dropout<const D: usize>(d: &Dropout, x: Tensor<D>) -> Tensor<D> {
    if !d.training.is_enabled() || !x.device().is_autodiff() || d.prob <= 0.0 {
        return x;
    }
    let shape = x.shape();
    let n = shape.num_elements();
    let keep = 1.0 - d.prob;
    let scale = (1.0 / keep) as f32;
    let threshold = (keep * 4_294_967_296.0) as u64;
    let mut bits = vec![0u32; n];
    {
        let mut guard = DROPOUT_RNG.lock().unwrap_or_else(|p| p.into_inner());
        let rng = guard.get_or_insert_with(|| ChaCha8Rng::seed_from_u64(0));
        rng.fill(&mut bits[..]);
    }
    let mask: Vec<f32> = bits
        .into_iter()
        .map(|b| if (b as u64) < threshold { scale } else { 0.0 })
        .collect();
    let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &x.device());
    x * mask
}

/// The tanh approximation of GELU (HF `gelu_new`):
/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// burn's `gelu_approximate` computes `x³` with `powf`, which is NaN for negative `x` on some
/// backends; this spells the cube as products.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044715) * SQRT_2_OVER_PI;
    x * (inner.tanh() + 1.0) * 0.5
}

/// The hidden state of the first token: `[batch, seq, hidden]` → `[batch, hidden]`.
pub fn first_token(hidden: Tensor<3>) -> Tensor<2> {
    let [b, _, h] = hidden.dims();
    hidden.slice([0..b, 0..1, 0..h]).reshape([b, h])
}

/// Splits `[batch, seq, heads * head_dim]` into `[batch, heads, seq, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, s, d] = x.dims();
    x.reshape([b, s, heads, d / heads]).swap_dims(1, 2)
}

/// Merges `[batch, heads, seq, head_dim]` back into `[batch, seq, heads * head_dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, s, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}

/// Broadcasts a key pad mask `[batch, seq_k]` (true = pad) to `[batch, heads, seq_q, seq_k]`.
pub fn expand_pad_mask(pad_mask: Tensor<2, Bool>, heads: usize, seq_q: usize) -> Tensor<4, Bool> {
    let [b, k] = pad_mask.dims();
    pad_mask.reshape([b, 1, 1, k]).expand([b, heads, seq_q, k])
}

/// Scaled dot-product attention as HF's eager implementation computes it:
/// `softmax(QKᵀ/√d + mask) · V`, with dropout on the probabilities (training only).
///
/// Masked scores are set to `f32::MIN`, as HF's extended attention mask does.
///
/// # Shapes
/// - q, k, v: `[batch, heads, seq, head_dim]`
/// - pad_mask: `[batch, seq_k]`, `true` = padding
/// - output: `[batch, heads, seq_q, head_dim]`
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    pad_mask: Option<Tensor<2, Bool>>,
    dropout: &Dropout,
) -> Tensor<4> {
    let [_, heads, seq_q, head_dim] = q.dims();
    if !q.device().is_autodiff() {
        // Inference: the backend's fused attention (no score tensor kept; flash-style for long
        // inputs). Masked keys get −∞ instead of f32::MIN; no query row is ever fully masked
        // (the first token is real), so the result is the same.
        let mask = pad_mask.map(|m| expand_pad_mask(m, heads, seq_q));
        return burn::tensor::module::attention(q, k, v, mask, None, Default::default());
    }
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .div_scalar((head_dim as f64).sqrt());
    let scores = match pad_mask {
        Some(mask) => scores.mask_fill(expand_pad_mask(mask, heads, seq_q), f32::MIN),
        None => scores,
    };
    let probs = activation::softmax(scores, 3);
    self::dropout(dropout, probs).matmul(v)
}
