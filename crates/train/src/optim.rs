//! The optimizer as transformers' `Trainer` sets it up.

use burn::module::ParamGroup;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

/// AdamW (β = 0.9/0.999, ε = 1e-8) with `weight_decay` on weight matrices and none on biases
/// and LayerNorm parameters (every 1-D parameter, as HF's rule amounts to for these models).
pub fn adamw<M: Module>(model: &M, weight_decay: f64) -> ModuleOptimizer {
    #[derive(Default)]
    struct OneD(Vec<ParamId>);
    impl ModuleVisitor for OneD {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if D == 1 {
                self.0.push(p.id);
            }
        }
    }
    let mut no_decay = OneD::default();
    model.visit(&mut no_decay);
    let base = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_beta_1(0.9)
        .with_beta_2(0.999);
    base.clone()
        .with_weight_decay(weight_decay as f32)
        .init()
        .with_group(
            ParamGroup::from_ids(no_decay.0),
            base.with_weight_decay(0.0).build(),
            None,
        )
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`
/// (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SumSq<'a> {
        grads: &'a GradientsParams,
        acc: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSq<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(p.id) {
                let s = g.powi_scalar(2).sum();
                self.acc = Some(match self.acc.take() {
                    Some(a) => a + s,
                    None => s,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(p.id) {
                self.grads.register(p.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSq { grads, acc: None };
    model.visit(&mut sum);
    let Some(acc) = sum.acc else { return 0.0 };
    let norm = (acc.into_scalar::<f32>() as f64).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        model.visit(&mut Scale {
            grads,
            factor: coef,
        });
    }
    norm
}

/// transformers' `get_linear_schedule_with_warmup`: the learning rate for optimizer step
/// `step` (0-based) of `total`.
pub fn linear_schedule(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        peak * step as f64 / warmup.max(1) as f64
    } else {
        peak * ((total - step.min(total)) as f64 / (total - warmup).max(1) as f64).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_transformers() {
        // warmup 2 of 10: 0, .5, 1, then linear to 0
        let lrs: Vec<f64> = (0..10).map(|s| linear_schedule(1.0, s, 2, 10)).collect();
        assert_eq!(lrs[0], 0.0);
        assert_eq!(lrs[1], 0.5);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[6] - 0.5).abs() < 1e-12);
        assert!((lrs[9] - 0.125).abs() < 1e-12);
    }
}
