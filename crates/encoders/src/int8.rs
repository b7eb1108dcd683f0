//! Dynamic int8 quantization of linear layers, as `torch.ao.quantization.quantize_dynamic` and
//! ONNX Runtime's `quantize_dynamic` do: weights are int8 per output channel (symmetric),
//! activations are quantized per row at run time (symmetric, stored as `u8` with a +128
//! offset), products accumulate in `i32`, and the result is scaled back to `f32`.
//!
//! Two kernels share one packed weight layout:
//! - [`Kernel::Vnni512`]: AVX-512 VNNI `vpdpbusd` (unsigned × signed bytes, four at a time into
//!   `i32` lanes), 12 rows × 32 columns per step. Chosen at run time where the CPU has
//!   `avx512vnni` (and `avx512bw`).
//! - [`Kernel::Portable`]: plain Rust over the same layout, for every other CPU; the reference
//!   the tests check the fast kernel against.
//!
//! No crate on crates.io offers a maintained int8 × int8 → i32 GEMM with VNNI for Rust (`gemm`
//! covers f16/f32/f64 and complex types only), so the kernel is here, small, and tested against
//! a scalar reference.
//!
//! This module knows nothing of tensors: it works on slices. [`crate::common::dense`] calls it
//! for the layers that [`crate::quant`] marked.

/// Rows of a microkernel step.
const MR: usize = 12;
/// Columns of a microkernel step (two 16-lane `i32` vectors).
const NR: usize = 32;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = MR * 4;

/// The int8 kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI (`vpdpbusd`).
    Vnni512,
    /// Plain Rust, any CPU.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Self::Vnni512;
            }
        }
        Self::Portable
    }

    /// How `--version` and `run.json` name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vnni512 => "avx512-vnni",
            Self::Portable => "portable (no VNNI on this CPU)",
        }
    }
}

/// A weight matrix `[k, n]` (burn's `Linear` layout: inputs × outputs) quantized per output
/// column and packed for the kernels.
#[derive(Debug, Clone)]
pub struct QuantizedMatrix {
    k: usize,
    n: usize,
    /// `k` rounded up to a multiple of 4.
    kp: usize,
    /// Panels of `NR` columns, each `kp / 4` groups of `NR × 4` bytes (column-major inside a
    /// group, 4 consecutive `k` per column), zero-padded past `k` and `n`.
    packed: Vec<i8>,
    /// Dequantization scale of each column.
    scales: Vec<f32>,
    /// `128 · Σₖ q[k][j]` per (padded) column: the +128 activation offset to take back.
    offsets: Vec<i32>,
}

impl QuantizedMatrix {
    /// Quantizes `w` (`[k, n]`, row-major): column `j` gets scale `max|w[·][j]| / 127`.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [k, n]");
        let kp = k.div_ceil(4) * 4;
        let panels = n.div_ceil(NR);
        let mut scales = vec![0f32; n];
        for row in w.chunks_exact(n) {
            for (s, &v) in scales.iter_mut().zip(row) {
                *s = s.max(v.abs());
            }
        }
        for s in &mut scales {
            *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
        }
        let mut packed = vec![0i8; panels * kp * NR];
        let mut offsets = vec![0i32; panels * NR];
        for (kk, row) in w.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let q = (v / scales[j]).round_ties_even().clamp(-127.0, 127.0) as i8;
                let (p, c) = (j / NR, j % NR);
                packed[p * kp * NR + (kk / 4) * NR * 4 + c * 4 + kk % 4] = q;
                offsets[j] += 128 * q as i32;
            }
        }
        Self {
            k,
            n,
            kp,
            packed,
            scales,
            offsets,
        }
    }

    /// Input size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output size.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `x · w + bias` for `x` `[m, k]` (row-major): `[m, n]`, rows in parallel.
    pub fn matmul(&self, kernel: Kernel, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let task = |x: &[f32], rows: usize, bias: &[f32], out: &mut [f32]| match kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Vnni512` is only chosen where the CPU has its features.
            Kernel::Vnni512 => unsafe { self.rows_vnni(x, rows, bias, out) },
            _ => self.rows::<false>(x, rows, bias, out),
        };
        crate::quant::row_tasks(x, (self.k, self.n), bias, ROWS_PER_TASK, task)
    }

    /// [`Self::rows`] compiled for AVX-512, so that quantizing and rescaling vectorize too.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX-512BW and AVX-512 VNNI.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn rows_vnni(&self, x: &[f32], rows: usize, bias: &[f32], out: &mut [f32]) {
        self.rows::<true>(x, rows, bias, out);
    }

    /// One task's rows: quantize them, then every row block against every panel, rescaled
    /// into `out` as each block finishes.
    #[inline(always)]
    fn rows<const VNNI: bool>(&self, x: &[f32], rows: usize, bias: &[f32], out: &mut [f32]) {
        let blocks = rows.div_ceil(MR);
        let (a, a_scales) = quantize_rows(x, rows, self.k, self.kp, blocks * MR);
        let mut acc = [0i32; MR * NR];
        for blk in 0..blocks {
            let a = &a[blk * MR * self.kp..][..MR * self.kp];
            for p in 0..self.n.div_ceil(NR) {
                let panel = &self.packed[p * self.kp * NR..][..self.kp * NR];
                #[cfg(target_arch = "x86_64")]
                if VNNI {
                    // SAFETY: only instantiated from `rows_vnni` (the CPU has the features);
                    // the slices hold `MR` rows of `kp` bytes and `kp / 4` groups of `NR × 4`.
                    unsafe { vnni::block(a, panel, self.kp, &mut acc) };
                } else {
                    portable_block(a, panel, self.kp, &mut acc);
                }
                #[cfg(not(target_arch = "x86_64"))]
                portable_block(a, panel, self.kp, &mut acc);
                let c0 = p * NR;
                let nc = NR.min(self.n - c0);
                let (off, sc, b) = (
                    &self.offsets[c0..][..nc],
                    &self.scales[c0..][..nc],
                    &bias[c0..][..nc],
                );
                for r in blk * MR..((blk + 1) * MR).min(rows) {
                    let sa = a_scales[r];
                    let acc = &acc[(r - blk * MR) * NR..][..nc];
                    let y = &mut out[r * self.n + c0..][..nc];
                    for i in 0..nc {
                        y[i] = (acc[i] - off[i]) as f32 * (sa * sc[i]) + b[i];
                    }
                }
            }
        }
    }
}

/// Quantizes `rows` rows of `x` (`[rows, k]`) per row, symmetric, offset by +128 into `u8`;
/// padded with the zero point (128) to `kp` columns and `padded_rows` rows. Returns the bytes
/// and each row's scale. Ties round to even, as `vcvtps2dq` does.
#[inline(always)]
fn quantize_rows(
    x: &[f32],
    rows: usize,
    k: usize,
    kp: usize,
    padded_rows: usize,
) -> (Vec<u8>, Vec<f32>) {
    let mut a = vec![128u8; padded_rows * kp];
    let mut scales = vec![1f32; rows];
    for (r, row) in x.chunks_exact(k).take(rows).enumerate() {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            1.0
        };
        scales[r] = scale;
        let inv = 1.0 / scale;
        for (q, &v) in a[r * kp..][..k].iter_mut().zip(row) {
            // Round half to even by adding 1.5·2²³, whose low mantissa bits then hold the
            // integer: no float-to-int conversion, so the loop vectorizes.
            let t = (v * inv).clamp(-127.0, 127.0) + 12_582_912.0;
            *q = (t.to_bits().wrapping_sub(0x4B40_0000) as i32 + 128) as u8;
        }
    }
    (a, scales)
}

/// `MR` rows of `a` (`u8`, `kp` each) against one panel: `acc[r][c] = Σₖ a[r][k] · w[k][c]`.
#[inline(always)]
fn portable_block(a: &[u8], panel: &[i8], kp: usize, acc: &mut [i32; MR * NR]) {
    acc.fill(0);
    for r in 0..MR {
        let a = &a[r * kp..][..kp];
        let acc = &mut acc[r * NR..][..NR];
        for (g, w) in panel.chunks_exact(NR * 4).enumerate() {
            let a = &a[g * 4..][..4];
            for (c, w) in w.chunks_exact(4).enumerate() {
                acc[c] += (0..4).map(|i| a[i] as i32 * w[i] as i32).sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// [`super::portable_block`] with `vpdpbusd`: 24 accumulators of 16 `i32` lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX-512BW and AVX-512 VNNI; `a` holds `MR · kp` bytes and `panel`
    /// `kp · NR` bytes, `kp` a multiple of 4.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn block(a: &[u8], panel: &[i8], kp: usize, acc: &mut [i32; MR * NR]) {
        debug_assert!(a.len() >= MR * kp && panel.len() >= kp * NR);
        let mut c = [[_mm512_setzero_si512(); 2]; MR];
        let a = a.as_ptr();
        let w = panel.as_ptr();
        for g in 0..kp / 4 {
            // SAFETY: within `panel` (kp/4 groups of NR·4 bytes) and `a` (MR rows of kp bytes).
            unsafe {
                let w0 = _mm512_loadu_si512(w.add(g * NR * 4).cast());
                let w1 = _mm512_loadu_si512(w.add(g * NR * 4 + 64).cast());
                for (r, c) in c.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32(a.add(r * kp + g * 4).cast::<i32>().read_unaligned());
                    c[0] = _mm512_dpbusd_epi32(c[0], x, w0);
                    c[1] = _mm512_dpbusd_epi32(c[1], x, w1);
                }
            }
        }
        for (r, c) in c.iter().enumerate() {
            // SAFETY: `acc` holds MR rows of NR = 32 lanes.
            unsafe {
                _mm512_storeu_si512(acc.as_mut_ptr().add(r * NR).cast(), c[0]);
                _mm512_storeu_si512(acc.as_mut_ptr().add(r * NR + 16).cast(), c[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Scalar reference of the same arithmetic: quantize, integer dot products, rescale.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for j in 0..n {
            let col: Vec<f32> = (0..k).map(|kk| w[kk * n + j]).collect();
            let sw = col.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            let sw = if sw > 0.0 { sw } else { 1.0 };
            for r in 0..m {
                let row = &x[r * k..][..k];
                let sa = row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                let sa = if sa > 0.0 { sa } else { 1.0 };
                let dot: i32 = (0..k)
                    .map(|kk| {
                        let qa = (row[kk] * (1.0 / sa))
                            .round_ties_even()
                            .clamp(-127.0, 127.0) as i32;
                        let qw = (col[kk] / sw).round_ties_even().clamp(-127.0, 127.0) as i32;
                        qa * qw
                    })
                    .sum();
                out[r * n + j] = dot as f32 * sa * sw + bias[j];
            }
        }
        out
    }

    fn exact(x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                out[r * n + j] =
                    bias[j] + (0..k).map(|kk| x[r * k + kk] * w[kk * n + j]).sum::<f32>();
            }
        }
        out
    }

    fn check(kernel: Kernel, m: usize, k: usize, n: usize) {
        let (x, w, bias) = (random(m * k, 1), random(k * n, 2), random(n, 3));
        let q = QuantizedMatrix::new(&w, k, n);
        let got = q.matmul(kernel, &x, Some(&bias));
        let want = reference(&x, &w, &bias, m, k, n);
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{kernel:?} {m}x{k}x{n} [{i}]: {g} vs {r}"
            );
        }
        // And int8 stays close to the f32 product (a relative error of ~1% of the output scale).
        let f = exact(&x, &w, &bias, m, k, n);
        let scale = f.iter().fold(0f32, |a, v| a.max(v.abs()));
        let worst = got
            .iter()
            .zip(&f)
            .fold(0f32, |a, (g, e)| a.max((g - e).abs()));
        assert!(
            worst < 0.03 * scale,
            "{m}x{k}x{n}: int8 off by {worst} of {scale}"
        );
    }

    #[test]
    fn portable_kernel_matches_the_scalar_reference_on_ragged_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 7, 3),
            (13, 33, 40),
            (50, 64, 65),
            (12, 384, 32),
        ] {
            check(Kernel::Portable, m, k, n);
        }
    }

    #[test]
    fn detected_kernel_matches_the_scalar_reference_on_ragged_shapes() {
        // On a CPU without VNNI this is the portable kernel again; the name says which ran.
        let kernel = Kernel::detect();
        eprintln!("int8 kernel: {}", kernel.name());
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 7, 3),
            (13, 33, 40),
            (50, 64, 65),
            (100, 384, 96),
        ] {
            check(kernel, m, k, n);
        }
    }

    #[test]
    fn zero_rows_and_columns_quantize_without_dividing_by_zero() {
        let (m, k, n) = (3, 8, 5);
        let w = vec![0f32; k * n];
        let x = vec![0f32; m * k];
        let q = QuantizedMatrix::new(&w, k, n);
        let y = q.matmul(Kernel::detect(), &x, Some(&[1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(&y[..5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(q.matmul(Kernel::Portable, &[], None).is_empty());
    }
}
