//! bf16 linear layers for inference: weights rounded to bfloat16 once, activations rounded per
//! call, products of bf16 pairs accumulated in `f32` (as PyTorch's bf16 matmuls on CPU and
//! ONNX Runtime's bf16 kernels do).
//!
//! Two kernels share one packed weight layout:
//! - [`Kernel::Avx512Bf16`]: AVX-512 BF16 `vdpbf16ps` (two bf16 products per `f32` lane and
//!   instruction, twice an `f32` FMA's work), 12 rows × 32 columns per step. Chosen at run time
//!   where the CPU has `avx512bf16`.
//! - [`Kernel::Portable`]: plain Rust over the same layout (the same bf16 operands, `f32`
//!   accumulation), for every other CPU; the reference the tests check the fast kernel against.
//!
//! `gemm` (the f32 GEMM burn's `flex` uses) has no bf16 dot-product kernel, and `half` only
//! converts, so the kernel is here, small, and tested against a scalar reference, beside its
//! int8 sibling ([`crate::int8`]). It knows nothing of tensors: it works on slices.

/// Rows of a microkernel step.
const MR: usize = 12;
/// Columns of a microkernel step (two 16-lane `f32` vectors).
const NR: usize = 32;
/// Rows per parallel task.
const ROWS_PER_TASK: usize = MR * 4;

/// The bf16 kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
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
                && std::arch::is_x86_feature_detected!("avx512bf16")
            {
                return Self::Avx512Bf16;
            }
        }
        Self::Portable
    }

    /// How `--version` and `run.json` name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512Bf16 => "avx512-bf16",
            Self::Portable => "portable (no AVX512-BF16 on this CPU)",
        }
    }
}

/// `v` rounded to the nearest bfloat16 (ties to even), as its 16 bits. NaN stays NaN.
#[inline(always)]
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The `f32` value of a bfloat16.
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A weight matrix `[k, n]` (burn's `Linear` layout: inputs × outputs) in bf16, packed for the
/// kernels.
#[derive(Debug, Clone)]
pub struct Bf16Matrix {
    k: usize,
    n: usize,
    /// `k` rounded up to a multiple of 2.
    kp: usize,
    /// Panels of `NR` columns, each `kp / 2` groups of `NR × 2` bf16 (2 consecutive `k` per
    /// column), zero-padded past `k` and `n`.
    packed: Vec<u16>,
}

impl Bf16Matrix {
    /// Rounds `w` (`[k, n]`, row-major) to bf16 and packs it.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weight is not [k, n]");
        let kp = k.div_ceil(2) * 2;
        let mut packed = vec![0u16; n.div_ceil(NR) * kp * NR];
        for (kk, row) in w.chunks_exact(n).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let (p, c) = (j / NR, j % NR);
                packed[p * kp * NR + (kk / 2) * NR * 2 + c * 2 + kk % 2] = to_bf16(v);
            }
        }
        Self { k, n, kp, packed }
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
            // SAFETY: `Kernel::Avx512Bf16` is only chosen where the CPU has its features.
            Kernel::Avx512Bf16 => unsafe { self.rows_avx512(x, rows, bias, out) },
            _ => self.rows::<false>(x, rows, bias, out),
        };
        crate::quant::row_tasks(x, (self.k, self.n), bias, ROWS_PER_TASK, task)
    }

    /// [`Self::rows`] compiled for AVX-512, so that rounding and the bias vectorize too.
    ///
    /// # Safety
    /// The CPU has AVX-512F, AVX-512BW and AVX-512 BF16.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn rows_avx512(&self, x: &[f32], rows: usize, bias: &[f32], out: &mut [f32]) {
        self.rows::<true>(x, rows, bias, out);
    }

    /// One task's rows: round them to bf16, then every row block against every panel, plus
    /// the bias, into `out`.
    #[inline(always)]
    fn rows<const AVX512: bool>(&self, x: &[f32], rows: usize, bias: &[f32], out: &mut [f32]) {
        let blocks = rows.div_ceil(MR);
        let mut a = vec![0u16; blocks * MR * self.kp];
        for (dst, src) in a.chunks_exact_mut(self.kp).zip(x.chunks_exact(self.k)) {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = to_bf16(v);
            }
        }
        let mut acc = [0f32; MR * NR];
        for blk in 0..blocks {
            let a = &a[blk * MR * self.kp..][..MR * self.kp];
            for p in 0..self.n.div_ceil(NR) {
                let panel = &self.packed[p * self.kp * NR..][..self.kp * NR];
                #[cfg(target_arch = "x86_64")]
                if AVX512 {
                    // SAFETY: only instantiated from `rows_avx512` (the CPU has the features);
                    // the slices hold `MR` rows of `kp` and `kp / 2` groups of `NR × 2`.
                    unsafe { avx512::block(a, panel, self.kp, &mut acc) };
                } else {
                    portable_block(a, panel, self.kp, &mut acc);
                }
                #[cfg(not(target_arch = "x86_64"))]
                portable_block(a, panel, self.kp, &mut acc);
                let c0 = p * NR;
                let nc = NR.min(self.n - c0);
                let b = &bias[c0..][..nc];
                for r in blk * MR..((blk + 1) * MR).min(rows) {
                    let acc = &acc[(r - blk * MR) * NR..][..nc];
                    let y = &mut out[r * self.n + c0..][..nc];
                    for i in 0..nc {
                        y[i] = acc[i] + b[i];
                    }
                }
            }
        }
    }
}

/// `MR` rows of `a` (bf16, `kp` each) against one panel: `acc[r][c] = Σₖ a[r][k] · w[k][c]`,
/// each pair's two products summed first, as `vdpbf16ps` does.
#[inline(always)]
fn portable_block(a: &[u16], panel: &[u16], kp: usize, acc: &mut [f32; MR * NR]) {
    acc.fill(0.0);
    for r in 0..MR {
        let a = &a[r * kp..][..kp];
        let acc = &mut acc[r * NR..][..NR];
        for (g, w) in panel.chunks_exact(NR * 2).enumerate() {
            let (a0, a1) = (from_bf16(a[g * 2]), from_bf16(a[g * 2 + 1]));
            for (c, w) in w.chunks_exact(2).enumerate() {
                acc[c] += a0 * from_bf16(w[0]) + a1 * from_bf16(w[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// [`super::portable_block`] with `vdpbf16ps`: 24 accumulators of 16 `f32` lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 BF16; `a` holds `MR · kp` and `panel` `kp · NR`
    /// values, `kp` a multiple of 2.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn block(a: &[u16], panel: &[u16], kp: usize, acc: &mut [f32; MR * NR]) {
        debug_assert!(a.len() >= MR * kp && panel.len() >= kp * NR);
        let mut c = [[_mm512_setzero_ps(); 2]; MR];
        let a = a.as_ptr();
        let w = panel.as_ptr();
        for g in 0..kp / 2 {
            // SAFETY: within `panel` (kp/2 groups of NR·2 values) and `a` (MR rows of kp);
            // `__m512i` and `__m512bh` are both 512 plain bits.
            unsafe {
                let w0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(w.add(g * NR * 2).cast()));
                let w1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(w.add(g * NR * 2 + 32).cast()));
                for (r, c) in c.iter_mut().enumerate() {
                    let pair = a.add(r * kp + g * 2).cast::<i32>().read_unaligned();
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    c[0] = _mm512_dpbf16_ps(c[0], x, w0);
                    c[1] = _mm512_dpbf16_ps(c[1], x, w1);
                }
            }
        }
        for (r, c) in c.iter().enumerate() {
            // SAFETY: `acc` holds MR rows of NR = 32 lanes.
            unsafe {
                _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR), c[0]);
                _mm512_storeu_ps(acc.as_mut_ptr().add(r * NR + 16), c[1]);
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

    /// Scalar reference: both operands rounded to bf16 (by `half`, an independent
    /// implementation), products and sums in `f64`.
    fn reference(x: &[f32], w: &[f32], bias: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let h = |v: f32| half::bf16::from_f32(v).to_f64();
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|kk| h(x[r * k + kk]) * h(w[kk * n + j])).sum();
                out[r * n + j] = (dot + bias[j] as f64) as f32;
            }
        }
        out
    }

    fn check(kernel: Kernel, m: usize, k: usize, n: usize) {
        let (x, w, bias) = (random(m * k, 1), random(k * n, 2), random(n, 3));
        let q = Bf16Matrix::new(&w, k, n);
        let got = q.matmul(kernel, &x, Some(&bias));
        let want = reference(&x, &w, &bias, m, k, n);
        // Only the f32 accumulation order differs from the reference.
        let tol = 1e-5 * (k as f32).sqrt();
        for (i, (g, r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - r).abs() <= tol * (1.0 + r.abs()),
                "{kernel:?} {m}x{k}x{n} [{i}]: {g} vs {r}"
            );
        }
    }

    #[test]
    fn rounding_matches_half_on_ties_and_specials() {
        for v in [
            0.0f32,
            -0.0,
            1.0,
            1.00390625, // exactly halfway between two bf16 values, even below: stays 1.0
            1.01171875, // halfway, odd below: rounds up
            -3.14159,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            assert_eq!(to_bf16(v), half::bf16::from_f32(v).to_bits(), "{v}");
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for v in random(10_000, 9) {
            assert_eq!(to_bf16(v), half::bf16::from_f32(v).to_bits(), "{v}");
        }
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
        // On a CPU without AVX512-BF16 this is the portable kernel again; the name says which.
        let kernel = Kernel::detect();
        eprintln!("bf16 kernel: {}", kernel.name());
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
    fn bf16_stays_close_to_the_f32_product() {
        let (m, k, n) = (20, 384, 64);
        let (x, w) = (random(m * k, 4), random(k * n, 5));
        let got = Bf16Matrix::new(&w, k, n).matmul(Kernel::detect(), &x, None);
        for r in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|kk| x[r * k + kk] * w[kk * n + j]).sum();
                // bf16 keeps 8 bits of mantissa: each product is off by < 2⁻⁸ relative.
                assert!((got[r * n + j] - exact).abs() < 0.05, "{r},{j}");
            }
        }
        assert!(
            Bf16Matrix::new(&w, k, n)
                .matmul(Kernel::Portable, &[], None)
                .is_empty()
        );
    }
}
