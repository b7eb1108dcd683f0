//! Shared math for every encoder family: activations, masks and attention.
//!
//! Mask convention: everything in this crate takes burn's *pad mask*, `true` = padding. The
//! conversion from Hugging Face's `attention_mask` (1 = real token) happens once, in
//! `sequin-data`.

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
            Self::Gelu if crate::host::is_host(&x.device()) => crate::host::gelu(x),
            Self::Gelu => activation::gelu(x),
            Self::GeluNew => gelu_tanh(x),
            Self::Relu => activation::relu(x),
            Self::Silu => activation::silu(x),
            Self::Tanh => activation::tanh(x),
        }
    }
}

/// A run's stream of dropout masks: one ChaCha8 stream, drawn 32 bits per element (sequin's,
/// not the backend's: much faster than a per-element distribution sampler), and the next
/// unused word. A run owns its stream and saves it in checkpoints; no process-wide generator
/// exists, so runs in different threads never share draws.
///
/// Model code draws from the stream in force on its thread: [`with_dropout_stream`] puts a
/// stream in force for a training step, and [`with_dropout_region`] a region of it for one
/// shard of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropoutStream {
    seed: [u8; 32],
    next: u128,
}

impl DropoutStream {
    /// The stream of a run seeded by `seed`, at its start.
    pub fn new(seed: u64) -> Self {
        Self {
            seed: ChaCha8Rng::seed_from_u64(seed).get_seed(),
            next: 0,
        }
    }

    /// A stream at a saved position (see [`Self::position`]).
    pub fn at(seed: [u8; 32], next: u128) -> Self {
        Self { seed, next }
    }

    /// `(seed, next word)`: enough to restore the stream exactly with [`Self::at`], so that a
    /// resumed run draws the same masks as an uninterrupted one.
    pub fn position(&self) -> ([u8; 32], u128) {
        (self.seed, self.next)
    }

    /// Takes `words` words starting at `align(next)`; returns `(seed, start)`.
    fn reserve(&mut self, align: impl FnOnce(u128) -> u128, words: u128) -> ([u8; 32], u128) {
        let start = align(self.next);
        self.next = start + words;
        (self.seed, start)
    }
}

/// Words of the dropout stream reserved for one region (one shard of one training step): far
/// more than any step draws (BERT-base at batch 32, seq 512 draws about 2³⁰).
pub const REGION_WORDS: u128 = 1 << 40;

thread_local! {
    /// The stream in force on this thread (see [`with_dropout_stream`]).
    static STREAM: std::cell::Cell<Option<DropoutStream>> = const { std::cell::Cell::new(None) };
    /// The dropout region in force on this thread, as `(seed, next word)`.
    static REGION: std::cell::Cell<Option<([u8; 32], u128)>> = const { std::cell::Cell::new(None) };
}

/// Puts a value back into a thread-local cell when dropped (also on unwinding).
struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<T>>, T);

impl<T: Copy + 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.0.with(|c| c.set(self.1));
    }
}

/// Runs `f` with `stream` in force on this thread: every dropout mask `f` draws here (outside
/// a region) comes from it, in order, and regions are reserved from it. `stream` is advanced
/// past everything `f` took. Nests.
pub fn with_dropout_stream<T>(stream: &mut DropoutStream, f: impl FnOnce() -> T) -> T {
    let previous = STREAM.with(|c| c.replace(Some(*stream)));
    let restore = Restore(&STREAM, previous);
    let out = f();
    if let Some(s) = STREAM.with(|c| c.get()) {
        *stream = s;
    }
    drop(restore);
    out
}

static PARAM_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    /// Whether this thread holds [`PARAM_INIT`].
    static HOLDS_PARAM_INIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Draws every lazily initialised float parameter of `module` now. burn initialises a
/// parameter at its first use, not when the module is built: inside [`with_param_init`] that
/// first use must happen, or the draw would come later, outside the process's turn, and
/// interleave with another run's seeded initialisation.
pub fn materialize<M: burn::module::Module>(module: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Runs `f` holding the process's turn at parameter initialisation. burn's backends draw
/// initial weights from one process-wide generator, so a seeded initialisation (a training
/// run's fresh head) must not interleave with another thread's draws. Every initialisation in
/// sequin (loading a classifier, a fusion head, building a run) runs inside this. Reentrant on
/// one thread.
pub fn with_param_init<T>(f: impl FnOnce() -> T) -> T {
    if HOLDS_PARAM_INIT.with(|h| h.get()) {
        return f();
    }
    let _turn = PARAM_INIT.lock().unwrap_or_else(|p| p.into_inner());
    HOLDS_PARAM_INIT.with(|h| h.set(true));
    let _release = Restore(&HOLDS_PARAM_INIT, false);
    f()
}

/// Takes words of the stream in force on this thread (a stream seeded by 0 when none is:
/// dropout outside a trainer, as in a library user's own loop).
fn reserve_words(align: impl FnOnce(u128) -> u128, words: u128) -> ([u8; 32], u128) {
    STREAM.with(|c| {
        let mut s = c.get().unwrap_or_else(|| DropoutStream::new(0));
        let taken = s.reserve(align, words);
        c.set(Some(s));
        taken
    })
}

/// Reserves `n` consecutive regions of [`REGION_WORDS`] words of the stream in force on this
/// thread and returns where the first starts, for [`with_dropout_region`].
pub fn dropout_take_regions(n: usize) -> ([u8; 32], u128) {
    reserve_words(
        |pos| pos.div_ceil(REGION_WORDS) * REGION_WORDS,
        n as u128 * REGION_WORDS,
    )
}

/// Runs `f` with region `index` of those [`dropout_take_regions`] reserved at `base`: every
/// dropout mask `f` draws on this thread comes from that region, in order, whichever thread
/// runs it and whatever runs beside it. Nests (the previous region is restored afterwards), so
/// a rayon worker that picks up another region's work while it waits stays correct.
pub fn with_dropout_region<T>(base: ([u8; 32], u128), index: usize, f: impl FnOnce() -> T) -> T {
    let (seed, start) = base;
    let region = Some((seed, start + index as u128 * REGION_WORDS));
    let previous = REGION.with(|r| r.replace(region));
    let _restore = Restore(&REGION, previous);
    f()
}

/// Inverted dropout with `d`'s probability, active only when `d` is in training mode and the
/// tensor lives on an autodiff device (as burn's `Dropout::forward`).
pub fn dropout<const D: usize>(d: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let Some(draw) = dropout_draw(d, &x) else {
        return x;
    };
    let shape = x.shape();
    let n = shape.num_elements();
    let device = x.device();
    if on_host_autodiff(&device) {
        return x * Tensor::<D>::from_data(TensorData::new(draw.mask(n), shape), &device);
    }
    // On a GPU the same mask travels as one byte per element (a quarter of the f32 upload)
    // and is scaled there: the same kept elements, the same products.
    let mut keep = vec![false; n];
    fill_mask(
        &mut keep,
        draw.seed,
        draw.start,
        draw.threshold,
        (true, false),
    );
    let keep = Tensor::<D, Bool>::from_data(TensorData::new(keep, shape), &device);
    x * keep.float().mul_scalar(draw.scale)
}

/// Where a dropout mask comes from: words `start..` of the ChaCha8 stream `seed`; an element
/// is kept (and multiplied by `scale`, `1/(1 − p)`) when its word is below `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutDraw {
    /// The stream's seed.
    pub seed: [u8; 32],
    /// The stream word of element 0.
    pub start: u128,
    /// Kept when the word is below this (`(1 − p)·2³²`).
    pub threshold: u64,
    /// What a kept element is multiplied by.
    pub scale: f32,
}

impl DropoutDraw {
    /// The mask of `n` elements: `scale` where kept, 0 where dropped.
    pub fn mask(&self, n: usize) -> Vec<f32> {
        let mut mask = vec![0f32; n];
        fill_mask(
            &mut mask,
            self.seed,
            self.start,
            self.threshold,
            (self.scale, 0.0),
        );
        mask
    }
}

/// Reserves the stream words of a dropout mask over `x`, as [`dropout`] draws it, or `None`
/// where `d` drops nothing (evaluation, a device without autodiff, `p = 0`). Fused ops that
/// apply dropout inside themselves draw through this, so they drop exactly the elements
/// [`dropout`] would.
pub fn dropout_draw<const D: usize>(d: &Dropout, x: &Tensor<D>) -> Option<DropoutDraw> {
    if !d.training.is_enabled() || !x.device().is_autodiff() || d.prob <= 0.0 {
        return None;
    }
    let n = x.shape().num_elements();
    let keep = 1.0 - d.prob;
    let (seed, start) = REGION.with(|r| match r.get() {
        Some((seed, start)) => {
            r.set(Some((seed, start + n as u128)));
            (seed, start)
        }
        None => reserve_words(|pos| pos, n as u128),
    });
    Some(DropoutDraw {
        seed,
        start,
        threshold: (keep * 4_294_967_296.0) as u64,
        scale: (1.0 / keep) as f32,
    })
}

/// Whether `device` is the CPU backend with autodiff (where an f32 mask costs nothing to move).
pub fn on_host_autodiff(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "flex")]
    {
        // `Device` equality ignores autodiff, so ask for it separately.
        device.is_autodiff() && *device == burn::tensor::Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// Elements per parallel chunk of a dropout mask.
const MASK_CHUNK: usize = 1 << 16;

/// Fills `mask` with `kept` or `dropped`: element `i` is kept when word `start + i` of the
/// ChaCha8 stream `seed` is below `threshold`. Chunks run in parallel, each from its own
/// position in the stream, so the mask is exactly the one a serial pass draws.
fn fill_mask<T: Copy + Send + Sync>(
    mask: &mut [T],
    seed: [u8; 32],
    start: u128,
    threshold: u64,
    (kept, dropped): (T, T),
) {
    use rayon::prelude::*;
    mask.par_chunks_mut(MASK_CHUNK)
        .enumerate()
        .for_each(|(i, out)| {
            let mut rng = ChaCha8Rng::from_seed(seed);
            rng.set_word_pos(start + (i * MASK_CHUNK) as u128);
            let mut bits = [0u32; 1024];
            for piece in out.chunks_mut(bits.len()) {
                let bits = &mut bits[..piece.len()];
                rng.fill(bits);
                for (m, &b) in piece.iter_mut().zip(bits.iter()) {
                    *m = if (b as u64) < threshold {
                        kept
                    } else {
                        dropped
                    };
                }
            }
        });
}

/// A linear layer over every position: `[batch, seq, d_in]` → `[batch, seq, d_out]`, computed as
/// one `[batch·seq, d_in] × [d_in, d_out]` product.
///
/// burn keeps a 3-D input as `batch` separate products when `seq` fills its row tiles, and on
/// the CPU each of those packs the weight again; one product packs it once and lets the matmul
/// spread over the cores.
///
/// A layer marked by [`crate::quant::LowPrecisionLinears`] runs in int8 or bf16 on the CPU
/// backend without autodiff.
pub fn dense(layer: &burn::nn::Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let x = x.reshape([b * s, d]);
    let y = crate::quant::linear(layer, x).unwrap_or_else(|x| layer.forward(x));
    let out = y.dims()[1];
    y.reshape([b, s, out])
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

/// Multi-head self-attention from the projections `[batch, seq, heads·head_dim]` to the merged
/// context `[batch, seq_q, heads·head_dim]`: [`attention`] between [`split_heads`] and
/// [`merge_heads`], or, for inference on the CPU backend up to [`FUSED_ATTENTION_FROM`] keys,
/// the host kernel that reads the heads in place (`host::attention`).
pub fn multi_head_attention(
    qkv: [Tensor<3>; 3],
    heads: usize,
    pad_mask: Option<Tensor<2, Bool>>,
    dropout: &Dropout,
) -> Tensor<3> {
    let [q, k, v] = qkv;
    if crate::host::is_host(&q.device()) && k.dims()[1] <= FUSED_ATTENTION_FROM {
        return crate::host::attention([q, k, v], heads, pad_mask);
    }
    let [q, k, v] = [q, k, v].map(|t| split_heads(t, heads));
    merge_heads(attention(q, k, v, pad_mask, dropout))
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

/// Key lengths above which inference uses the backend's fused attention. Up to here the
/// explicit form (two matmuls and a softmax) is faster on the CPU: `flex`'s fused kernel took
/// 15% of a MiniLM inference pass at seq 128 (its short-sequence path is not a gemm), and the
/// explicit form measured 5% more samples/s. Beyond it the score tensor (batch × heads ×
/// seq²) grows too large to keep.
pub const FUSED_ATTENTION_FROM: usize = 512;

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
    let [_, heads, seq_q, _] = q.dims();
    let seq_k = k.dims()[2];
    if !q.device().is_autodiff() && seq_k > FUSED_ATTENTION_FROM {
        // Long inference inputs: the backend's fused attention (no score tensor kept;
        // flash-style). Masked keys get −∞ instead of f32::MIN; no query row is ever fully
        // masked (the first token is real), so the result is the same.
        let mask = pad_mask.map(|m| expand_pad_mask(m, heads, seq_q));
        return burn::tensor::module::attention(q, k, v, mask, None, Default::default());
    }
    explicit_attention([q, k, v], pad_mask, dropout)
}

/// [`attention`] as two matmuls and a softmax, whatever the length (`qkv`: queries, keys,
/// values).
fn explicit_attention(
    qkv: [Tensor<4>; 3],
    pad_mask: Option<Tensor<2, Bool>>,
    dropout: &Dropout,
) -> Tensor<4> {
    let [q, k, v] = qkv;
    let [_, heads, seq_q, head_dim] = q.dims();
    let scores = q.matmul(k.swap_dims(2, 3));
    let scale = 1.0 / (head_dim as f32).sqrt();
    if crate::host::is_host(&scores.device()) {
        // Inference on the CPU: scale, mask and softmax in one parallel pass (no dropout).
        return crate::host::masked_softmax(scores, scale, pad_mask).matmul(v);
    }
    if let Some(probs) = crate::fused::attention_probs(&scores, scale, pad_mask.as_ref(), dropout) {
        // Training on the CPU: scale, mask, softmax and dropout as one op, forward and backward.
        return probs.matmul(v);
    }
    let scores = scores.div_scalar((head_dim as f64).sqrt());
    let scores = match pad_mask {
        Some(mask) => scores.mask_fill(expand_pad_mask(mask, heads, seq_q), f32::MIN),
        None => scores,
    };
    let probs = activation::softmax(scores, 3);
    self::dropout(dropout, probs).matmul(v)
}

/// The value masked attention scores take (HF adds `finfo(float32).min`). Finite, so a row
/// whose keys are all masked gives uniform weights rather than NaN.
pub const MASKED: f32 = f32::MIN;

/// Extra keys every query attends to besides its window: Longformer's global tokens, seen from
/// local queries through the ordinary key and value projections.
///
/// # Shapes
/// - k, v: `[batch, heads, slots, head_dim]`
/// - invalid: `[batch, slots]`, `true` for slots a row does not use (rows have different
///   numbers of global tokens)
#[derive(Debug, Clone)]
pub struct ExtraKeys {
    /// Keys of the extra slots.
    pub k: Tensor<4>,
    /// Values of the extra slots.
    pub v: Tensor<4>,
    /// Unused slots, `true` = ignore.
    pub invalid: Tensor<2, Bool>,
}

/// Sliding-window attention: query `i` attends to keys `j` with `|i − j| ≤ one_sided` that are
/// not excluded, plus any [`ExtraKeys`], in one softmax. This is Longformer's local attention
/// (with its global keys) and ModernBERT's local layers.
///
/// The sequence is cut into blocks of `2·one_sided` queries; each block scores only the
/// `4·one_sided` keys around it, so memory grows linearly with the sequence length. When the
/// window covers the whole sequence this falls back to ordinary attention.
///
/// # Shapes
/// - q, k, v: `[batch, heads, seq, head_dim]`
/// - excluded: `[batch, seq]`, `true` = this key is not attended to through the window
///   (padding; for Longformer also the global tokens, which come in through `extra`)
/// - output: `[batch, heads, seq, head_dim]`
pub fn sliding_window_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    excluded: Tensor<2, Bool>,
    one_sided: usize,
    extra: Option<ExtraKeys>,
    dropout: &Dropout,
) -> Tensor<4> {
    let [b, h, n, d] = q.dims();
    let device = q.device();
    let scale = 1.0 / (d as f64).sqrt();
    if one_sided + 1 >= n {
        // The window spans the sequence: every non-excluded key, plus the extra ones.
        let scores = q.clone().matmul(k.swap_dims(2, 3)).mul_scalar(scale);
        let scores = scores.mask_fill(expand_pad_mask(excluded, h, n), MASKED);
        return match extra {
            None => {
                let probs = activation::softmax(scores, 3);
                self::dropout(dropout, probs).matmul(v)
            }
            Some(e) => {
                let g = e.k.dims()[2];
                let sg = q.matmul(e.k.swap_dims(2, 3)).mul_scalar(scale);
                let sg = sg.mask_fill(expand_pad_mask(e.invalid, h, n), MASKED);
                let probs = activation::softmax(Tensor::cat(vec![sg, scores], 3), 3);
                let probs = self::dropout(dropout, probs);
                probs.clone().narrow(3, 0, g).matmul(e.v) + probs.narrow(3, g, n).matmul(v)
            }
        };
    }
    let w = 2 * one_sided;
    let c = n.div_ceil(w);
    let np = c * w;
    // Queries padded to whole blocks; keys and values with `one_sided` more on each side.
    let pad_q = |x: Tensor<4>| {
        let last = x.dims()[3];
        if np == n {
            x
        } else {
            Tensor::cat(vec![x, Tensor::zeros([b, h, np - n, last], &device)], 2)
        }
    };
    let pad_kv = |x: Tensor<4>| {
        Tensor::cat(
            vec![
                Tensor::zeros([b, h, one_sided, d], &device),
                x,
                Tensor::zeros([b, h, np - n + one_sided, d], &device),
            ],
            2,
        )
    };
    // Block `i` sees padded keys [i·w, i·w + 2w): two reshaped, shifted views side by side.
    let blocks = |x: Tensor<4>| {
        let first = x.clone().narrow(2, 0, np).reshape([b, h, c, w, d]);
        let second = x.narrow(2, w, np).reshape([b, h, c, w, d]);
        Tensor::cat(vec![first, second], 3)
    };
    let qb = pad_q(q.clone()).reshape([b, h, c, w, d]);
    let kb = blocks(pad_kv(k));
    let vb = blocks(pad_kv(v));
    let scores = qb.matmul(kb.swap_dims(3, 4)).mul_scalar(scale); // [b, h, c, w, 2w]
    // Query r of a block and key s of its span are |distance| ≤ one_sided apart iff r ≤ s ≤ r + w.
    let band: Vec<bool> = (0..w)
        .flat_map(|r| (0..2 * w).map(move |s| s < r || s > r + w))
        .collect();
    let band = Tensor::<2, Bool>::from_data(TensorData::new(band, [w, 2 * w]), &device)
        .reshape([1, 1, 1, w, 2 * w])
        .expand([b, h, c, w, 2 * w]);
    let ex = Tensor::cat(
        vec![
            Tensor::<2, Bool>::full([b, one_sided], true, &device),
            excluded,
            Tensor::<2, Bool>::full([b, np - n + one_sided], true, &device),
        ],
        1,
    );
    let ex = Tensor::cat(
        vec![
            ex.clone().narrow(1, 0, np).reshape([b, c, w]),
            ex.narrow(1, w, np).reshape([b, c, w]),
        ],
        2,
    )
    .reshape([b, 1, c, 1, 2 * w])
    .expand([b, h, c, w, 2 * w]);
    let scores = scores.mask_fill(band, MASKED).mask_fill(ex, MASKED);
    let out = match extra {
        None => {
            let probs = self::dropout(dropout, activation::softmax(scores, 4));
            probs.matmul(vb).reshape([b, h, np, d])
        }
        Some(e) => {
            let g = e.k.dims()[2];
            let sg = q.matmul(e.k.swap_dims(2, 3)).mul_scalar(scale); // [b, h, n, g]
            let sg = sg.mask_fill(expand_pad_mask(e.invalid, h, n), MASKED);
            let sg = pad_q(sg).reshape([b, h, c, w, g]);
            let probs = activation::softmax(Tensor::cat(vec![sg, scores], 4), 4);
            let probs = self::dropout(dropout, probs);
            let pg = probs.clone().narrow(4, 0, g).reshape([b, h, np, g]);
            let local = probs.narrow(4, g, 2 * w).matmul(vb).reshape([b, h, np, d]);
            pg.matmul(e.v) + local
        }
    };
    out.narrow(2, 0, n)
}

/// Rotary position embeddings as transformers' default RoPE computes them: frequencies
/// `θ^(−2i/d)` in float32, angles `position · frequency` in float32, `cos`/`sin` of
/// `[freqs, freqs]`.
///
/// Returns `(cos, sin)`, each `[seq, head_dim]`.
pub fn rotary_tables(
    seq: usize,
    head_dim: usize,
    theta: f64,
    device: &burn::tensor::Device,
) -> (Tensor<2>, Tensor<2>) {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0f32 / (theta as f32).powf(exponent)
        })
        .collect();
    let mut cos = Vec::with_capacity(seq * head_dim);
    let mut sin = Vec::with_capacity(seq * head_dim);
    for p in 0..seq {
        for _ in 0..2 {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push((angle as f64).cos() as f32);
                sin.push((angle as f64).sin() as f32);
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [seq, head_dim]), device),
        Tensor::from_data(TensorData::new(sin, [seq, head_dim]), device),
    )
}

/// Applies rotary embeddings: `x·cos + rotate_half(x)·sin`, where `rotate_half([a, b]) =
/// [−b, a]` on the two halves of the head dimension.
///
/// # Shapes
/// - x: `[batch, heads, seq, head_dim]`; cos, sin: `[seq, head_dim]`
pub fn apply_rotary(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let half = d / 2;
    let rotated = Tensor::cat(
        vec![
            x.clone().narrow(3, half, half).neg(),
            x.clone().narrow(3, 0, half),
        ],
        3,
    );
    let cos = cos.reshape([1, 1, s, d]).expand([b, h, s, d]);
    let sin = sin.reshape([1, 1, s, d]).expand([b, h, s, d]);
    x * cos + rotated * sin
}

/// The most layers a config may declare: far above any real encoder (tens of layers), and low
/// enough that a corrupt count fails here rather than in an allocation.
pub const MAX_LAYERS: usize = 1024;

/// Checks a config's layer count against [`MAX_LAYERS`].
pub fn check_layers(name: &str, n: usize) -> Result<(), EncoderError> {
    if n > MAX_LAYERS {
        return Err(EncoderError::Config(format!(
            "{name} {n} is more layers than any encoder has (at most {MAX_LAYERS})"
        )));
    }
    Ok(())
}

/// Checks dropout probabilities read from a config: each finite and in `[0, 1)` (burn's
/// `DropoutConfig::init` panics otherwise), named as `config.json` names them.
pub fn check_dropouts(probs: &[(&str, f64)]) -> Result<(), EncoderError> {
    for (name, p) in probs {
        if !p.is_finite() || !(0.0..1.0).contains(p) {
            return Err(EncoderError::Config(format!(
                "{name} {p} is not a dropout probability (a number from 0 up to, but not including, 1)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;
    use burn::tensor::{Device, Distribution, Tolerance};

    /// Past [`FUSED_ATTENTION_FROM`] keys, inference takes the backend's fused attention; it
    /// agrees with the explicit form, padding included.
    #[test]
    fn fused_and_explicit_attention_agree() {
        let device = Device::flex();
        let n = FUSED_ATTENTION_FROM + 8;
        let r = |s| Tensor::<4>::random([2, 2, n, s], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (r(8), r(8), r(8));
        let pad: Vec<bool> = (0..2 * n).map(|i| i % n >= n - 11 && i >= n).collect();
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, [2, n]), &device);
        let off = DropoutConfig::new(0.1).init();
        let fused = attention(q.clone(), k.clone(), v.clone(), Some(pad.clone()), &off);
        let explicit = explicit_attention([q, k, v], Some(pad), &off);
        fused
            .into_data()
            .assert_approx_eq::<f32>(&explicit.into_data(), Tolerance::absolute(1e-5));
    }

    /// The parallel mask is the serial stream, word for word, from any start (mid-block
    /// included) and for lengths that are not a multiple of the chunk.
    #[test]
    fn parallel_mask_is_the_serial_stream() {
        let seed = [7u8; 32];
        let threshold = (0.9 * 4_294_967_296.0) as u64;
        for (start, n) in [
            (0u128, 10),
            (5, MASK_CHUNK + 37),
            (1000, 3 * MASK_CHUNK - 1),
        ] {
            let mut rng = ChaCha8Rng::from_seed(seed);
            rng.set_word_pos(start);
            let mut bits = vec![0u32; n];
            rng.fill(&mut bits[..]);
            let serial: Vec<f32> = bits
                .iter()
                .map(|&b| if (b as u64) < threshold { 1.25 } else { 0.0 })
                .collect();
            let mut mask = vec![0f32; n];
            fill_mask(&mut mask, seed, start, threshold, (1.25, 0.0));
            assert_eq!(mask, serial, "start {start}, n {n}");
            if n > 1000 {
                assert!(mask.contains(&0.0) && mask.contains(&1.25));
            }
        }
    }

    /// The blocked computation against a dense one with an explicit band mask.
    fn dense_reference(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        excluded: &[Vec<bool>],
        one_sided: usize,
        extra: Option<ExtraKeys>,
    ) -> Tensor<4> {
        let [b, h, n, d] = q.dims();
        let device = q.device();
        let mut m = vec![false; b * n * n];
        for (bi, ex) in excluded.iter().enumerate() {
            for i in 0..n {
                for j in 0..n {
                    m[(bi * n + i) * n + j] = ex[j] || i.abs_diff(j) > one_sided;
                }
            }
        }
        let mask = Tensor::<3, Bool>::from_data(TensorData::new(m, [b, n, n]), &device)
            .reshape([b, 1, n, n])
            .expand([b, h, n, n]);
        let scale = 1.0 / (d as f64).sqrt();
        let s = q
            .clone()
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(scale)
            .mask_fill(mask, MASKED);
        match extra {
            None => activation::softmax(s, 3).matmul(v),
            Some(e) => {
                let g = e.k.dims()[2];
                let sg = q.matmul(e.k.swap_dims(2, 3)).mul_scalar(scale);
                let sg = sg.mask_fill(expand_pad_mask(e.invalid, h, n), MASKED);
                let p = activation::softmax(Tensor::cat(vec![sg, s], 3), 3);
                p.clone().narrow(3, 0, g).matmul(e.v) + p.narrow(3, g, n).matmul(v)
            }
        }
    }

    #[test]
    fn sliding_window_matches_dense_band() {
        let device = Device::flex();
        let drop = DropoutConfig::new(0.0).init();
        for (n, one_sided) in [(13, 2), (16, 4), (7, 3), (5, 8), (21, 1)] {
            let r = |s: [usize; 4]| Tensor::<4>::random(s, Distribution::Normal(0.0, 1.0), &device);
            let (b, h, d) = (2, 3, 4);
            let (q, k, v) = (r([b, h, n, d]), r([b, h, n, d]), r([b, h, n, d]));
            let excluded: Vec<Vec<bool>> = vec![
                (0..n).map(|j| j == 1).collect(),
                (0..n).map(|j| j + 3 >= n).collect(),
            ];
            let ex =
                Tensor::<2, Bool>::from_data(TensorData::new(excluded.concat(), [b, n]), &device);
            // Rows of excluded (padding) tokens may see no key at all; they are not compared.
            let keep: Vec<f32> = excluded
                .concat()
                .iter()
                .map(|&e| if e { 0.0 } else { 1.0 })
                .collect();
            let keep = Tensor::<4>::from_data(TensorData::new(keep, [b, 1, n, 1]), &device)
                .expand([b, h, n, d]);
            let got = keep.clone()
                * sliding_window_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    ex.clone(),
                    one_sided,
                    None,
                    &drop,
                );
            let want = keep.clone()
                * dense_reference(q.clone(), k.clone(), v.clone(), &excluded, one_sided, None);
            got.into_data()
                .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
            let extra = ExtraKeys {
                k: r([b, h, 2, d]),
                v: r([b, h, 2, d]),
                invalid: Tensor::from_data(
                    TensorData::new(vec![false, false, false, true], [b, 2]),
                    &device,
                ),
            };
            let got = keep.clone()
                * sliding_window_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    ex,
                    one_sided,
                    Some(extra.clone()),
                    &drop,
                );
            let want = keep * dense_reference(q, k, v, &excluded, one_sided, Some(extra));
            got.into_data()
                .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn rotary_keeps_norms_and_is_identity_at_zero() {
        let device = Device::flex();
        let x = Tensor::<4>::random([1, 2, 5, 8], Distribution::Normal(0.0, 1.0), &device);
        let (cos, sin) = rotary_tables(5, 8, 10_000.0, &device);
        let y = apply_rotary(x.clone(), cos, sin);
        let norms = |t: Tensor<4>| t.powi_scalar(2).sum_dim(3);
        norms(y.clone())
            .into_data()
            .assert_approx_eq::<f32>(&norms(x.clone()).into_data(), Tolerance::absolute(1e-4));
        y.narrow(2, 0, 1)
            .into_data()
            .assert_approx_eq::<f32>(&x.narrow(2, 0, 1).into_data(), Tolerance::absolute(1e-6));
    }
}
