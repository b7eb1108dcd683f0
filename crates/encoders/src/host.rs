//! Element-wise work on the CPU backend's memory: the fast paths of inference.
//!
//! burn's `flex` runs an element-wise op as one scalar loop on one thread (its GELU calls
//! libm's `erff` per element). On the host, inference instead maps the tensor's values in
//! parallel chunks with branch-free, vectorizable arithmetic, and gives a new tensor. Training
//! (an autodiff device) and other devices keep burn's ops, and with them burn's backward.
//!
//! Each function's accuracy against the exact form is tested below; the parity tests (1e-4
//! against transformers) cover them end to end.

use burn::tensor::{Device, Tensor, TensorData};
use multiversion::multiversion;
use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;

/// Whether `device` is the host CPU backend without autodiff, where these paths run.
pub fn is_host(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        !device.is_autodiff() && *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// `f` over every element of a host tensor `x` in parallel chunks, in `x`'s own buffer when
/// nothing else holds it (a copy otherwise).
pub fn map<const D: usize>(x: Tensor<D>, f: fn(&mut [f32])) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        use burn::backend::Dispatch;
        Tensor::from_dispatch(<Dispatch as ext::HostOps>::host_map(x.into_dispatch(), f))
    }
    #[cfg(not(feature = "flex"))]
    {
        let (shape, device) = (x.shape(), x.device());
        let mut v: Vec<f32> = x.into_data().try_into_vec_as().expect("f32 values");
        v.par_chunks_mut(CHUNK).for_each(f);
        Tensor::from_data(TensorData::new(v, shape), &device)
    }
}

/// `f(values of x)` as a new host tensor of `shape`, reading `x`'s values where they are (no
/// copy out of burn, which re-aligns and copies a tensor's buffer when it hands it over).
#[cfg(feature = "flex")]
pub fn read<const D: usize, const E: usize>(
    x: Tensor<D>,
    shape: [usize; E],
    f: impl Fn(&[f32]) -> Vec<f32> + Send + Sync + 'static,
) -> Tensor<E> {
    use burn::backend::Dispatch;
    let f = ext::Reader(std::sync::Arc::new(f));
    Tensor::from_dispatch(<Dispatch as ext::HostOps>::host_read(
        x.into_dispatch(),
        f,
        shape.to_vec(),
    ))
}

#[cfg(feature = "flex")]
pub(crate) use ext::packed;

#[cfg(feature = "flex")]
mod ext {
    //! A backend extension for the host paths: burn's `flex` tensor memory, read and written in
    //! place.

    use std::sync::Arc;

    use burn::backend::flex::FlexTensor;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{Backend, Flex, backend_extension};
    use burn::tensor::TensorData;
    use rayon::prelude::*;

    /// A function of a tensor's values.
    #[derive(Clone)]
    pub struct Reader(pub Arc<dyn Fn(&[f32]) -> Vec<f32> + Send + Sync>);

    /// Host ops on the CPU backend's memory.
    #[backend_extension(Flex)]
    pub trait HostOps: Backend {
        /// `f` over `x`'s values in parallel chunks, in place when `x` holds its buffer alone.
        fn host_map(x: FloatTensor<Self>, f: fn(&mut [f32])) -> FloatTensor<Self>;
        /// `f(x's values)` as a new tensor of `shape`.
        fn host_read(x: FloatTensor<Self>, f: Reader, shape: Vec<usize>) -> FloatTensor<Self>;
    }

    /// `x` contiguous from the start of its buffer (itself when it already is).
    pub(crate) fn packed(x: FlexTensor) -> FlexTensor {
        match x.layout().contiguous_offsets() {
            Some((0, _)) => x,
            _ => x.to_contiguous(),
        }
    }

    impl HostOps for Flex {
        fn host_map(x: FlexTensor, f: fn(&mut [f32])) -> FlexTensor {
            let mut x = packed(x);
            let n = x.layout().num_elements();
            x.storage_mut::<f32>()[..n]
                .par_chunks_mut(super::CHUNK)
                .for_each(f);
            x
        }

        fn host_read(x: FlexTensor, f: Reader, shape: Vec<usize>) -> FlexTensor {
            let x = packed(x);
            let n = x.layout().num_elements();
            let y = (f.0)(&x.storage::<f32>()[..n]);
            FlexTensor::from_data(TensorData::new(y, shape))
        }
    }
}

/// The error function, as Eigen's and XLA's `fast_erf`: `x·P(x²)/Q(x²)` on `[-4, 4]` (beyond
/// which `erf` is ±1 in `f32`), a rational approximation within a few ulp, branch-free so that
/// it vectorizes. Plain multiplies and adds (no `mul_add`, which is a library call on a CPU
/// without FMA), so every CPU computes the same value.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_0e-3;
    p = x2 * p + -1.609_603_3e-2;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_473_9e-2;
    x * p / q
}

/// Exact GELU, `x·Φ(x) = 0.5·x·(1 + erf(x/√2))`, in place.
#[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
pub fn gelu_in_place(v: &mut [f32]) {
    for x in v {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Exact GELU of a host tensor, in parallel.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    map(x, gelu_in_place)
}

/// `eˣ` for `x ≤ 0` (softmax's shifted scores): `2ⁿ·p(r)` with `n = round(x·log₂e)`, `r` the
/// remainder in `[-ln2/2, ln2/2]` and `p` its degree-7 Taylor polynomial (relative error
/// below 1e-7); 0 below -87 (where `f32`'s `eˣ` leaves the normal range). Branch-free.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    let y = x.max(-87.0);
    // Round to nearest (ties to even) by adding 1.5·2²³: `t`'s low mantissa bits then hold
    // `n`, so `2ⁿ`'s exponent field is integer arithmetic on its bits (no float-to-int
    // conversion, which would not vectorize).
    let t = y * std::f32::consts::LOG2_E + 12_582_912.0;
    let n = t - 12_582_912.0;
    let r = y - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let mut p = r * (1.0 / 5040.0) + 1.0 / 720.0;
    p = r * p + 1.0 / 120.0;
    p = r * p + 1.0 / 24.0;
    p = r * p + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// Attention probabilities from raw scores, in one pass per row: `softmax(scores·scale)` with
/// padded keys at `f32::MIN` before the softmax (as HF's extended attention mask; a row whose
/// keys are all padded gets uniform weights, as there).
///
/// # Shapes
/// - scores: `[batch, heads, seq_q, seq_k]`
/// - pad: `[batch, seq_k]`, `true` = padding
pub fn masked_softmax(
    scores: Tensor<4>,
    scale: f32,
    pad: Option<Tensor<2, burn::tensor::Bool>>,
) -> Tensor<4> {
    let [_, heads, seq_q, seq_k] = scores.dims();
    let pad: Option<Vec<f32>> = pad.map(|m| {
        m.float()
            .into_data()
            .try_into_vec_as()
            .expect("a mask converts to f32")
    });
    let rows_per_batch = heads * seq_q;
    let (shape, device) = (scores.shape(), scores.device());
    let mut v: Vec<f32> = scores
        .into_data()
        .try_into_vec_as()
        .expect("a float tensor converts to f32");
    let rows_per_chunk = (CHUNK / seq_k.max(1)).max(1);
    v.par_chunks_mut(rows_per_chunk * seq_k.max(1))
        .enumerate()
        .for_each(|(c, chunk)| {
            let rows = RowsOf {
                first: c * rows_per_chunk,
                seq_k,
                rows_per_batch,
                scale,
            };
            softmax_rows(chunk, &rows, pad.as_deref());
        });
    Tensor::from_data(TensorData::new(v, shape), &device)
}

/// Where a chunk of score rows sits: its first row, the row length, rows per batch item (to
/// find a row's pad mask) and the score scale.
struct RowsOf {
    first: usize,
    seq_k: usize,
    rows_per_batch: usize,
    scale: f32,
}

/// [`softmax_row`] over a chunk of rows.
#[multiversion(targets("x86_64+avx512f+avx512bw", "x86_64+avx2+fma"))]
fn softmax_rows(chunk: &mut [f32], at: &RowsOf, pad: Option<&[f32]>) {
    for (i, row) in chunk.chunks_exact_mut(at.seq_k).enumerate() {
        let b = (at.first + i) / at.rows_per_batch;
        let mask = pad.map(|p| &p[b * at.seq_k..][..at.seq_k]);
        softmax_row(row, at.scale, mask);
    }
}

/// Multi-head attention of inference in one pass per batch item, from the projections as
/// the linear layers give them: for each head, `softmax(QₕKₕᵀ·scale + mask)·Vₕ`, with the
/// head's columns read in place (strided GEMMs, no split or merge copies) and its score matrix
/// (`seq_q × seq_k`) kept in a buffer of its own rather than one tensor for the whole batch.
/// Batch items run in parallel. Keys after the last real one are left out (their weight is
/// exactly 0), and a self-attention's real queries are one GEMM block, so a sequence gives the
/// same numbers, to the bit, however far its batch pads it (predictions do not depend on what
/// shares the batch).
///
/// # Shapes
/// - q: `[batch, seq_q, heads·head_dim]`; k, v: `[batch, seq_k, heads·head_dim]`
/// - pad: `[batch, seq_k]`, `true` = padding
/// - output: `[batch, seq_q, heads·head_dim]`
pub fn attention(
    qkv: [Tensor<3>; 3],
    heads: usize,
    pad: Option<Tensor<2, burn::tensor::Bool>>,
) -> Tensor<3> {
    let [q, k, v] = qkv;
    let ([b, sq, hd], sk, device) = (q.dims(), k.dims()[1], q.device());
    let d = hd / heads;
    let pad: Option<Vec<f32>> = pad.map(|m| {
        m.float()
            .into_data()
            .try_into_vec_as()
            .expect("a mask converts to f32")
    });
    let [q, k, v] = [q, k, v].map(|t| -> Vec<f32> {
        t.into_data()
            .try_into_vec_as()
            .expect("a float tensor converts to f32")
    });
    let mut out = vec![0f32; b * sq * hd];
    let scale = 1.0 / (d as f32).sqrt();
    out.par_chunks_mut(sq * hd)
        .enumerate()
        .for_each(|(i, out)| {
            let (q, k, v) = (&q[i * sq * hd..], &k[i * sk * hd..], &v[i * sk * hd..]);
            let mask = pad.as_ref().map(|p| &p[i * sk..][..sk]);
            // Keys after the last real one get weight exactly 0: leave them out, so that a
            // sequence's numbers do not depend on how far its batch pads it (the GEMMs' summation
            // order depends on their sizes). A row with no real key keeps every key (uniform
            // weights, as HF's finite mask gives).
            let sk_all = sk;
            let sk = match mask {
                Some(m) => m
                    .iter()
                    .rposition(|&p| p == 0.0)
                    .map_or(sk, |last| last + 1),
                None => sk,
            };
            let mask = mask.map(|m| &m[..sk]);
            let mut scores = vec![0f32; sq * sk];
            let at = RowsOf {
                first: 0,
                seq_k: sk,
                rows_per_batch: usize::MAX,
                scale,
            };
            // Self-attention: the real queries (up to the last real key) form one block and the
            // padding queries another, so the real rows' GEMMs have the same shape however far
            // the batch pads the sequence.
            let real = if sq == sk_all { sk } else { sq };
            let blocks = [(0, real), (real, sq - real)];
            for h in 0..heads {
                for (r0, m) in blocks.into_iter().filter(|&(_, m)| m > 0) {
                    let scores = &mut scores[..m * sk];
                    // SAFETY: every matrix lies inside its slice: rows of `hd` floats, head `h`'s
                    // `d` columns from `h·d`, query rows from `r0`; `scores` is `m × sk`; strides
                    // are in elements.
                    unsafe {
                        gemm::gemm(
                            m,
                            sk,
                            d,
                            scores.as_mut_ptr(),
                            1,
                            sk as isize,
                            false,
                            q.as_ptr().add(r0 * hd + h * d),
                            1,
                            hd as isize,
                            k.as_ptr().add(h * d),
                            hd as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    softmax_rows(scores, &at, mask);
                    // SAFETY: as above; the output block is `m × d` at row `r0`, column `h·d`.
                    unsafe {
                        gemm::gemm(
                            m,
                            d,
                            sk,
                            out.as_mut_ptr().add(r0 * hd + h * d),
                            1,
                            hd as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            sk as isize,
                            v.as_ptr().add(h * d),
                            1,
                            hd as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
            }
        });
    Tensor::from_data(TensorData::new(out, [b, sq, hd]), &device)
}

/// One row of [`masked_softmax`].
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    match mask {
        Some(m) => {
            for (x, &m) in row.iter_mut().zip(m) {
                *x = if m != 0.0 { f32::MIN } else { *x * scale };
            }
        }
        None => row.iter_mut().for_each(|x| *x *= scale),
    }
    // Reductions in LANES independent lanes (a float reduction in one accumulator stays
    // sequential: it cannot be reordered into vectors). Element `j` always goes to lane
    // `j % LANES` and the lanes combine in a fixed order, so a row gives the same numbers
    // whatever its length: padded keys (exact zeros after the exp) change nothing, and a
    // sequence predicts the same in any batch.
    let mut lanes = [f32::MIN; LANES];
    for c in row.chunks(LANES) {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = m.max(x);
        }
    }
    let max = lanes.iter().fold(f32::MIN, |a, &b| a.max(b));
    let mut lanes = [0f32; LANES];
    for c in row.chunks_mut(LANES) {
        for (s, x) in lanes.iter_mut().zip(c) {
            *x = exp_neg(*x - max);
            *s += *x;
        }
    }
    let sum = lanes.iter().sum::<f32>();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Independent accumulators of a row reduction (one AVX-512 vector, two AVX2 ones).
const LANES: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let exact = libm_erf(x as f64);
            worst = worst.max((erf(x) as f64 - exact).abs());
        }
        assert!(worst < 1e-6, "erf off by {worst}");
        assert!((erf(10.0) - 1.0).abs() <= f32::EPSILON && erf(-10.0) == -erf(10.0));
        assert_eq!(erf(0.0), 0.0);
    }

    /// erf in f64 by its Taylor series (|x| ≤ 3) and continued fraction (beyond), for the test.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0);
            while term.abs() > 1e-17 {
                n += 1;
                term *= -a * a / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = k as f64 / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        v.copysign(x)
    }

    #[test]
    fn fast_exp_is_within_1e_7_relative_for_softmax_inputs() {
        for i in 0..=197_000 {
            let x = -(i as f32) * 4.4e-4;
            let (got, want) = (exp_neg(x) as f64, (x as f64).exp());
            assert!(
                (got - want).abs() <= 2e-7 * want,
                "exp({x}) = {got}, not {want}"
            );
        }
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(f32::MIN), 0.0);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn host_softmax_matches_burns_masked_softmax() {
        let d = Device::flex();
        let (b, h, s) = (3, 2, 37);
        let v: Vec<f32> = (0..b * h * s * s)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        let scores = Tensor::<4>::from_data(TensorData::new(v, [b, h, s, s]), &d);
        // Row 0 pads its last 5 keys, row 1 none, row 2 every key (uniform weights).
        let pad: Vec<bool> = (0..b * s)
            .map(|i| (i / s == 0 && i % s >= s - 5) || i / s == 2)
            .collect();
        let pad = Tensor::<2, burn::tensor::Bool>::from_data(TensorData::new(pad, [b, s]), &d);
        let fast: Vec<f32> = masked_softmax(scores.clone(), 0.25, Some(pad.clone()))
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let mask = pad.reshape([b, 1, 1, s]).expand([b, h, s, s]);
        let exact = burn::tensor::activation::softmax((scores * 0.25).mask_fill(mask, f32::MIN), 3);
        let exact: Vec<f32> = exact.into_data().try_into_vec_as().unwrap();
        let worst = fast
            .iter()
            .zip(&exact)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-6, "softmax off by {worst}");
        assert!(
            (fast[2 * h * s * s] - 1.0 / s as f32).abs() < 1e-7,
            "all-padded row not uniform"
        );
    }

    #[cfg(feature = "flex")]
    #[test]
    fn host_attention_matches_split_attention_merge() {
        use crate::common;
        let d = Device::flex();
        let (b, s, heads, hd) = (3, 19, 4, 32);
        let t = |seed: usize| {
            let v: Vec<f32> = (0..b * s * hd)
                .map(|i| (((i + seed) * 7919) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            Tensor::<3>::from_data(TensorData::new(v, [b, s, hd]), &d)
        };
        let (q, k, v) = (t(1), t(2), t(3));
        let pad: Vec<bool> = (0..b * s).map(|i| i / s == 1 && i % s >= 11).collect();
        let pad = Tensor::<2, burn::tensor::Bool>::from_data(TensorData::new(pad, [b, s]), &d);
        let fast: Vec<f32> = attention([q.clone(), k.clone(), v.clone()], heads, Some(pad.clone()))
            .into_data()
            .try_into_vec_as()
            .unwrap();
        // The explicit form on an autodiff device (where no host path runs).
        let ad = d.clone().autodiff();
        let [q, k, v] = [q, k, v].map(|x| common::split_heads(x.to_device(&ad), heads));
        let dropout = burn::nn::DropoutConfig::new(0.0).init();
        let exact = common::merge_heads(common::attention(
            q,
            k,
            v,
            Some(pad.to_device(&ad)),
            &dropout,
        ));
        let exact: Vec<f32> = exact.into_data().try_into_vec_as().unwrap();
        let worst = fast
            .iter()
            .zip(&exact)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "attention off by {worst}");
    }

    /// A sequence attends the same, to the bit, alone or padded in a longer batch (predictions
    /// must not depend on what shares the batch).
    #[cfg(feature = "flex")]
    #[test]
    fn host_attention_does_not_depend_on_padding() {
        let d = Device::flex();
        let (heads, hd, real) = (4, 32, 11);
        let rows = |s: usize| -> Tensor<3> {
            let v: Vec<f32> = (0..s * hd)
                .map(|i| {
                    if i < real * hd {
                        ((i * 7919) % 1000) as f32 / 250.0 - 2.0
                    } else {
                        0.5
                    }
                })
                .collect();
            Tensor::<3>::from_data(TensorData::new(v, [1, s, hd]), &d)
        };
        let run = |s: usize| -> Vec<f32> {
            let pad: Vec<bool> = (0..s).map(|j| j >= real).collect();
            let pad = Tensor::<2, burn::tensor::Bool>::from_data(TensorData::new(pad, [1, s]), &d);
            let out = attention([rows(s), rows(s), rows(s)], heads, Some(pad));
            let v: Vec<f32> = out.into_data().try_into_vec_as().unwrap();
            v[..real * hd].to_vec()
        };
        let alone = run(real);
        for s in [12, 16, 17, 33, 64, 130] {
            assert_eq!(run(s), alone, "padded to {s}");
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn host_gelu_matches_burns_exact_gelu() {
        let d = Device::flex();
        let v: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 5e-4).collect();
        let x = Tensor::<1>::from_data(TensorData::new(v, [40_000]), &d);
        assert!(is_host(&d) && !is_host(&d.clone().autodiff()));
        let fast: Vec<f32> = gelu(x.clone()).into_data().try_into_vec_as().unwrap();
        let exact: Vec<f32> = burn::tensor::activation::gelu(x)
            .into_data()
            .try_into_vec_as()
            .unwrap();
        let worst = fast
            .iter()
            .zip(&exact)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "GELU off by {worst}");
    }
}
