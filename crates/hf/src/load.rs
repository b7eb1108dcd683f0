//! Loading `model.safetensors` into a model, failing closed.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_store::{
    ApplyError, ApplyResult, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sequin_encoders::common::{materialize, with_param_init};
use sequin_heads::{CheckpointKeys, SequenceClassifier};

use crate::{HfConfig, HfError, Result, io_err};

/// What a load did, beyond the tensors that were simply applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Number of tensors taken from the checkpoint.
    pub applied: usize,
    /// Model tensors that were not in the checkpoint and were initialised afresh (a new head).
    pub newly_initialized: Vec<String>,
    /// Checkpoint tensors that were deliberately not used (pretraining heads, a head whose
    /// label count differs, the `position_ids` buffer).
    pub discarded: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loaded {} tensors", self.applied)?;
        if !self.newly_initialized.is_empty() {
            write!(
                f,
                "; newly initialised: {}",
                self.newly_initialized.join(", ")
            )?;
        }
        if !self.discarded.is_empty() {
            write!(f, "; not used: {}", self.discarded.join(", "))?;
        }
        Ok(())
    }
}

/// Prefix under which a discarded head is parked, so that it shows up as unused.
const DISCARDED: &str = "sequin_discarded_head.";

/// Turns a burn module path back into the HF checkpoint key.
fn to_hf_key(path: &str) -> String {
    let p = path.replace(".attention.self_attn.", ".attention.self.");
    if let Some(stem) = p.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = p.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        p
    }
}

/// The weights of a folder, read and checked, ready to apply.
enum Weights {
    Safetensors(SafetensorsStore),
    Pytorch(PytorchStore),
}

/// Reads `model.safetensors` (converting float16/bfloat16 to float32), or else
/// `pytorch_model.bin`. Returns the store, its file, its keys and the classifier's row count.
fn open_weights(
    dir: &Path,
    head_rows: &str,
    adapter: Option<(&Path, &crate::AdapterConfig)>,
) -> Result<(Weights, PathBuf, Vec<String>, Option<usize>)> {
    let st_path = dir.join("model.safetensors");
    let pt_path = dir.join("pytorch_model.bin");
    if !st_path.is_file() && pt_path.is_file() {
        if let Some((a, _)) = adapter {
            return Err(HfError::Weights {
                path: pt_path,
                message: format!(
                    "the adapter {} needs its base in model.safetensors (save the base with safe_serialization)",
                    a.display()
                ),
            });
        }
        let mut probe = PytorchStore::from_file(&pt_path);
        let wt_err = |e: burn_store::PytorchStoreError| HfError::Weights {
            path: pt_path.clone(),
            message: e.to_string(),
        };
        let keys = probe.keys().map_err(wt_err)?;
        let head = probe
            .get_tensor(head_rows)
            .map_err(wt_err)?
            .map(|t| t.shape.first().copied().unwrap_or(0));
        return Ok((
            Weights::Pytorch(PytorchStore::from_file(&pt_path)),
            pt_path,
            keys,
            head,
        ));
    }
    let path = st_path;
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => HfError::Weights {
            path: path.clone(),
            message: "not found (nor pytorch_model.bin beside it)".into(),
        },
        _ => io_err(&path)(e),
    })?;
    let st_err = |message: String| HfError::Weights {
        path: path.clone(),
        message,
    };
    let bytes = match adapter {
        Some((adapter_dir, cfg)) => {
            let base = SafeTensors::deserialize(&bytes).map_err(|e| st_err(e.to_string()))?;
            crate::adapter::merge_adapter(&base, &path, adapter_dir, cfg, head_rows)?
        }
        None => bytes,
    };
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| st_err(e.to_string()))?;
    let mut keys: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    keys.sort();
    let head = tensors
        .tensor(head_rows)
        .ok()
        .map(|t| t.shape().first().copied().unwrap_or(0));
    let mut needs_cast = false;
    for name in &keys {
        let t = tensors.tensor(name).map_err(|e| st_err(e.to_string()))?;
        match t.dtype() {
            Dtype::F32 => {}
            Dtype::F16 | Dtype::BF16 => needs_cast = true,
            _ if name.ends_with("position_ids") => {}
            other => {
                return Err(HfError::Tensor {
                    path: path.clone(),
                    tensor: name.clone(),
                    message: format!("has dtype {other:?}; expected float32, float16 or bfloat16"),
                });
            }
        }
    }
    let bytes = if needs_cast {
        let widened: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = keys
            .iter()
            .map(|n| {
                let t = tensors.tensor(n).expect("listed");
                let data: Vec<u8> = match t.dtype() {
                    Dtype::F16 => t
                        .data()
                        .chunks_exact(2)
                        .flat_map(|b| {
                            half::f16::from_le_bytes([b[0], b[1]])
                                .to_f32()
                                .to_le_bytes()
                        })
                        .collect(),
                    Dtype::BF16 => t
                        .data()
                        .chunks_exact(2)
                        .flat_map(|b| {
                            half::bf16::from_le_bytes([b[0], b[1]])
                                .to_f32()
                                .to_le_bytes()
                        })
                        .collect(),
                    _ => t.data().to_vec(),
                };
                let dtype = if matches!(t.dtype(), Dtype::F16 | Dtype::BF16) {
                    Dtype::F32
                } else {
                    t.dtype()
                };
                (n.clone(), dtype, t.shape().to_vec(), data)
            })
            .collect();
        let views = widened
            .iter()
            .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| st_err(e.to_string()))?;
        safetensors::serialize(views, None).map_err(|e| st_err(e.to_string()))?
    } else {
        drop(tensors);
        bytes
    };
    let store = SafetensorsStore::from_bytes(Some(bytes)).with_from_adapter(PyTorchToBurnAdapter);
    Ok((Weights::Safetensors(store), path, keys, head))
}

/// Loads a sequence classifier of any supported family from an HF folder
/// (`model.safetensors`, else `pytorch_model.bin`).
///
/// - `num_labels`: the number of classes wanted. `None` takes the checkpoint's own head (and
///   fails if the folder is a bare encoder). When the folder's head has another label count,
///   or there is no head, a fresh head is initialised and reported.
/// - Keys may come with or without the family prefix (`bert.`, `roberta.`, `distilbert.`);
///   `position_ids` is skipped; pretraining heads are reported as not used.
/// - Any other missing or unused tensor, and any shape mismatch, is an error naming it.
pub fn load_classifier(
    dir: &Path,
    num_labels: Option<usize>,
    device: &Device,
) -> Result<(SequenceClassifier, HfConfig, LoadReport)> {
    load_adapted_classifier(dir, None, num_labels, device)
}

/// As [`load_classifier`], with a PEFT LoRA adapter (its folder) merged into the base
/// folder's weights first (see [`crate::adapter`]).
pub fn load_adapted_classifier(
    dir: &Path,
    adapter: Option<&Path>,
    num_labels: Option<usize>,
    device: &Device,
) -> Result<(SequenceClassifier, HfConfig, LoadReport)> {
    // An adapter folder sequin wrote carries the classifier's config.json (labels, problem
    // type); the architecture is the base's either way.
    let config = match adapter.filter(|a| a.join("config.json").is_file()) {
        Some(a) => HfConfig::from_dir(a)?,
        None => HfConfig::from_dir(dir)?,
    };
    let keys = config.arch.keys();
    let adapter_cfg = adapter.map(crate::read_adapter_config).transpose()?;
    let adapter = adapter.zip(adapter_cfg.as_ref());
    let (weights, path, names, ckpt_head) = open_weights(dir, keys.head_rows, adapter)?;
    let n = label_count(dir, num_labels, ckpt_head, &config)?;
    let remap = Remap {
        keys,
        has_prefix: names
            .iter()
            .any(|k| k.starts_with(&format!("{}.", keys.prefix))),
        reinit_head: ckpt_head.is_some_and(|h| h != n),
    };
    // Built, loaded and drawn in the process's turn: what the checkpoint lacks (a fresh head)
    // is drawn here, not lazily at first use beside another thread's seeded initialisation.
    let (model, result) = with_param_init(|| {
        let model = config
            .arch
            .init_classifier(n, device)
            .map_err(|source| HfError::Encoder {
                path: dir.join("config.json"),
                source,
            })?;
        let (model, result) = apply_any(model, weights, &remap, &path)?;
        materialize(&model);
        Ok::<_, HfError>((model, result))
    })?;
    let report = remap.report(&result, path)?;
    Ok((model, config, report))
}

/// The label count of the classifier to build: as asked, else the checkpoint head's, else
/// `id2label`'s.
fn label_count(
    dir: &Path,
    num_labels: Option<usize>,
    ckpt_head: Option<usize>,
    config: &HfConfig,
) -> Result<usize> {
    let bad = |message: &str| HfError::Config {
        path: dir.join("config.json"),
        message: message.into(),
    };
    let n = match (num_labels, ckpt_head, &config.labels) {
        (Some(n), _, _) => n,
        (None, Some(h), _) => h,
        (None, None, Some(l)) => l.len(),
        (None, None, None) => {
            return Err(bad(
                "the folder holds no classification head and no id2label; \
                 train a classifier from it first",
            ));
        }
    };
    if n == 0 {
        return Err(bad("a classifier needs at least one label"));
    }
    Ok(n)
}

/// How checkpoint keys become module paths for one load.
struct Remap {
    keys: &'static CheckpointKeys,
    /// Whether the checkpoint's keys carry the family prefix (a classifier checkpoint).
    has_prefix: bool,
    /// Whether the checkpoint's head is parked as unused (its label count differs).
    reinit_head: bool,
}

/// The same key remapping, whichever file format and family.
macro_rules! configure {
    ($store:expr, $remap:expr) => {{
        let r: &Remap = $remap;
        let mut s = $store.validate(false).allow_partial(true);
        if !r.has_prefix {
            s = s.with_key_remapping(
                format!(r"^({})\.", r.keys.base_roots),
                format!("{}.$1.", r.keys.prefix),
            );
        }
        s = s.with_key_remapping(r"\.attention\.self\.", ".attention.self_attn.");
        if r.reinit_head {
            for h in r.keys.head {
                s = s
                    .with_key_remapping(format!("^{}", regex_escape(h)), format!("{DISCARDED}{h}"));
            }
        }
        s
    }};
}

/// Applies the weights to one family's classifier.
fn apply_weights<M: ModuleSnapshot>(
    mut model: M,
    weights: Weights,
    remap: &Remap,
    path: &Path,
) -> Result<(M, ApplyResult)> {
    let result = match weights {
        Weights::Safetensors(st) => model
            .load_from(&mut configure!(st, remap))
            .map_err(|e| e.to_string()),
        Weights::Pytorch(pt) => model
            .load_from(&mut configure!(pt, remap))
            .map_err(|e| e.to_string()),
    }
    .map_err(|message| HfError::Weights {
        path: path.to_path_buf(),
        message,
    })?;
    Ok((model, result))
}

macro_rules! apply_any {
    ($($v:ident => $t:ty),* $(,)?) => {
        /// [`apply_weights`] on whichever family `model` is.
        fn apply_any(
            model: SequenceClassifier,
            weights: Weights,
            remap: &Remap,
            path: &Path,
        ) -> Result<(SequenceClassifier, ApplyResult)> {
            Ok(match model {
                $(SequenceClassifier::$v(m) => {
                    let (m, r) = apply_weights(m, weights, remap, path)?;
                    (SequenceClassifier::$v(m), r)
                })*
            })
        }
    };
}

sequin_heads::for_each_family!(apply_any);

impl Remap {
    /// The load report, or the error naming the first bad, missing or unused tensor.
    fn report(&self, result: &ApplyResult, path: PathBuf) -> Result<LoadReport> {
        if let Some(e) = result.errors.first() {
            return Err(apply_error(&path, e));
        }
        let keys = self.keys;
        let mut report = LoadReport {
            applied: result.applied.len(),
            ..LoadReport::default()
        };
        let mut missing = Vec::new();
        for (p, _) in &result.missing {
            let key = to_hf_key(p);
            if keys
                .head
                .iter()
                .chain(keys.fresh_ok)
                .any(|h| key.starts_with(h))
            {
                report.newly_initialized.push(key);
            } else {
                missing.push(key);
            }
        }
        if !missing.is_empty() {
            return Err(HfError::Missing {
                path,
                tensors: missing,
            });
        }
        let mut unused = Vec::new();
        for p in &result.unused {
            let (key, expected) = self.unused_key(p);
            if expected {
                report.discarded.push(key);
            } else {
                unused.push(key);
            }
        }
        if !unused.is_empty() {
            return Err(HfError::Unused {
                path,
                tensors: unused,
            });
        }
        report.newly_initialized.sort();
        report.discarded.sort();
        Ok(report)
    }

    /// An unused tensor's name as the checkpoint spells it, and whether leaving it unused is
    /// expected (a parked head, `position_ids`, a pretraining head, an unused pooler).
    fn unused_key(&self, p: &str) -> (String, bool) {
        let keys = self.keys;
        let mut key = to_hf_key(p);
        let discarded_head = key.starts_with(DISCARDED);
        if let Some(k) = key.strip_prefix(DISCARDED) {
            key = k.to_string();
        }
        if !self.has_prefix
            && let Some(k) = key.strip_prefix(&format!("{}.", keys.prefix))
        {
            key = k.to_string();
        }
        let expected = discarded_head
            || key.ends_with("position_ids")
            || keys
                .ignored
                .iter()
                .any(|i| key.starts_with(i) || to_hf_key(p).starts_with(i))
            || (!self.has_prefix && keys.bare_pooler_unused && key.starts_with("pooler."));
        (key, expected)
    }
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

fn apply_error(path: &Path, e: &ApplyError) -> HfError {
    match e {
        ApplyError::ShapeMismatch {
            path: p,
            expected,
            found,
        } => {
            let (mut exp, mut fnd) = (expected.to_vec(), found.to_vec());
            let key = to_hf_key(p);
            // Linear weights are stored [out, in] by HF and [in, out] by burn: speak HF.
            if key.ends_with(".weight") && exp.len() == 2 && !key.contains("embeddings") {
                exp.reverse();
                fnd.reverse();
            }
            HfError::Tensor {
                path: path.to_path_buf(),
                tensor: key,
                message: format!(
                    "has shape {fnd:?} in the checkpoint, but config.json implies {exp:?}"
                ),
            }
        }
        other => HfError::Tensor {
            path: path.to_path_buf(),
            tensor: match other {
                ApplyError::DTypeMismatch { path, .. }
                | ApplyError::AdapterError { path, .. }
                | ApplyError::LoadError { path, .. } => to_hf_key(path),
                ApplyError::ShapeMismatch { .. } => unreachable!(),
            },
            message: other.to_string(),
        },
    }
}

/// Loads a fusion head's weights (as [`crate::save_fusion_weights`] wrote them) into `head`,
/// failing on a missing, unexpected or wrongly shaped tensor.
pub fn load_fusion_weights(
    path: &Path,
    head: sequin_heads::FusionHead,
) -> Result<sequin_heads::FusionHead> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    SafeTensors::deserialize(&bytes).map_err(|e| HfError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut head = head;
    let mut store = SafetensorsStore::from_bytes(Some(bytes)).allow_partial(true);
    let result = head.load_from(&mut store).map_err(|e| HfError::Weights {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if let Some(e) = result.errors.first() {
        return Err(apply_error(path, e));
    }
    if !result.missing.is_empty() {
        return Err(HfError::Missing {
            path: path.to_path_buf(),
            tensors: result.missing.iter().map(|(p, _)| p.clone()).collect(),
        });
    }
    if !result.unused.is_empty() {
        return Err(HfError::Unused {
            path: path.to_path_buf(),
            tensors: result.unused.clone(),
        });
    }
    Ok(head)
}
