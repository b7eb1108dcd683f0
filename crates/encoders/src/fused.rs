//! Fused element-wise blocks of training, forward and backward, on the CPU backend.
//!
//! Under autodiff, burn composes LayerNorm, attention's softmax, a linear layer's bias, GELU
//! and dropout from primitive ops: each is a pass over memory with a graph node of its own
//! (LayerNorm alone is nine forward ops and more backward), and `flex` runs each with libm's
//! `expf`/`erff`, element by element. Here each block of a BERT layer is one op, forward and
//! backward, through burn's backend-extension mechanism (`#[backend_extension]`): [`FusedOps`]
//! for `Flex` (the forward) and for `Autodiff<Flex>`, with a hand-written backward.
//!
//! - [`dense_dropout_add_norm`]: `LayerNorm(dropout(x·W + b) + residual)` (a layer's two
//!   output blocks): the bias, the dropout mask, the residual and the normalisation in one
//!   pass per row; the backward gives the input, bias, residual, γ and β gradients in one.
//! - [`dense_gelu`]: `gelu(x·W + b)` (the intermediate block), with the vectorised `erf` of
//!   [`crate::host`].
//! - [`attention_probs`]: `dropout(softmax(scores·scale, padded keys masked))`; its backward
//!   needs only the probabilities and the dropped-out output (`∂s = o⊙g − p·Σ o⊙g`).
//!
//! Rows run in parallel. Sums over rows (bias, γ and β gradients) add partial sums of fixed
//! blocks of [`ROWS`] rows in a fixed order, so a step gives the same bits whatever the thread
//! count, and resume stays bit-identical. Dropout masks come from
//! [`common::dropout_draw`], so a fused block drops the very elements the unfused composition
//! drops. The fused path runs only on the CPU backend with autodiff
//! ([`common::on_host_autodiff`]); every other device composes the same math from burn ops
//! (the generic fallback `wgpu` and `cuda` use), and inference keeps [`crate::host`]'s paths.

use burn::nn::{Dropout, LayerNorm, Linear};
use burn::tensor::{Bool, Tensor};

use crate::common::{self, Activation};

/// `LayerNorm(dropout(dense(x)) + residual)`: the output block after attention and after
/// the feed-forward layer of a post-norm transformer (`dropout`: `None` where the block has
/// none, as DistilBERT's attention output).
///
/// # Shapes
/// - x: `[batch, seq, d_in]`, residual: `[batch, seq, d_out]`
/// - output: `[batch, seq, d_out]`
pub fn dense_dropout_add_norm(
    dense: &Linear,
    x: Tensor<3>,
    dropout: Option<&Dropout>,
    residual: Tensor<3>,
    norm: &LayerNorm,
) -> Tensor<3> {
    // (`fuses` first: reading the epsilon formats it, which inference need not pay for.)
    #[cfg(feature = "flex")]
    if let (true, Some(bias), Some(beta)) = (fuses(&x), dense.bias.as_ref(), norm.beta.as_ref())
        && let Some(eps) = layer_norm_epsilon(norm)
    {
        let [b, s, d_in] = x.dims();
        let h = x.reshape([b * s, d_in]).matmul(dense.weight.val());
        let d_out = h.dims()[1];
        let draw = dropout.and_then(|d| common::dropout_draw(d, &h));
        let y = ext::call_add_norm(
            [h, bias.val().unsqueeze(), residual.reshape([b * s, d_out])],
            [norm.gamma.val(), beta.val()],
            eps as f32,
            draw,
        );
        return y.reshape([b, s, d_out]);
    }
    let h = common::dense(dense, x);
    let h = match dropout {
        Some(d) => common::dropout(d, h),
        None => h,
    };
    norm.forward(h + residual)
}

/// `act(dense(x))`: the intermediate (first feed-forward) block.
///
/// # Shapes
/// - x: `[batch, seq, d_in]`, output: `[batch, seq, d_out]`
pub fn dense_gelu(dense: &Linear, act: Activation, x: Tensor<3>) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let (true, Activation::Gelu, Some(bias)) = (fuses(&x), act, dense.bias.as_ref()) {
        let [b, s, d_in] = x.dims();
        let h = x.reshape([b * s, d_in]).matmul(dense.weight.val());
        let d_out = h.dims()[1];
        return ext::call_bias_gelu(h, bias.val().unsqueeze()).reshape([b, s, d_out]);
    }
    act.forward(common::dense(dense, x))
}

/// `dropout(softmax(scores·scale))` with padded keys at [`common::MASKED`] before the softmax,
/// or `None` where this is not the CPU backend with autodiff (the caller composes it).
///
/// # Shapes
/// - scores: `[batch, heads, seq_q, seq_k]`; pad_mask: `[batch, seq_k]`, `true` = padding
pub fn attention_probs(
    scores: &Tensor<4>,
    scale: f32,
    pad_mask: Option<&Tensor<2, Bool>>,
    dropout: &Dropout,
) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    if fuses(scores) {
        let pad = pad_mask.map(|m| {
            let keys: Vec<bool> = m.to_data().try_to_vec().expect("a bool mask reads as bool");
            std::sync::Arc::new(keys.into_iter().map(|p| p as u8 as f32).collect::<Vec<_>>())
        });
        let draw = common::dropout_draw(dropout, scores);
        return Some(ext::call_attention_probs(scores.clone(), pad, scale, draw));
    }
    let _ = (scores, scale, pad_mask, dropout);
    None
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the fused blocks on (the default) or off for the whole process; off, training on the
/// CPU composes them from burn ops as on every other device (to measure what fusion gives).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a fused block runs on `x`: f32 on the CPU backend with autodiff, fusion on.
#[cfg(feature = "flex")]
fn fuses<const D: usize>(x: &Tensor<D>) -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
        && x.dtype() == burn::tensor::DType::F32
        && common::on_host_autodiff(&x.device())
}

/// The epsilon of a LayerNorm module (burn keeps the field private and shows it only
/// through its module display), or `None` if it cannot be read.
pub fn layer_norm_epsilon(norm: &LayerNorm) -> Option<f64> {
    use burn::module::{Content, DisplaySettings, ModuleDisplay};
    let content = norm.custom_content(Content::new(DisplaySettings::new()))?;
    let attr = content.attributes.iter().find(|a| a.name == "epsilon")?;
    attr.value.trim().parse().ok()
}

/// Rows per parallel task: sums over rows add these blocks' partial sums in order.
pub const ROWS: usize = 64;

#[cfg(feature = "flex")]
pub use ext::FusedOps;

#[cfg(feature = "flex")]
mod ext {
    //! The backend extension: the op signatures, the `Flex` forward and the `Autodiff<Flex>`
    //! forward with its backward.

    use std::sync::Arc;

    use burn::backend::TensorMetadata;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
    use burn::tensor::{Shape, Tensor, TensorData};

    use super::kernel;
    use crate::common::DropoutDraw;

    /// The fused blocks of a BERT layer, as backend ops.
    #[backend_extension(Flex, Autodiff)]
    pub trait FusedOps: Backend {
        /// `LayerNorm(dropout(h + bias) + residual)` over the last dimension, with `γ`, `β`.
        ///
        /// # Shapes
        /// - h, residual: `[rows, d]`; bias: `[1, d]`; gamma, beta: `[d]`
        fn bias_dropout_add_norm(
            h: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            residual: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f32,
            drop: Option<DropoutDraw>,
        ) -> FloatTensor<Self>;

        /// Exact `gelu(x + bias)`.
        ///
        /// # Shapes
        /// - x: `[rows, d]`; bias: `[1, d]`
        fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

        /// `dropout(softmax(scores·scale))`, keys where `pad` is 1 masked.
        ///
        /// # Shapes
        /// - scores: `[batch, heads, seq_q, seq_k]`; pad: `batch·seq_k` values
        fn attention_probs(
            scores: FloatTensor<Self>,
            pad: Option<Arc<Vec<f32>>>,
            scale: f32,
            drop: Option<DropoutDraw>,
        ) -> FloatTensor<Self>;
    }

    pub(super) fn call_add_norm(
        [h, bias, residual]: [Tensor<2>; 3],
        [gamma, beta]: [Tensor<1>; 2],
        epsilon: f32,
        drop: Option<DropoutDraw>,
    ) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as FusedOps>::bias_dropout_add_norm(
            h.into_dispatch(),
            bias.into_dispatch(),
            residual.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            epsilon,
            drop,
        ))
    }

    pub(super) fn call_bias_gelu(x: Tensor<2>, bias: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(<Dispatch as FusedOps>::bias_gelu(
            x.into_dispatch(),
            bias.into_dispatch(),
        ))
    }

    pub(super) fn call_attention_probs(
        scores: Tensor<4>,
        pad: Option<Arc<Vec<f32>>>,
        scale: f32,
        drop: Option<DropoutDraw>,
    ) -> Tensor<4> {
        Tensor::from_dispatch(<Dispatch as FusedOps>::attention_probs(
            scores.into_dispatch(),
            pad,
            scale,
            drop,
        ))
    }

    /// A tensor's values, contiguous (a copy only if they are not already).
    fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
        match t.as_slice::<f32>() {
            Some(v) => std::borrow::Cow::Borrowed(v),
            None => std::borrow::Cow::Owned(
                t.to_contiguous()
                    .as_slice::<f32>()
                    .expect("a contiguous f32 tensor")
                    .to_vec(),
            ),
        }
    }

    fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// The softmax's rows per batch item (`heads·seq_q`) and row length (`seq_k`).
    fn score_rows(shape: &Shape) -> (usize, usize) {
        let d = shape.dims::<4>();
        (d[1] * d[2], d[3])
    }

    fn add_norm_forward(
        [h, bias, residual, gamma, beta]: [&FlexTensor; 5],
        epsilon: f32,
        drop: Option<DropoutDraw>,
    ) -> (FlexTensor, kernel::NormSaved) {
        let shape = h.shape();
        let (y, saved) = kernel::add_norm_forward(kernel::AddNormIn {
            h: &values(h),
            bias: &values(bias),
            residual: &values(residual),
            gamma: &values(gamma),
            beta: &values(beta),
            keep: drop.map(|d| d.mask(shape.num_elements())),
            epsilon,
        });
        (tensor(y, shape), saved)
    }

    fn attention_forward(
        scores: FlexTensor,
        pad: Option<&[f32]>,
        scale: f32,
        drop: Option<DropoutDraw>,
    ) -> (FlexTensor, FlexTensor) {
        let shape = scores.shape();
        let (rows_per_batch, seq_k) = score_rows(&shape);
        // The softmax runs in the scores' own buffer when nothing else holds it (the usual
        // case: a matmul's output); `storage_mut` copies first otherwise.
        let mut probs = crate::host::packed(scores);
        let n = shape.num_elements();
        let p = &mut probs.storage_mut::<f32>()[..n];
        kernel::softmax(p, rows_per_batch, seq_k, scale, pad);
        let out = drop.map(|d| tensor(kernel::masked(p, &d.mask(n)), shape.clone()));
        let out = out.unwrap_or_else(|| probs.clone());
        (probs, out)
    }

    impl FusedOps for Flex {
        fn bias_dropout_add_norm(
            h: FlexTensor,
            bias: FlexTensor,
            residual: FlexTensor,
            gamma: FlexTensor,
            beta: FlexTensor,
            epsilon: f32,
            drop: Option<DropoutDraw>,
        ) -> FlexTensor {
            add_norm_forward([&h, &bias, &residual, &gamma, &beta], epsilon, drop).0
        }

        fn bias_gelu(x: FlexTensor, bias: FlexTensor) -> FlexTensor {
            let shape = x.shape();
            let (y, _) = kernel::bias_gelu(&values(&x), &values(&bias), false);
            tensor(y, shape)
        }

        fn attention_probs(
            scores: FlexTensor,
            pad: Option<Arc<Vec<f32>>>,
            scale: f32,
            drop: Option<DropoutDraw>,
        ) -> FlexTensor {
            attention_forward(scores, pad.as_deref().map(|v| &v[..]), scale, drop).1
        }
    }

    /// Registers a gradient for a parent node if it takes one (the gradient computed only then).
    macro_rules! give {
        ($grads:expr, $parent:expr, $grad:expr) => {
            if let Some(node) = $parent {
                $grads.register::<Flex>(node.id, $grad);
            }
        };
    }

    #[derive(Debug)]
    struct AddNormBackward;

    impl Backward<Flex, 5> for AddNormBackward {
        type State = Arc<(kernel::NormSaved, Shape)>;

        fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
            let g = grads.consume::<Flex>(&ops.node);
            let (saved, shape) = &*ops.state;
            let d = saved.gamma.len();
            let out = kernel::add_norm_backward(saved, &values(&g));
            let [h, bias, residual, gamma, beta] = ops.parents;
            let dz = tensor(out.dz, shape.clone());
            let dh = out.dh.map(|dh| tensor(dh, shape.clone()));
            give!(grads, bias, tensor(out.dbias, Shape::new([1, d])));
            give!(grads, gamma, tensor(out.dgamma, Shape::new([d])));
            give!(grads, beta, tensor(out.dbeta, Shape::new([d])));
            give!(grads, h, dh.unwrap_or_else(|| dz.clone()));
            give!(grads, residual, dz);
        }
    }

    #[derive(Debug)]
    struct BiasGeluBackward;

    impl Backward<Flex, 2> for BiasGeluBackward {
        /// The pre-activation `x + bias` and its shape.
        type State = Arc<(Vec<f32>, Shape)>;

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let g = grads.consume::<Flex>(&ops.node);
            let (u, shape) = &*ops.state;
            let d = shape.dims::<2>()[1];
            let (du, dbias) = kernel::bias_gelu_backward(u, &values(&g), d);
            let [x, bias] = ops.parents;
            give!(grads, bias, tensor(dbias, Shape::new([1, d])));
            give!(grads, x, tensor(du, shape.clone()));
        }
    }

    #[derive(Debug)]
    struct AttentionProbsBackward;

    impl Backward<Flex, 1> for AttentionProbsBackward {
        /// The probabilities, the output (the probabilities after dropout) and the scale.
        type State = (FlexTensor, FlexTensor, f32);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let g = grads.consume::<Flex>(&ops.node);
            let (probs, out, scale) = ops.state;
            let shape = probs.shape();
            let seq_k = score_rows(&shape).1;
            let ds =
                kernel::softmax_backward(&values(&probs), &values(&out), &values(&g), seq_k, scale);
            let [scores] = ops.parents;
            give!(grads, scores, tensor(ds, shape));
        }
    }

    impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
        fn bias_dropout_add_norm(
            h: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            residual: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f32,
            drop: Option<DropoutDraw>,
        ) -> FloatTensor<Self> {
            let nodes = [
                h.node(),
                bias.node(),
                residual.node(),
                gamma.node(),
                beta.node(),
            ];
            let inputs = [
                h.primitive(),
                bias.primitive(),
                residual.primitive(),
                gamma.primitive(),
                beta.primitive(),
            ];
            let (y, saved) = add_norm_forward(inputs, epsilon, drop);
            match AddNormBackward
                .prepare::<C>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(Arc::new((saved, h.primitive().shape())), y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            }
        }

        fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
            let nodes = [x.node(), bias.node()];
            let shape = x.primitive().shape();
            let (x, bias) = (values(x.primitive()), values(bias.primitive()));
            match BiasGeluBackward
                .prepare::<C>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (y, u) = kernel::bias_gelu(&x, &bias, true);
                    prep.finish(Arc::new((u, shape.clone())), tensor(y, shape))
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(tensor(kernel::bias_gelu(&x, &bias, false).0, shape))
                }
            }
        }

        fn attention_probs(
            scores: FloatTensor<Self>,
            pad: Option<Arc<Vec<f32>>>,
            scale: f32,
            drop: Option<DropoutDraw>,
        ) -> FloatTensor<Self> {
            let nodes = [scores.node()];
            let (probs, out) = attention_forward(
                scores.into_primitive(),
                pad.as_deref().map(|v| &v[..]),
                scale,
                drop,
            );
            match AttentionProbsBackward
                .prepare::<C>(nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish((probs, out.clone(), scale), out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
    }
}

/// The arithmetic, on plain slices.
pub mod kernel {
    use multiversion::multiversion;
    use rayon::prelude::*;

    use super::ROWS;
    use crate::host;

    /// Independent accumulators of a row reduction (one AVX-512 vector).
    const LANES: usize = 16;

    #[inline(always)]
    fn sum(v: &[f32]) -> f32 {
        let mut lanes = [0f32; LANES];
        for c in v.chunks(LANES) {
            for (l, &x) in lanes.iter_mut().zip(c) {
                *l += x;
            }
        }
        lanes.iter().sum()
    }

    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; LANES];
        for (ca, cb) in a.chunks(LANES).zip(b.chunks(LANES)) {
            for ((l, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
                *l += x * y;
            }
        }
        lanes.iter().sum()
    }

    /// The inputs of [`add_norm_forward`], rows of `gamma.len()` values.
    pub struct AddNormIn<'a> {
        /// The projection before its bias.
        pub h: &'a [f32],
        /// The projection's bias.
        pub bias: &'a [f32],
        /// The block's input, added after dropout.
        pub residual: &'a [f32],
        /// LayerNorm scale.
        pub gamma: &'a [f32],
        /// LayerNorm shift.
        pub beta: &'a [f32],
        /// The dropout mask (`1/(1 − p)` or 0), if dropout is on; kept for the backward.
        pub keep: Option<Vec<f32>>,
        /// LayerNorm epsilon.
        pub epsilon: f32,
    }

    /// What [`add_norm_backward`] needs.
    #[derive(Clone)]
    pub struct NormSaved {
        /// The normalised rows, `(z − mean)/σ`.
        pub xhat: Vec<f32>,
        /// `1/σ` per row.
        pub rstd: Vec<f32>,
        /// LayerNorm scale.
        pub gamma: Vec<f32>,
        /// The dropout mask, if dropout was on.
        pub keep: Option<Vec<f32>>,
    }

    impl std::fmt::Debug for NormSaved {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "NormSaved {{ rows: {}, d: {} }}",
                self.rstd.len(),
                self.gamma.len()
            )
        }
    }

    /// `y = LayerNorm(keep⊙(h + bias) + residual)`, and what the backward needs (the mask
    /// left for the caller to fill in).
    pub fn add_norm_forward(x: AddNormIn<'_>) -> (Vec<f32>, NormSaved) {
        let d = x.gamma.len();
        let rows = x.h.len() / d;
        let mut y = vec![0f32; x.h.len()];
        let mut xhat = vec![0f32; x.h.len()];
        let mut rstd = vec![0f32; rows];
        y.par_chunks_mut(ROWS * d)
            .zip(xhat.par_chunks_mut(ROWS * d))
            .zip(rstd.par_chunks_mut(ROWS))
            .enumerate()
            .for_each(|(c, ((y, xhat), rstd))| add_norm_rows(&x, c * ROWS * d, [y, xhat], rstd));
        let saved = NormSaved {
            xhat,
            rstd,
            gamma: x.gamma.to_vec(),
            keep: x.keep,
        };
        (y, saved)
    }

    #[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
    fn add_norm_rows<'a>(
        x: &AddNormIn<'a>,
        at: usize,
        [y, xhat]: [&mut [f32]; 2],
        rstd: &mut [f32],
    ) {
        let d = x.gamma.len();
        for (i, r) in rstd.iter_mut().enumerate() {
            let o = at + i * d;
            let z = &mut xhat[i * d..][..d];
            let (h, res) = (&x.h[o..][..d], &x.residual[o..][..d]);
            match x.keep.as_deref() {
                Some(k) => {
                    let k = &k[o..][..d];
                    for j in 0..d {
                        z[j] = (h[j] + x.bias[j]) * k[j] + res[j];
                    }
                }
                None => {
                    for j in 0..d {
                        z[j] = h[j] + x.bias[j] + res[j];
                    }
                }
            }
            let mean = sum(z) / d as f32;
            z.iter_mut().for_each(|v| *v -= mean);
            let var = dot(z, z) / d as f32;
            *r = 1.0 / (var + x.epsilon).sqrt();
            let y = &mut y[i * d..][..d];
            for j in 0..d {
                z[j] *= *r;
                y[j] = z[j] * x.gamma[j] + x.beta[j];
            }
        }
    }

    /// The gradients of [`add_norm_forward`]'s inputs from the output's gradient `g`.
    pub struct NormGrads {
        /// Of the residual (and of `h` without dropout).
        pub dz: Vec<f32>,
        /// Of `h`, with dropout (`dz⊙keep`).
        pub dh: Option<Vec<f32>>,
        /// Of the bias: the sum of `h`'s gradient over rows.
        pub dbias: Vec<f32>,
        /// Of γ: `Σ g⊙xhat` over rows.
        pub dgamma: Vec<f32>,
        /// Of β: `Σ g` over rows.
        pub dbeta: Vec<f32>,
    }

    /// LayerNorm's backward: `dz = (γ⊙g − mean(γ⊙g) − xhat·mean(γ⊙g⊙xhat))/σ` per row.
    pub fn add_norm_backward(s: &NormSaved, g: &[f32]) -> NormGrads {
        let d = s.gamma.len();
        let mut dz = vec![0f32; g.len()];
        let mut dh = s.keep.as_ref().map(|_| vec![0f32; g.len()]);
        let blocks = s.rstd.len().div_ceil(ROWS);
        let mut partial = vec![0f32; blocks * 3 * d];
        let mut dh_chunks: Vec<Option<&mut [f32]>> = match dh.as_mut() {
            Some(v) => v.chunks_mut(ROWS * d).map(Some).collect(),
            None => (0..blocks).map(|_| None).collect(),
        };
        dz.par_chunks_mut(ROWS * d)
            .zip(dh_chunks.par_iter_mut())
            .zip(partial.par_chunks_mut(3 * d))
            .enumerate()
            .for_each(|(c, ((dz, dh), part))| {
                norm_backward_rows(s, g, c * ROWS, [dz, part], dh.as_deref_mut())
            });
        let mut sums = vec![0f32; 3 * d];
        for part in partial.chunks(3 * d) {
            sums.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        }
        let dbeta = sums.split_off(2 * d);
        let dgamma = sums.split_off(d);
        NormGrads {
            dz,
            dh,
            dbias: sums,
            dgamma,
            dbeta,
        }
    }

    /// Rows `first..` of [`add_norm_backward`]; `part` gets this block's
    /// `[Σ dh, Σ g⊙xhat, Σ g]`.
    #[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
    fn norm_backward_rows(
        s: &NormSaved,
        g: &[f32],
        first: usize,
        [dz, part]: [&mut [f32]; 2],
        mut dh: Option<&mut [f32]>,
    ) {
        let d = s.gamma.len();
        let mut gg = vec![0f32; d];
        for (i, dz) in dz.chunks_exact_mut(d).enumerate() {
            let o = (first + i) * d;
            let (g, xhat, rstd) = (&g[o..][..d], &s.xhat[o..][..d], s.rstd[first + i]);
            for j in 0..d {
                gg[j] = g[j] * s.gamma[j];
            }
            let a = sum(&gg) / d as f32;
            let c = dot(&gg, xhat) / d as f32;
            for j in 0..d {
                dz[j] = rstd * (gg[j] - a - xhat[j] * c);
            }
            let (dbias, rest) = part.split_at_mut(d);
            let (dgamma, dbeta) = rest.split_at_mut(d);
            for j in 0..d {
                dgamma[j] += g[j] * xhat[j];
                dbeta[j] += g[j];
            }
            match (dh.as_deref_mut(), s.keep.as_ref()) {
                (Some(dh), Some(keep)) => {
                    let (dh, keep) = (&mut dh[i * d..][..d], &keep[o..][..d]);
                    for j in 0..d {
                        dh[j] = dz[j] * keep[j];
                        dbias[j] += dh[j];
                    }
                }
                _ => dbias.iter_mut().zip(dz.iter()).for_each(|(b, &v)| *b += v),
            }
        }
    }

    /// Exact `gelu(x + bias)` over rows of `bias.len()`, and (if `keep_input`) `x + bias`.
    pub fn bias_gelu(x: &[f32], bias: &[f32], keep_input: bool) -> (Vec<f32>, Vec<f32>) {
        let d = bias.len();
        let mut u: Vec<f32> = vec![0f32; x.len()];
        u.par_chunks_mut(ROWS * d)
            .zip(x.par_chunks(ROWS * d))
            .for_each(|(u, x)| add_rows(u, x, bias));
        let mut y = u.clone();
        y.par_chunks_mut(ROWS * d).for_each(host::gelu_in_place);
        (y, if keep_input { u } else { Vec::new() })
    }

    #[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
    fn add_rows(u: &mut [f32], x: &[f32], bias: &[f32]) {
        for (u, x) in u
            .chunks_exact_mut(bias.len())
            .zip(x.chunks_exact(bias.len()))
        {
            for j in 0..bias.len() {
                u[j] = x[j] + bias[j];
            }
        }
    }

    /// GELU's backward from the pre-activation `u`: `g·(Φ(u) + u·φ(u))`, and its sum over rows
    /// of `d` (the bias gradient).
    pub fn bias_gelu_backward(u: &[f32], g: &[f32], d: usize) -> (Vec<f32>, Vec<f32>) {
        let mut du = vec![0f32; u.len()];
        let blocks = u.len().div_ceil(ROWS * d);
        let mut partial = vec![0f32; blocks * d];
        du.par_chunks_mut(ROWS * d)
            .zip(partial.par_chunks_mut(d))
            .enumerate()
            .for_each(|(c, (du, part))| {
                let o = c * ROWS * d;
                gelu_backward_rows(&u[o..o + du.len()], &g[o..o + du.len()], du, part)
            });
        let mut dbias = vec![0f32; d];
        for part in partial.chunks(d) {
            dbias.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        }
        (du, dbias)
    }

    #[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
    fn gelu_backward_rows(u: &[f32], g: &[f32], du: &mut [f32], part: &mut [f32]) {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let d = part.len();
        for ((du, u), g) in du
            .chunks_exact_mut(d)
            .zip(u.chunks_exact(d))
            .zip(g.chunks_exact(d))
        {
            for j in 0..d {
                let x = u[j];
                let cdf = 0.5 * (1.0 + host::erf(x * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = host::exp_neg(-0.5 * x * x) * INV_SQRT_2PI;
                du[j] = g[j] * (cdf + x * pdf);
                part[j] += du[j];
            }
        }
    }

    /// Softmax of every row of `seq_k` in place (see [`host::masked_softmax`]); `pad` holds
    /// `seq_k` flags per batch item of `rows_per_batch` rows.
    pub fn softmax(
        v: &mut [f32],
        rows_per_batch: usize,
        seq_k: usize,
        scale: f32,
        pad: Option<&[f32]>,
    ) {
        v.par_chunks_mut(ROWS * seq_k)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (i, row) in chunk.chunks_exact_mut(seq_k).enumerate() {
                    let b = (c * ROWS + i) / rows_per_batch;
                    host::softmax_row(row, scale, pad.map(|p| &p[b * seq_k..][..seq_k]));
                }
            });
    }

    /// `v ⊙ mask`, in parallel.
    pub fn masked(v: &[f32], mask: &[f32]) -> Vec<f32> {
        v.par_iter().zip(mask).map(|(v, m)| v * m).collect()
    }

    /// The scores' gradient from the output's `g`, with `o` the output (after dropout) and `p`
    /// the probabilities: `scale·(o⊙g − p·Σ o⊙g)` per row.
    pub fn softmax_backward(p: &[f32], o: &[f32], g: &[f32], seq_k: usize, scale: f32) -> Vec<f32> {
        let mut ds = vec![0f32; p.len()];
        ds.par_chunks_mut(ROWS * seq_k)
            .enumerate()
            .for_each(|(c, ds)| {
                let at = c * ROWS * seq_k;
                let n = ds.len();
                softmax_backward_rows(
                    [&p[at..at + n], &o[at..at + n], &g[at..at + n]],
                    ds,
                    seq_k,
                    scale,
                )
            });
        ds
    }

    #[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
    fn softmax_backward_rows([p, o, g]: [&[f32]; 3], ds: &mut [f32], seq_k: usize, scale: f32) {
        for (((ds, p), o), g) in ds
            .chunks_exact_mut(seq_k)
            .zip(p.chunks_exact(seq_k))
            .zip(o.chunks_exact(seq_k))
            .zip(g.chunks_exact(seq_k))
        {
            let s = dot(o, g);
            for j in 0..seq_k {
                ds[j] = scale * (o[j] * g[j] - p[j] * s);
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::module::Module;
    use burn::nn::{DropoutConfig, LayerNormConfig, LinearConfig};
    use burn::tensor::{Device, Distribution, TensorData, activation};

    use super::*;
    use crate::common::{DropoutStream, with_dropout_stream};

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn random<const D: usize>(dims: [usize; D], grad: bool) -> Tensor<D> {
        let t = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), &device());
        if grad { t.require_grad() } else { t }
    }

    /// Largest absolute difference, scaled by the reference's largest magnitude.
    fn close<const D: usize>(got: Tensor<D>, want: Tensor<D>, what: &str) {
        let got: Vec<f32> = got.into_data().try_into_vec_as().unwrap();
        let want: Vec<f32> = want.into_data().try_into_vec_as().unwrap();
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 2e-5 * scale,
            "{what}: off by {worst} (scale {scale})"
        );
    }

    /// Each tensor's gradient in two gradient sets is [`close`].
    macro_rules! grads_agree {
        ($fused:expr, $composed:expr; $($t:expr => $what:expr),+) => {
            $( close($t.grad(&$fused).unwrap(), $t.grad(&$composed).unwrap(), $what); )+
        };
    }

    fn dropout(p: f64) -> Dropout {
        DropoutConfig::new(p).init().train()
    }

    /// Runs `f` with a fresh dropout stream, so two runs draw the same masks.
    fn seeded<T>(f: impl FnOnce() -> T) -> T {
        with_dropout_stream(&mut DropoutStream::new(7), f)
    }

    #[test]
    fn only_training_on_the_cpu_backend_fuses() {
        assert!(fuses(&Tensor::<1>::zeros([2], &Device::flex().autodiff())));
        // Inference keeps `common::dense` (and with it int8 and bf16 linear layers).
        assert!(!fuses(&Tensor::<1>::zeros([2], &Device::flex())));
    }

    #[test]
    fn layer_norm_epsilon_is_read_from_the_module() {
        let d = Device::flex();
        for eps in [1e-12, 1e-5, 1e-7] {
            let norm = LayerNormConfig::new(4).with_epsilon(eps).init(&d);
            assert_eq!(layer_norm_epsilon(&norm), Some(eps));
        }
    }

    #[test]
    fn fused_output_block_matches_burns_composition_forward_and_backward() {
        for p in [0.0, 0.1] {
            let dense = LinearConfig::new(8, 16).init(&device()).train();
            let norm = LayerNormConfig::new(16).with_epsilon(1e-12).init(&device());
            let norm = norm.train();
            let drop = dropout(p);
            let (x, residual, w) = (
                random([3, 5, 8], true),
                random([3, 5, 16], true),
                random([3, 5, 16], false),
            );
            let fused = seeded(|| {
                dense_dropout_add_norm(&dense, x.clone(), Some(&drop), residual.clone(), &norm)
            });
            let composed = seeded(|| {
                norm.forward(
                    common::dropout(&drop, common::dense(&dense, x.clone())) + residual.clone(),
                )
            });
            close(fused.clone(), composed.clone(), "output");
            let g_fused = (fused * w.clone()).sum().backward();
            let g_composed = (composed * w).sum().backward();
            grads_agree!(g_fused, g_composed;
                x => "x", residual => "residual", dense.weight.val() => "weight",
                dense.bias.as_ref().unwrap().val() => "bias", norm.gamma.val() => "gamma",
                norm.beta.as_ref().unwrap().val() => "beta");
        }
    }

    #[test]
    fn fused_gelu_block_matches_burns_composition_forward_and_backward() {
        let dense = LinearConfig::new(8, 32).init(&device()).train();
        let (x, w) = (random([2, 70, 8], true), random([2, 70, 32], false));
        let fused = dense_gelu(&dense, Activation::Gelu, x.clone());
        let composed = activation::gelu(common::dense(&dense, x.clone()));
        close(fused.clone(), composed.clone(), "output");
        let g_fused = (fused * w.clone()).sum().backward();
        let g_composed = (composed * w).sum().backward();
        grads_agree!(g_fused, g_composed;
            x => "x", dense.weight.val() => "weight",
            dense.bias.as_ref().unwrap().val() => "bias");
    }

    #[test]
    fn fused_attention_probs_match_burns_composition_forward_and_backward() {
        let (b, h, n) = (2, 3, 9);
        let pad: Vec<bool> = (0..b * n).map(|i| i >= n + 6).collect();
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, n]), &device());
        for p in [0.0, 0.2] {
            let drop = dropout(p);
            let (scores, w) = (random([b, h, n, n], true), random([b, h, n, n], false));
            let fused = seeded(|| attention_probs(&scores, 0.25, Some(&pad), &drop).unwrap());
            let composed = seeded(|| {
                let mask = common::expand_pad_mask(pad.clone(), h, n);
                let s = scores
                    .clone()
                    .mul_scalar(0.25)
                    .mask_fill(mask, common::MASKED);
                common::dropout(&drop, activation::softmax(s, 3))
            });
            close(fused.clone(), composed.clone(), "probabilities");
            let g_fused = (fused * w.clone()).sum().backward();
            let g_composed = (composed * w).sum().backward();
            grads_agree!(g_fused, g_composed; scores => "scores");
        }
    }

    #[test]
    fn fused_blocks_give_the_same_bits_on_every_run() {
        let dense = LinearConfig::new(8, 16).init(&device()).train();
        let norm = LayerNormConfig::new(16).init(&device()).train();
        let drop = dropout(0.1);
        let (x, residual) = (random([4, 40, 8], true), random([4, 40, 16], true));
        let run = || {
            let y = seeded(|| {
                dense_dropout_add_norm(&dense, x.clone(), Some(&drop), residual.clone(), &norm)
            });
            let grads = (y.clone() * y.clone()).sum().backward();
            let gamma: Vec<f32> = norm
                .gamma
                .val()
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_into_vec_as()
                .unwrap();
            let y: Vec<f32> = y.into_data().try_into_vec_as().unwrap();
            (y, gamma)
        };
        assert_eq!(run(), run());
    }
}
