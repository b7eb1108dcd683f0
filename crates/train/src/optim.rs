//! The optimizer as transformers' `Trainer` sets it up.

use burn::module::ParamGroup;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use crate::config::LrSchedule;

/// Gives every parameter an id derived from its position in the module (0, 1, 2, ... in
/// visiting order), so that the same architecture gets the same ids in every process and an
/// optimizer state saved by one run applies to the model another run rebuilds.
pub fn stable_param_ids<M: Module>(model: M) -> M {
    struct Ids(u64);
    impl ModuleMapper for Ids {
        fn map_float<const D: usize>(&mut self, mut p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.id = ParamId::from(self.0);
            self.0 += 1;
            p
        }
    }
    model.map(&mut Ids(1))
}

/// Learning rate at optimizer step `step` (0-based) of `total`, after `warmup` linear steps,
/// as transformers' schedulers compute it.
pub fn schedule(kind: LrSchedule, peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    match kind {
        LrSchedule::Linear => linear_schedule(peak, step, warmup, total),
        LrSchedule::Constant => peak,
        LrSchedule::Cosine => {
            let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
            peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}

/// A [`schedule`] scaled by a group's multiplier, as burn's scheduler interface wants it.
#[derive(Clone)]
pub struct Scheduled {
    kind: LrSchedule,
    peak: f64,
    warmup: usize,
    total: usize,
    /// The next step.
    pub step: usize,
}

impl LrScheduler for Scheduled {
    fn step(&mut self) -> f64 {
        let lr = schedule(self.kind, self.peak, self.step, self.warmup, self.total);
        self.step += 1;
        lr
    }
    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new()
    }
    fn load_record(&mut self, _record: LrSchedulerRecord) {}
}

/// The parameter groups with their own learning rate: the head (and pooler) at `head_lr`, and
/// with layer-wise decay layer `l` of `L` at `lr · decay^(L − 1 − l)` and the embeddings at
/// `lr · decay^L`.
///
/// Returns `(ids, multiplier of the base lr)` per group; parameters in no group train at
/// the base rate.
pub fn lr_groups<M: Module>(
    model: &M,
    lr: f64,
    layer_decay: Option<f64>,
    head_lr: Option<f64>,
) -> Vec<(Vec<ParamId>, f64)> {
    let map = ParamMap::of(model);
    let (paths, n_layers) = (&map, map.n_layers);
    let (layer_of, is_head) = (ParamMap::layer_of, ParamMap::is_head);
    let mut groups: std::collections::BTreeMap<u64, (Vec<ParamId>, f64)> = Default::default();
    for (id, path, _) in &paths.params {
        let mult = if is_head(path) {
            head_lr.map(|h| h / lr)
        } else if let Some(decay) = layer_decay {
            // The top layer trains at lr, each layer below at `decay` times the one above,
            // the embeddings below the first layer.
            let depth = match layer_of(path) {
                Some(l) => n_layers - 1 - l,
                None => n_layers,
            };
            Some(decay.powi(depth as i32))
        } else {
            None
        };
        if let Some(m) = mult {
            groups
                .entry(m.to_bits())
                .or_insert_with(|| (Vec::new(), m))
                .0
                .push(*id);
        }
    }
    groups.into_values().collect()
}

/// Every float parameter of a model with its path and size, placed in the encoder's structure:
/// the head (every top-level field but the backbone, plus the pooler), the embeddings, or
/// layer `N` (`...layer.N...` / `...layers.N...`). The backbone's field names come from the
/// family registry (`sequin_heads::backbone_prefixes`).
pub struct ParamMap {
    /// `(id, path, elements)` in visiting order.
    pub params: Vec<(ParamId, String, usize)>,
    /// Encoder layers.
    pub n_layers: usize,
}

impl ParamMap {
    /// The map of a model.
    pub fn of<M: Module>(model: &M) -> Self {
        #[derive(Default)]
        struct Paths {
            stack: Vec<String>,
            params: Vec<(ParamId, String, usize)>,
        }
        impl ModuleVisitor for Paths {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.stack.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.stack.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                let n = p.val().dims().iter().product();
                self.params.push((p.id, self.stack.join("."), n));
            }
        }
        let mut paths = Paths::default();
        model.visit(&mut paths);
        let n_layers = paths
            .params
            .iter()
            .filter_map(|(_, p, _)| Self::layer_of(p))
            .max()
            .map_or(0, |m| m + 1);
        Self {
            params: paths.params,
            n_layers,
        }
    }

    /// The layer index of a parameter path.
    pub fn layer_of(path: &str) -> Option<usize> {
        let parts: Vec<&str> = path.split('.').collect();
        parts
            .windows(2)
            .find(|w| w[0] == "layer" || w[0] == "layers")
            .and_then(|w| w[1].parse().ok())
    }

    /// Whether a path is the head's: a top-level field other than the backbone, or the
    /// pooler. (The visitor may or may not name the root module: the first components are
    /// looked at.)
    pub fn is_head(path: &str) -> bool {
        let backbones = sequin_heads::backbone_prefixes();
        let in_backbone = path.split('.').take(4).any(|c| backbones.contains(&c));
        !in_backbone || path.contains("pooler")
    }

    /// The parameters that `freeze` leaves untrained: with `backbone`, every one but the
    /// head's (a linear probe); with `layers = N`, the embeddings and layers `0..N`. The head,
    /// the pooler and a fusion head always train.
    pub fn frozen(&self, backbone: bool, layers: Option<usize>) -> Vec<ParamId> {
        self.params
            .iter()
            .filter(|(_, path, _)| {
                !Self::is_head(path)
                    && (backbone
                        || layers.is_some_and(|n| Self::layer_of(path).is_none_or(|l| l < n)))
            })
            .map(|(id, _, _)| *id)
            .collect()
    }

    /// `(trainable, total)` elements when `frozen` are not trained.
    pub fn counts(&self, frozen: &[ParamId]) -> (usize, usize) {
        let total = self.params.iter().map(|p| p.2).sum();
        let fixed: usize = self
            .params
            .iter()
            .filter(|p| frozen.contains(&p.0))
            .map(|p| p.2)
            .sum();
        (total - fixed, total)
    }
}

/// The per-group schedules: the base group plus one per [`lr_groups`] entry.
pub fn module_scheduler(
    kind: LrSchedule,
    lr: f64,
    groups: &[(Vec<ParamId>, f64)],
    warmup: usize,
    total: usize,
    step: usize,
) -> ModuleLrScheduler {
    let make = |peak: f64| Scheduled {
        kind,
        peak,
        warmup,
        total,
        step,
    };
    let mut s = ModuleLrScheduler::new(make(lr));
    for (ids, mult) in groups {
        s = s.with_group(ParamGroup::from_ids(ids.clone()), make(lr * mult));
    }
    s
}
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
    fn layer_wise_decay_and_head_rate() {
        use burn::tensor::Device;
        use sequin_heads::Family;
        let config: sequin_encoders::BertConfig = serde_json::from_str(
            r#"{"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 3,
                "num_attention_heads": 2, "intermediate_size": 16}"#,
        )
        .unwrap();
        let model =
            sequin_heads::BertForSequenceClassification::init(&config, 2, &Device::flex()).unwrap();
        let groups = lr_groups(&model, 1e-4, Some(0.5), Some(1e-3));
        let mut mults: Vec<f64> = groups.iter().map(|g| g.1).collect();
        mults.sort_by(f64::total_cmp);
        // embeddings 0.5³, layers 0.5², 0.5, 1, head (classifier + pooler) 10.
        assert_eq!(mults, vec![0.125, 0.25, 0.5, 1.0, 10.0]);
        let size = |m: f64| groups.iter().find(|g| g.1 == m).unwrap().0.len();
        assert_eq!(size(10.0), 4); // classifier weight + bias, pooler dense weight + bias
        assert_eq!(size(0.125), 5); // word, position, type embeddings, LayerNorm γ, β
        assert_eq!(size(0.25), size(1.0)); // one encoder layer each
        assert!(lr_groups(&model, 1e-4, None, None).is_empty());
    }

    #[test]
    fn cosine_and_constant_schedules() {
        let cos: Vec<f64> = (0..10)
            .map(|s| schedule(LrSchedule::Cosine, 1.0, s, 2, 10))
            .collect();
        assert_eq!(cos[1], 0.5);
        assert_eq!(cos[2], 1.0);
        assert!((cos[6] - 0.5).abs() < 1e-12); // halfway through the decay
        assert!(cos[9] > 0.0 && cos[9] < cos[8]);
        assert_eq!(schedule(LrSchedule::Constant, 1.0, 9, 2, 10), 1.0);
        assert_eq!(schedule(LrSchedule::Constant, 1.0, 1, 2, 10), 0.5);
    }

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
