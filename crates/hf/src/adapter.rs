//! PEFT LoRA adapters for sequence classification, as Python's `peft` saves them:
//! `adapter_config.json` (`peft_type` LORA, `task_type` SEQ_CLS, `r`, `lora_alpha`,
//! `target_modules`, `modules_to_save`, `base_model_name_or_path`) and
//! `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight` `[r, in]`,
//! `….lora_B.weight` `[out, r]`, and the saved modules' own tensors, such as
//! `base_model.model.classifier.weight`).
//!
//! An adapter is applied by merging: every adapted weight becomes `W + s · B · A` with
//! `s = lora_alpha / r` (`/ √r` with rsLoRA), and the saved modules replace the base's. The
//! model built from the merged tensors computes what PEFT's computes in eval mode. Anything this
//! cannot reproduce (DoRA, trained biases, `fan_in_fan_out`, per-layer rank or alpha patterns,
//! another task) is refused with the field that says so, and so is an adapter that saves no
//! classification head: its head would be a random one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use serde_json::Value;

use crate::{HfError, Result};

/// The adapter's config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter's weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix PEFT gives every saved key.
const PEFT_PREFIX: &str = "base_model.model.";

/// `adapter_config.json`, as far as merging needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    /// `LORA`.
    pub peft_type: String,
    /// `SEQ_CLS`.
    #[serde(default)]
    pub task_type: Option<String>,
    /// The rank.
    pub r: usize,
    /// The scaling numerator.
    pub lora_alpha: f64,
    /// rsLoRA: scale by `alpha / √r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA (not supported).
    #[serde(default)]
    pub use_dora: bool,
    /// Conv1D-style weights (not supported).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Trained biases: `none` is supported.
    #[serde(default)]
    pub bias: Option<String>,
    /// Per-module ranks (not supported).
    #[serde(default)]
    pub rank_pattern: Option<serde_json::Map<String, Value>>,
    /// Per-module alphas (not supported).
    #[serde(default)]
    pub alpha_pattern: Option<serde_json::Map<String, Value>>,
    /// The base model: a hub id or a path (relative paths are tried against the adapter's
    /// folder first).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Modules saved whole (the head).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
}

/// Whether a folder holds a PEFT adapter.
pub fn is_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Reads and checks an adapter's config: a LoRA adapter for sequence classification that a
/// merge reproduces exactly.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let bad = |message: String| HfError::Config {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|source| HfError::Io {
        path: path.clone(),
        source,
    })?;
    let c: AdapterConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let refuse = |field: &str, what: String| Err(bad(format!("{field}: {what}")));
    if c.peft_type != "LORA" {
        return refuse(
            "peft_type",
            format!("`{}`; only LORA adapters are supported", c.peft_type),
        );
    }
    if c.task_type.as_deref() != Some("SEQ_CLS") {
        return refuse(
            "task_type",
            format!(
                "{:?}; a sequence classifier's adapter has SEQ_CLS (its head is saved with it)",
                c.task_type
            ),
        );
    }
    if c.r == 0 {
        return refuse("r", "0; the rank must be at least 1".into());
    }
    if c.use_dora {
        return refuse("use_dora", "true; DoRA adapters are not supported".into());
    }
    if c.fan_in_fan_out {
        return refuse("fan_in_fan_out", "true; not used by these encoders".into());
    }
    if c.bias.as_deref().is_some_and(|b| b != "none") {
        return refuse("bias", format!("{:?}; only `none` is supported", c.bias));
    }
    for (field, pattern) in [
        ("rank_pattern", &c.rank_pattern),
        ("alpha_pattern", &c.alpha_pattern),
    ] {
        if pattern.as_ref().is_some_and(|p| !p.is_empty()) {
            return refuse(field, "per-module ranks or alphas are not supported".into());
        }
    }
    Ok(c)
}

impl AdapterConfig {
    /// The factor of `B · A`.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f64).sqrt()
        } else {
            self.lora_alpha / self.r as f64
        }
    }

    /// The base model: `base` if given, else `base_model_name_or_path` (a path relative to the
    /// adapter folder when such a folder exists, else as written: a path or a hub id).
    pub fn base(&self, dir: &Path, base: Option<&str>) -> Result<String> {
        if let Some(b) = base {
            return Ok(b.to_string());
        }
        let Some(b) = self
            .base_model_name_or_path
            .as_deref()
            .filter(|b| !b.is_empty())
        else {
            return Err(HfError::Config {
                path: dir.join(ADAPTER_CONFIG),
                message: "base_model_name_or_path is empty; name the base model with --base".into(),
            });
        };
        let beside = dir.join(b);
        Ok(match beside.is_dir() {
            true => beside.to_string_lossy().into_owned(),
            false => b.to_string(),
        })
    }
}

/// A tensor as f32 values with its shape.
type Dense = (Vec<usize>, Vec<f32>);

fn floats(path: &Path, name: &str, t: &TensorView<'_>) -> Result<Dense> {
    let data = t.data();
    let values: Vec<f32> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(HfError::Tensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                message: format!("has dtype {other:?}; expected float32, float16 or bfloat16"),
            });
        }
    };
    Ok((t.shape().to_vec(), values))
}

/// The base checkpoint's tensors with the adapter merged in, serialized as safetensors:
/// `W ← W + s · B · A` for every LoRA pair, and the saved modules' tensors in place of the
/// base's. Fails closed, naming the adapter tensor, on a key the base lacks, a shape that does
/// not fit, a factor without its pair, or an adapter without a saved head (`head_rows`).
pub fn merge_adapter(
    base: &SafeTensors<'_>,
    base_path: &Path,
    adapter_dir: &Path,
    cfg: &AdapterConfig,
    head_rows: &str,
) -> Result<Vec<u8>> {
    let path: PathBuf = adapter_dir.join(ADAPTER_WEIGHTS);
    let bytes = std::fs::read(&path).map_err(|source| HfError::Io {
        path: path.clone(),
        source,
    })?;
    let adapter = SafeTensors::deserialize(&bytes).map_err(|e| HfError::Weights {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let mut tensors: BTreeMap<String, Dense> = BTreeMap::new();
    let mut others: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for name in base.names() {
        let t = base.tensor(name).expect("listed");
        if matches!(t.dtype(), Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            tensors.insert(name.to_string(), floats(base_path, name, &t)?);
        } else {
            others.insert(
                name.to_string(),
                (t.dtype(), t.shape().to_vec(), t.data().to_vec()),
            );
        }
    }
    let tensor_err = |tensor: &str, message: String| HfError::Tensor {
        path: path.clone(),
        tensor: tensor.to_string(),
        message,
    };
    let mut names: Vec<&str> = adapter.names().into_iter().collect();
    names.sort();
    let mut head = false;
    for name in names {
        let t = adapter.tensor(name).expect("listed");
        if name.ends_with(".lora_B.weight") {
            continue;
        }
        if let Some(module) = name.strip_suffix(".lora_A.weight") {
            let b_name = format!("{module}.lora_B.weight");
            let b = adapter
                .tensor(&b_name)
                .map_err(|_| tensor_err(name, format!("has no `{b_name}` beside it")))?;
            let weight = format!("{module}.weight");
            let key = base_key(&tensors, &weight).ok_or_else(|| {
                tensor_err(
                    name,
                    format!(
                        "adapts `{weight}`, which the base model at {} does not have",
                        base_path.display()
                    ),
                )
            })?;
            let (a, b) = (floats(&path, name, &t)?, floats(&path, &b_name, &b)?);
            let w = tensors.get_mut(&key).expect("found");
            add_low_rank(w, &a, &b, cfg.scale() as f32).map_err(|m| tensor_err(name, m))?;
            continue;
        }
        if name.contains("lora_") {
            return Err(tensor_err(
                name,
                "is a LoRA tensor this merge does not know (lora_A / lora_B weights only)".into(),
            ));
        }
        // A saved module's tensor (the head): it replaces the base's, whose shape it may change
        // (another label count) only for the head.
        // (On a bare encoder checkpoint, `bert.pooler.…` is the base's `pooler.…`; a head the
        // base lacks keeps its name.)
        let key = base_key(&tensors, name)
            .unwrap_or_else(|| name.strip_prefix(PEFT_PREFIX).unwrap_or(name).to_string());
        let dense = floats(&path, name, &t)?;
        if let Some((shape, _)) = tensors.get(&key) {
            if *shape != dense.0
                && key != head_rows
                && !key.starts_with(head_rows.trim_end_matches("weight"))
            {
                return Err(tensor_err(
                    name,
                    format!("has shape {:?}; the base's `{key}` has {shape:?}", dense.0),
                ));
            }
        }
        head |= key == head_rows;
        tensors.insert(key, dense);
    }
    if !head {
        return Err(HfError::Missing {
            path,
            tensors: vec![format!(
                "{PEFT_PREFIX}{head_rows} (the classification head: the adapter must save it, modules_to_save)"
            )],
        });
    }
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, (shape, v))| {
            let data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            (n, Dtype::F32, shape, data)
        })
        .collect();
    out.extend(others.into_iter().map(|(n, (d, s, b))| (n, d, s, b)));
    let views = out
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| HfError::Weights {
            path: path.clone(),
            message: e.to_string(),
        })?;
    safetensors::serialize(views, None).map_err(|e| HfError::Weights {
        path,
        message: e.to_string(),
    })
}

/// The base's key for an adapter key: `base_model.model.` off, and the family prefix off too
/// when the base checkpoint is a bare encoder.
fn base_key(tensors: &BTreeMap<String, Dense>, key: &str) -> Option<String> {
    let k = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
    if tensors.contains_key(k) {
        return Some(k.to_string());
    }
    k.split_once('.')
        .map(|(_, rest)| rest.to_string())
        .filter(|r| tensors.contains_key(r))
}

/// `w[out, in] += s · b[out, r] · a[r, in]`.
fn add_low_rank(w: &mut Dense, a: &Dense, b: &Dense, s: f32) -> std::result::Result<(), String> {
    let (out, inp) = match w.0.as_slice() {
        [o, i] => (*o, *i),
        other => return Err(format!("adapts a tensor of shape {other:?}, not a matrix")),
    };
    let r = a.0.first().copied().unwrap_or(0);
    if a.0 != [r, inp] || b.0 != [out, r] {
        return Err(format!(
            "has shape {:?} and its lora_B {:?}; the base weight [{out}, {inp}] needs [r, {inp}] and [{out}, r]",
            a.0, b.0
        ));
    }
    for o in 0..out {
        let row = &mut w.1[o * inp..(o + 1) * inp];
        for k in 0..r {
            let f = s * b.1[o * r + k];
            for (x, &av) in row.iter_mut().zip(&a.1[k * inp..(k + 1) * inp]) {
                *x += f * av;
            }
        }
    }
    Ok(())
}
