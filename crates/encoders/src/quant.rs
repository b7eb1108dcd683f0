//! Inference precision of the encoders' linear layers.
//!
//! [`Precision::Int8`] runs every linear layer that goes through [`crate::common::dense`]
//! (attention projections and feed-forward layers: nearly all of an encoder's FLOPs) with
//! dynamic int8 quantization ([`crate::int8`]); embeddings, LayerNorms, attention's softmax and
//! the classifier head stay in `f32`, as with `torch.ao.quantization.quantize_dynamic` applied
//! to an encoder's `Linear` layers.
//!
//! A module is switched to int8 by [`Int8Linears::mark`]: its weights' parameter ids are
//! marked, and each marked weight is quantized once, at its first use on an inference device
//! (never on an autodiff device: training is always `f32`). Dropping the returned guard
//! unmarks them and frees the int8 copies. Parameter ids are unique, so models of different
//! precisions share a process freely.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::int8::{Kernel, QuantizedMatrix};

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
}

impl Precision {
    /// The name the CLI takes and `run.json` records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Int8 => "int8",
        }
    }
}

/// A quantized weight and its bias, made at the weight's first int8 use.
type Slot = Arc<OnceLock<(QuantizedMatrix, Option<Vec<f32>>)>>;

static MARKED: LazyLock<RwLock<HashMap<ParamId, Slot>>> = LazyLock::new(Default::default);
static KERNEL: LazyLock<Kernel> = LazyLock::new(Kernel::detect);

/// The int8 kernel this process runs (see [`Kernel::detect`]).
pub fn int8_kernel() -> Kernel {
    *KERNEL
}

/// The weights of a module marked for int8 inference; unmarked when dropped.
#[derive(Debug)]
#[must_use = "the module runs in int8 only while this guard lives"]
pub struct Int8Linears {
    ids: Vec<ParamId>,
}

impl Int8Linears {
    /// Marks every 2-D float parameter of `module`. Only those that reach
    /// [`crate::common::dense`] as a `Linear`'s weight are ever quantized; the others (an
    /// embedding table) are never looked up.
    pub fn mark<M: Module>(module: &M) -> Self {
        struct Collect(Vec<ParamId>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if D == 2 {
                    self.0.push(param.id);
                }
            }
        }
        let mut c = Collect(Vec::new());
        module.visit(&mut c);
        let mut marked = MARKED.write().unwrap_or_else(|p| p.into_inner());
        for id in &c.0 {
            marked.insert(*id, Slot::default());
        }
        Self { ids: c.0 }
    }

    /// How many weights have been quantized so far.
    pub fn quantized(&self) -> usize {
        let marked = MARKED.read().unwrap_or_else(|p| p.into_inner());
        self.ids
            .iter()
            .filter(|id| marked.get(id).is_some_and(|s| s.get().is_some()))
            .count()
    }
}

impl Drop for Int8Linears {
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

/// `layer(x)` in int8 when `layer`'s weight is marked and `x` is on the host backend
/// without autodiff;
/// otherwise `x` back, for the caller to run in `f32`.
///
/// # Shapes
/// - x: `[rows, d_in]`; output: `[rows, d_out]`
pub(crate) fn linear(layer: &Linear, x: Tensor<2>) -> Result<Tensor<2>, Tensor<2>> {
    if !crate::host::is_host(&x.device()) {
        return Err(x);
    }
    let slot = {
        let marked = MARKED.read().unwrap_or_else(|p| p.into_inner());
        match marked.get(&layer.weight.id) {
            Some(slot) => slot.clone(),
            None => return Err(x),
        }
    };
    let (q, bias) = slot.get_or_init(|| {
        let w = layer.weight.val();
        let [k, n] = w.dims();
        let bias = layer.bias.as_ref().map(|b| floats(b.val()));
        (QuantizedMatrix::new(&floats(w), k, n), bias)
    });
    let (rows, device) = (x.dims()[0], x.device());
    let y = q.matmul(*KERNEL, &floats(x), bias.as_deref());
    Ok(Tensor::from_data(
        TensorData::new(y, [rows, q.n()]),
        &device,
    ))
}
