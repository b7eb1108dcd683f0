//! LoRA fine-tuning with burn's own LoRA (`Module::apply_lora`), saved in PEFT's format.
//!
//! - [`apply`]: attaches rank-`r` factors to the target modules' weights (PEFT's module names
//!   per family, from the family registry's `lora_targets`, or `all-linear`); every base
//!   parameter is frozen, then the head (classifier, pooler, a fusion head) is unfrozen: it
//!   always trains.
//! - [`adapter_tensors`]: what a PEFT adapter file holds: `base_model.model.<module>.lora_A.weight`
//!   `[r, in]` = burn's `aᵀ`, `lora_B.weight` `[out, r]` = `bᵀ` (burn composes `W + s·a·b` in its
//!   `[in, out]` layout; PEFT `W + s·B·A` in torch's), and the head's tensors in torch layout,
//!   with the head's module names for `modules_to_save`.
//! - [`restore`]: a checkpoint's factors and head put back into a model built the same way
//!   (exact resume).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Lora, Module, ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::classifier::Model;
use crate::optim::ParamMap;
use crate::{Result, TrainError};

/// A LoRA run's settings, as `adapter_config.json` records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// The rank.
    pub rank: usize,
    /// The scaling numerator (`alpha / rank` scales `B·A`).
    pub alpha: f64,
    /// PEFT's module names adapted (`query`, `value`, …), resolved from `all-linear` or the
    /// family's default.
    pub targets: Vec<String>,
}

/// The module name of a parameter path (`…attention.self_attn.query.weight` → `query`).
fn module_of(path: &str) -> Option<&str> {
    let p = path.strip_suffix(".weight")?;
    p.rsplit('.').next()
}

/// Whether a path is one of the text model's (not a fusion head's).
fn in_text(path: &str) -> bool {
    path.starts_with("text.")
}

/// Attaches LoRA factors to the target weights of `model` and freezes everything but them and
/// the head. `targets`: PEFT module names, or `["all-linear"]` (every linear layer of the
/// encoder). Returns the model and the targets as resolved.
pub fn apply(
    model: Model,
    rank: usize,
    alpha: f64,
    targets: &[String],
) -> Result<(Model, LoraSpec)> {
    let map = ParamMap::of(&model);
    let all = targets.iter().any(|t| t == "all-linear");
    let mut names: Vec<String> = Vec::new();
    let mut ids: Vec<ParamId> = Vec::new();
    for (id, path, _) in &map.params {
        if !in_text(path) || ParamMap::is_head(path) || path.contains("embeddings") {
            continue;
        }
        let Some(module) = module_of(path) else {
            continue;
        };
        if all || targets.iter().any(|t| t == module) {
            ids.push(*id);
            if !names.iter().any(|n| n == module) {
                names.push(module.to_string());
            }
        }
    }
    let missing: Vec<&String> = targets
        .iter()
        .filter(|t| *t != "all-linear" && !names.contains(t))
        .collect();
    if ids.is_empty() || !missing.is_empty() {
        let available: std::collections::BTreeSet<&str> = map
            .params
            .iter()
            .filter(|(_, p, _)| in_text(p) && !ParamMap::is_head(p) && !p.contains("embeddings"))
            .filter_map(|(_, p, _)| module_of(p))
            .collect();
        return Err(TrainError::Config(format!(
            "lora_targets: {} not in this model; its linear modules are: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            available.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let head: Vec<ParamId> = map
        .params
        .iter()
        .filter(|(_, p, _)| ParamMap::is_head(p))
        .map(|(id, _, _)| *id)
        .collect();
    let model = model
        .apply_lora(Lora::new(rank, alpha).set_param_group(ParamGroup::from_ids(ids)))
        .unfreeze_group(ParamGroup::from_ids(head));
    Ok((
        model,
        LoraSpec {
            rank,
            alpha,
            targets: names,
        },
    ))
}

/// `(trainable, total)` parameters of a LoRA model: the factors and the head against the base.
pub fn counts(model: &Model) -> (usize, usize) {
    let map = ParamMap::of(model);
    let factor = |p: &str| p.contains(".lora.");
    let trainable = map
        .params
        .iter()
        .filter(|(_, p, _)| factor(p) || ParamMap::is_head(p))
        .map(|p| p.2)
        .sum();
    let total = map
        .params
        .iter()
        .filter(|(_, p, _)| !factor(p))
        .map(|p| p.2)
        .sum();
    (trainable, total)
}

/// Every float of a model with its path, as `(path, shape, values)`.
fn floats(model: &Model) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    #[derive(Default)]
    struct All {
        stack: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for All {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            let shape = t.dims().to_vec();
            let values = t.into_data().try_into_vec::<f32>().expect("f32 parameters");
            self.out.push((self.stack.join("."), shape, values));
        }
    }
    let mut all = All::default();
    model.visit(&mut all);
    all.out
}

/// The HF key of a text-model path: the `text.<Family>.` root off, `self_attn` → `self`,
/// LayerNorm `gamma`/`beta` → `weight`/`bias`.
fn hf_key(path: &str) -> Option<String> {
    let rest = path.strip_prefix("text.")?.split_once('.')?.1;
    let key = rest.replace(".self_attn.", ".self.");
    Some(match key.rsplit_once('.') {
        Some((m, "gamma")) => format!("{m}.weight"),
        Some((m, "beta")) => format!("{m}.bias"),
        _ => key,
    })
}

/// `[rows, cols]` values transposed.
pub(crate) fn transpose(shape: &[usize], v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (r, c) = (shape[0], shape[1]);
    let mut out = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    (vec![c, r], out)
}

/// The tensors of a PEFT adapter file for a LoRA model (factors and head, torch layout, PEFT's
/// keys), and the head's module names (`modules_to_save`).
pub fn adapter_tensors(model: &Model) -> (Vec<(String, Vec<usize>, Vec<f32>)>, Vec<String>) {
    let mut out = Vec::new();
    let mut modules: Vec<String> = Vec::new();
    let backbones = sequin_heads::backbone_prefixes();
    for (path, shape, values) in floats(model) {
        if !in_text(&path) {
            continue;
        }
        if let Some((weight, factor)) = path.rsplit_once(".lora.") {
            let Some(key) = hf_key(weight) else { continue };
            let module = key.strip_suffix(".weight").unwrap_or(&key).to_string();
            let name = if factor == "a" { "lora_A" } else { "lora_B" };
            let (s, v) = transpose(&shape, &values);
            out.push((format!("base_model.model.{module}.{name}.weight"), s, v));
        } else if ParamMap::is_head(&path) {
            let Some(key) = hf_key(&path) else { continue };
            let (s, v) = match shape.len() {
                2 => transpose(&shape, &values),
                _ => (shape, values),
            };
            // The module's own name (`classifier`, `pre_classifier`, `pooler`, `head`).
            // (The backbone's own prefix, `bert.` of `bert.pooler`, comes from the registry.)
            let root = key
                .split('.')
                .find(|c| !backbones.contains(c))
                .unwrap_or("classifier");
            if !modules.iter().any(|m| m == root) {
                modules.push(root.to_string());
            }
            out.push((format!("base_model.model.{key}"), s, v));
        }
    }
    (out, modules)
}

/// Puts a saved adapter's factors and head (an `adapter_model.safetensors` that
/// [`adapter_tensors`] wrote) back into a model that [`apply`] built the same way.
pub fn restore(model: Model, file: &Path) -> Result<Model> {
    let bytes = std::fs::read(file).map_err(|source| TrainError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", file.display())))?;
    let mut saved: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(TrainError::Config(format!(
                "{}: tensor `{name}` is {:?}; a sequin adapter checkpoint holds F32 tensors",
                file.display(),
                view.dtype()
            )));
        }
        let v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        saved.insert(name, (view.shape().to_vec(), v));
    }
    // The same keys for the model's own tensors, back to burn's layout.
    let mut wanted: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let (own, _) = adapter_tensors(&model);
    let paths: Vec<String> = floats(&model)
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| in_text(p) && (p.contains(".lora.") || ParamMap::is_head(p)))
        .collect();
    for ((key, _, _), path) in own.iter().zip(&paths) {
        let (shape, values) = saved.get(key).ok_or_else(|| {
            TrainError::Config(format!("{}: tensor `{key}` is missing", file.display()))
        })?;
        let burn = match shape.len() {
            2 => transpose(shape, values),
            _ => (shape.clone(), values.clone()),
        };
        wanted.insert(path.clone(), burn);
    }
    struct Put {
        stack: Vec<String>,
        wanted: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    }
    impl ModuleMapper for Put {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let Some((shape, values)) = self.wanted.remove(&self.stack.join(".")) else {
                return p;
            };
            p.map(|t| {
                let grad = t.is_require_grad();
                let shape: [usize; D] = shape.clone().try_into().expect("same rank");
                let n = Tensor::<D>::from_data(TensorData::new(values.clone(), shape), &t.device());
                if grad { n.require_grad() } else { n }
            })
        }
    }
    let mut put = Put {
        stack: Vec::new(),
        wanted,
    };
    let model = model.map(&mut put);
    if let Some(k) = put.wanted.keys().next() {
        return Err(TrainError::Config(format!(
            "{}: could not put `{k}` back into the model",
            file.display()
        )));
    }
    Ok(model)
}

/// `adapter_config.json` of a LoRA run, as PEFT writes it for a sequence classifier.
pub fn adapter_config(
    spec: &LoraSpec,
    base: &str,
    modules_to_save: &[String],
) -> serde_json::Value {
    serde_json::json!({
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": 0.0,
        "target_modules": spec.targets,
        "modules_to_save": modules_to_save,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    })
}
