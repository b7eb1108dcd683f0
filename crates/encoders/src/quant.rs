//! Inference precision of the encoders' linear layers.
//!
//! [`Precision::Int8`] runs every linear layer that goes through [`crate::common::dense`]
//! (attention projections and feed-forward layers: nearly all of an encoder's FLOPs) with
//! dynamic int8 quantization ([`crate::int8`]); embeddings, LayerNorms, attention's softmax and
//! the classifier head stay in `f32`, as with `torch.ao.quantization.quantize_dynamic` applied
//! to an encoder's `Linear` layers. [`Precision::Bf16`] runs the same layers with bf16
//! operands and `f32` accumulation ([`crate::bf16`]).
//!
//! A module is switched by [`LowPrecisionLinears::mark`]: its weights' parameter ids are
//! marked, and each marked weight is converted once, at its first use on an inference device
//! (never on an autodiff device: training is always `f32`). Dropping the returned guard
//! unmarks them and frees the converted copies. Parameter ids are unique, so models of
//! different precisions share a process freely.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::bf16::{self, Bf16Matrix};
use crate::int8::{self, QuantizedMatrix};

/// The arithmetic of an inference pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in `f32` (the default, and always the case when training).
    #[default]
    Fp32,
    /// Linear layers with int8 weights (per output channel) and int8 activations (per row,
    /// dynamic), accumulated in `i32`.
    Int8,
    /// Linear layers with bf16 weights and activations, accumulated in `f32`.
    Bf16,
}

impl Precision {
    /// The name the CLI takes and `run.json` records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Int8 => "int8",
            Self::Bf16 => "bf16",
        }
    }

    /// The kernel this CPU runs the linear layers with at this precision, as `--version` and
    /// `eval`'s output name it (`None` for `f32`, which is burn's own matmul).
    pub fn kernel_name(self) -> Option<&'static str> {
        match self {
            Self::Fp32 => None,
            Self::Int8 => Some(int8_kernel().name()),
            Self::Bf16 => Some(bf16_kernel().name()),
        }
    }
}

/// The inverse of [`Precision::name`].
impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Fp32, Self::Int8, Self::Bf16]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision `{s}`: fp32, int8 or bf16"))
    }
}

/// A weight converted for its precision.
#[derive(Debug)]
enum Packed {
    Int8(QuantizedMatrix),
    Bf16(Bf16Matrix),
}

impl Packed {
    /// Output features.
    fn n(&self) -> usize {
        match self {
            Self::Int8(q) => q.n(),
            Self::Bf16(q) => q.n(),
        }
    }

    /// `x · w + bias` with this CPU's kernel for the precision.
    fn matmul(&self, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        match self {
            Self::Int8(q) => q.matmul(*INT8, x, bias),
            Self::Bf16(q) => q.matmul(*BF16, x, bias),
        }
    }
}

/// A converted weight and its bias, made at the weight's first low-precision use.
type Slot = Arc<OnceLock<(Packed, Option<Vec<f32>>)>>;

static MARKED: LazyLock<RwLock<HashMap<ParamId, (Precision, Slot)>>> =
    LazyLock::new(Default::default);
static INT8: LazyLock<int8::Kernel> = LazyLock::new(int8::Kernel::detect);
static BF16: LazyLock<bf16::Kernel> = LazyLock::new(bf16::Kernel::detect);

/// The int8 kernel this process runs (see [`int8::Kernel::detect`]).
pub fn int8_kernel() -> int8::Kernel {
    *INT8
}

/// The bf16 kernel this process runs (see [`bf16::Kernel::detect`]).
pub fn bf16_kernel() -> bf16::Kernel {
    *BF16
}

/// The weights of a module marked for low-precision inference; unmarked when dropped.
#[derive(Debug)]
#[must_use = "the module runs at low precision only while this guard lives"]
pub struct LowPrecisionLinears {
    ids: Vec<ParamId>,
    precision: Precision,
}

impl LowPrecisionLinears {
    /// Marks every 2-D float parameter of `module` for `precision` (`Fp32` marks nothing).
    /// Only those that reach [`crate::common::dense`] as a `Linear`'s weight are ever
    /// converted; the others (an embedding table) are never looked up.
    pub fn mark<M: Module>(module: &M, precision: Precision) -> Self {
        struct Collect(Vec<ParamId>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if D == 2 {
                    self.0.push(param.id);
                }
            }
        }
        let mut c = Collect(Vec::new());
        if precision != Precision::Fp32 {
            module.visit(&mut c);
        }
        let mut marked = MARKED.write().unwrap_or_else(|p| p.into_inner());
        for id in &c.0 {
            marked.insert(*id, (precision, Slot::default()));
        }
        Self {
            ids: c.0,
            precision,
        }
    }

    /// The precision the marked layers run at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// How many weights have been converted so far.
    pub fn quantized(&self) -> usize {
        let marked = MARKED.read().unwrap_or_else(|p| p.into_inner());
        self.ids
            .iter()
            .filter(|id| marked.get(id).is_some_and(|(_, s)| s.get().is_some()))
            .count()
    }
}

impl Drop for LowPrecisionLinears {
    fn drop(&mut self) {
        let mut marked = MARKED.write().unwrap_or_else(|p| p.into_inner());
        for id in &self.ids {
            marked.remove(id);
        }
    }
}

fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("a float tensor converts to f32")
}

/// `layer(x)` at its marked precision when `layer`'s weight is marked and `x` is on the host
/// backend without autodiff; otherwise `x` back, for the caller to run in `f32`.
///
/// # Shapes
/// - x: `[rows, d_in]`; output: `[rows, d_out]`
pub(crate) fn linear(layer: &Linear, x: Tensor<2>) -> Result<Tensor<2>, Tensor<2>> {
    if !crate::host::is_host(&x.device()) {
        return Err(x);
    }
    let (precision, slot) = {
        let marked = MARKED.read().unwrap_or_else(|p| p.into_inner());
        match marked.get(&layer.weight.id) {
            Some((precision, slot)) => (*precision, slot.clone()),
            None => return Err(x),
        }
    };
    let (packed, _) = slot.get_or_init(|| {
        let w = layer.weight.val();
        let [k, n] = w.dims();
        let bias = layer.bias.as_ref().map(|b| floats(b.val()));
        let w = floats(w);
        let packed = match precision {
            Precision::Bf16 => Packed::Bf16(Bf16Matrix::new(&w, k, n)),
            _ => Packed::Int8(QuantizedMatrix::new(&w, k, n)),
        };
        (packed, bias)
    });
    let shape = [x.dims()[0], packed.n()];
    Ok(crate::host::read(x, shape, move |x| {
        let (packed, bias) = slot.get().expect("packed above");
        packed.matmul(x, bias.as_deref())
    }))
}

/// `x · w + bias` for `x` `[m, k]` (row-major) into a new `[m, n]`, in parallel tasks of
/// `rows_per_task` rows: `task(x_rows, rows, bias, out_rows)` computes one task's rows. The
/// driver both low-precision kernels share ([`crate::int8`], [`crate::bf16`]).
pub(crate) fn row_tasks(
    x: &[f32],
    (k, n): (usize, usize),
    bias: Option<&[f32]>,
    rows_per_task: usize,
    task: impl Fn(&[f32], usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(x.len() % k.max(1), 0, "input is not [m, k]");
    let m = if k == 0 { 0 } else { x.len() / k };
    let mut out = vec![0f32; m * n];
    if n == 0 {
        return out;
    }
    let zeros;
    let bias = match bias {
        Some(b) => {
            assert_eq!(b.len(), n, "bias is not [n]");
            b
        }
        None => {
            zeros = vec![0f32; n];
            &zeros
        }
    };
    out.par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(t, out)| {
            let rows = out.len() / n;
            task(&x[t * rows_per_task * k..][..rows * k], rows, bias, out);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_parse_back() {
        for p in [Precision::Fp32, Precision::Int8, Precision::Bf16] {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        let e = "int4".parse::<Precision>().unwrap_err();
        assert!(e.contains("int4") && e.contains("bf16"), "{e}");
    }
}
