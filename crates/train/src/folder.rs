//! The model folder: the one module that reads and writes sequin's whole folder format.
//!
//! ```text
//! DIR/
//!   config.json, model.safetensors         the HF sequence classifier (sequin_hf)
//!   tokenizer.json, tokenizer_config.json  its tokenizer
//!   sequin.json                            [`InputPolicy`]: input fitting, thresholds
//!   fusion.json, fusion.safetensors        [`FusionFile`] and the fusion head (metadata models)
//! ```
//!
//! Checkpoints (`checkpoints/checkpoint-N/`) are such a folder plus the optimizer and trainer
//! state (see the trainer's `checkpoint` module). Every file is written atomically.

use std::path::Path;

use burn::tensor::Device;

use sequin_data::FittedFeatures;
use sequin_encoders::common::{materialize, with_param_init};
use sequin_heads::{Aggregate, FusionConfig, ProblemType};
use sequin_hf::{
    HfConfig, LoadReport, load_fusion_weights, save_classifier_folder, save_fusion_weights,
    write_atomic,
};
use sequin_tokenize::{LongText, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::classifier::Model;
use crate::{Result, TrainError};

/// sequin's own settings saved beside an HF model folder (`sequin.json`): how inputs are fitted,
/// so that eval and predict do what training did, and multi-label decision thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputPolicy {
    /// Tokens per row, special tokens included.
    pub max_length: usize,
    /// Long-text policy.
    #[serde(default)]
    pub long_text: LongText,
    /// Aggregation of chunk logits.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Multi-label: each label's threshold on its sigmoid probability (0.5 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f32>>,
    /// The columns the model was trained on (absent in folders from before it was saved, and
    /// in folders transformers wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<InputSchema>,
    /// The fitted score calibration (single-label models), applied by eval, predict and serve
    /// unless they are told `--no-calibration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<crate::calibrate::Calibration>,
    /// A few example texts (the serve playground offers them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// The input schema of a trained model: the columns it reads and the labels it gives, saved
/// in `sequin.json` so that eval and predict read what training read without repeating it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSchema {
    /// The text column.
    pub text_column: String,
    /// The second text of a pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair_column: Option<String>,
    /// The label column (absent for 0/1 label columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Multi-label data as one 0/1 column per label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_columns: Vec<String>,
    /// Metadata columns (their transforms are in `fusion.json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_columns: Vec<String>,
    /// The label set, in id order.
    pub labels: Vec<String>,
}

impl InputSchema {
    /// The schema of a run's columns and labels.
    pub fn new(cols: &sequin_data::Columns, labels: &[String]) -> Self {
        Self {
            text_column: cols.text.clone(),
            text_pair_column: cols.text_pair.clone(),
            label_column: cols.label.clone().filter(|_| cols.label_columns.is_empty()),
            label_columns: cols.label_columns.clone(),
            feature_columns: cols.features.clone(),
            labels: labels.to_vec(),
        }
    }
}

/// The file name of [`InputPolicy`] in a model folder.
pub const POLICY_FILE: &str = "sequin.json";

/// `fusion.json` in a model folder: the fusion head's shape and the fitted metadata transforms.
/// The head's weights are in `fusion.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionFile {
    /// Format version (1).
    pub version: u32,
    /// The head.
    pub fusion: FusionConfig,
    /// The transforms, fitted on the training data.
    pub features: FittedFeatures,
}

/// The file name of [`FusionFile`].
pub const FUSION_FILE: &str = "fusion.json";
/// The file name of the fusion head's weights.
pub const FUSION_WEIGHTS: &str = "fusion.safetensors";

/// Reads `fusion.json` from a model folder (`None` when it has none).
pub fn read_fusion_file(dir: &Path) -> Result<Option<FusionFile>> {
    let path = dir.join(FUSION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(serde_json::from_str(&s).map_err(|e| {
            TrainError::Config(format!("{}: invalid fusion settings: {e}", path.display()))
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::Config(format!("{}: {e}", path.display()))),
    }
}

impl FusionFile {
    /// Checks the head against the model it sits on (`text_size`: its pooled width) and the
    /// weights file that holds it (`weight_bytes` long): the widths agree with the fitted
    /// features, and the declared head fits in the file, so a corrupt `fusion.json` can never
    /// make the loader allocate more than the weights file holds.
    pub fn check(&self, path: &Path, text_size: usize, weight_bytes: u64) -> Result<()> {
        let bad = |m: String| TrainError::Config(format!("{}: {m}", path.display()));
        if self.fusion.text_size != text_size {
            return Err(bad(format!(
                "the fusion head reads a {}-wide text vector, but the model's is {}",
                self.fusion.text_size, text_size
            )));
        }
        if self.fusion.numeric_width != self.features.numeric_width()
            || self.fusion.categorical != self.features.categorical_dims()
        {
            return Err(bad(
                "the fusion head's input widths do not match its fitted features".into(),
            ));
        }
        sequin_encoders::common::check_dropouts(&[("fusion.dropout", self.fusion.dropout)])
            .map_err(|e| bad(e.to_string()))?;
        if !self.fusion.gating_beta.is_finite() {
            return Err(bad(format!(
                "fusion.gating_beta {} is not a finite number",
                self.fusion.gating_beta
            )));
        }
        let params = self.fusion.parameter_count();
        if params.is_none_or(|p| (p as u64).saturating_mul(2) > weight_bytes) {
            return Err(bad(format!(
                "the head it declares ({} parameters) does not fit in {FUSION_WEIGHTS} ({weight_bytes} bytes)",
                params.map_or("too many".to_string(), |p| p.to_string())
            )));
        }
        Ok(())
    }
}

/// Loads a model folder: the HF classifier, and the fusion head when `fusion.json` is there.
pub fn load_model(
    dir: &Path,
    num_labels: Option<usize>,
    device: &Device,
) -> Result<(Model, HfConfig, LoadReport, Option<FusionFile>)> {
    if sequin_hf::is_adapter(dir) {
        // A PEFT adapter folder (a LoRA run's output): merged onto its base.
        let cfg = sequin_hf::read_adapter_config(dir)?;
        let base = sequin_hf::resolve(&cfg.base(dir, None)?)?;
        return load_adapted_model(&base, Some(dir), num_labels, device);
    }
    load_adapted_model(dir, None, num_labels, device)
}

/// As [`load_model`], with a PEFT adapter folder merged into the base folder `dir` (the
/// fusion files, when there are any, are the adapter's).
pub fn load_adapted_model(
    dir: &Path,
    adapter: Option<&Path>,
    num_labels: Option<usize>,
    device: &Device,
) -> Result<(Model, HfConfig, LoadReport, Option<FusionFile>)> {
    let (text, config, report) =
        sequin_hf::load_adapted_classifier(dir, adapter, num_labels, device)?;
    let dir = adapter.unwrap_or(dir);
    let sentence = crate::setfit::read_head(dir, text.pooled_size(), text.num_labels(), device)?;
    let file = read_fusion_file(dir)?;
    let fusion = match &file {
        Some(f) => {
            let weights = dir.join(FUSION_WEIGHTS);
            let bytes = std::fs::metadata(&weights).map(|m| m.len()).unwrap_or(0);
            f.check(&dir.join(FUSION_FILE), text.pooled_size(), bytes)?;
            let head = with_param_init(|| {
                let head = f.fusion.init(device);
                materialize(&head);
                head
            });
            Some(load_fusion_weights(&weights, head)?)
        }
        None => None,
    };
    Ok((
        Model {
            text,
            fusion,
            sentence,
        },
        config,
        report,
        file,
    ))
}

/// Reads `sequin.json` (for a folder without one, the policy transformers would apply:
/// truncation at the tokenizer's `model_max_length`, at most the model's).
pub fn read_policy(dir: &Path, config: &HfConfig) -> Result<InputPolicy> {
    let path = dir.join(POLICY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            TrainError::Config(format!("{}: invalid sequin settings: {e}", path.display()))
        }),
        // A folder transformers wrote: truncate at the tokenizer's model_max_length.
        Err(_) => {
            let from_tok = std::fs::read_to_string(dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v.get("model_max_length").and_then(|m| m.as_u64()))
                .map(|m| m as usize);
            Ok(InputPolicy {
                max_length: from_tok.unwrap_or(128).min(config.arch.max_length()),
                long_text: LongText::Truncate,
                aggregate: Aggregate::Mean,
                thresholds: None,
                schema: None,
                calibration: None,
                examples: Vec::new(),
            })
        }
    }
}

/// Writes a trained model as a complete folder: the same bytes for the run folder and every
/// checkpoint.
pub(crate) struct FolderWriter<'a> {
    /// The base model's `config.json`, updated with the labels and problem type.
    pub base_config: &'a HfConfig,
    /// Class names in id order.
    pub labels: &'a [String],
    /// The problem type.
    pub problem: ProblemType,
    /// The tokenizer saved beside the model.
    pub tokenizer: &'a Tokenizer,
    /// Tokens per row (saved in `tokenizer_config.json`).
    pub max_length: usize,
    /// The fusion head's config and fitted features, for a metadata model.
    pub fusion: Option<(&'a FusionConfig, &'a FittedFeatures)>,
    /// A LoRA run: its settings and the base model's name, so that the folder is a PEFT
    /// adapter.
    pub lora: Option<(&'a crate::lora::LoraSpec, &'a str)>,
}

impl FolderWriter<'_> {
    /// Writes `model` with `policy` into `dir`.
    pub fn write(&self, dir: &Path, model: &Model, policy: &InputPolicy) -> Result<()> {
        if let (Some(head), Some((fc, f))) = (&model.fusion, self.fusion) {
            save_fusion_weights(&dir.join(FUSION_WEIGHTS), head)?;
            let file = FusionFile {
                version: 1,
                fusion: fc.clone(),
                features: f.clone(),
            };
            write_json(&dir.join(FUSION_FILE), &file)?;
        }
        match self.lora {
            Some((spec, base)) => {
                let (tensors, modules) = crate::lora::adapter_tensors(model);
                let config = crate::lora::adapter_config(spec, base, &modules);
                let meta = sequin_hf::FolderMeta {
                    base: self.base_config,
                    labels: self.labels,
                    problem_type: self.problem,
                    tokenizer: self.tokenizer,
                    max_length: self.max_length,
                };
                sequin_hf::save_adapter_folder(dir, &tensors, &config, &meta)?;
            }
            None => save_classifier_folder(
                dir,
                &model.text,
                self.base_config,
                self.labels,
                self.problem,
                self.tokenizer,
                self.max_length,
            )?,
        }
        write_policy(dir, policy)?;
        if let Some((fc, _)) = self.fusion {
            mark_fusion(dir, fc)?;
        }
        if let Some(head) = &model.sentence {
            crate::setfit::write_head_files(dir, head, self.labels, self.max_length)?;
            mark(
                dir,
                "sequin_setfit",
                serde_json::json!({
                    "note": "a SetFit model: the trained head is model_head.safetensors on the sentence embedding of modules.json, not this config's classifier (untrained); sentence-transformers loads the body",
                    "head": crate::setfit::HEAD_WEIGHTS,
                }),
            )?;
        }
        Ok(())
    }
}

/// Writes `sequin.json`.
pub fn write_policy(dir: &Path, policy: &InputPolicy) -> Result<()> {
    write_json(&dir.join(POLICY_FILE), policy)
}

/// Writes a value as pretty JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomic(
        path,
        serde_json::to_string_pretty(value)
            .expect("json")
            .as_bytes(),
    )?;
    Ok(())
}

/// Tells a transformers user, in `config.json`, that this folder's classifier is not the
/// trained one: the fusion head is.
fn mark_fusion(dir: &Path, fc: &FusionConfig) -> Result<()> {
    mark(
        dir,
        "sequin_fusion",
        serde_json::json!({
            "method": fc.method,
            "files": [FUSION_FILE, FUSION_WEIGHTS],
            "note": "This model fuses metadata with the text: its predictions come from the fusion head in the files above (load the folder with sequin). The encoder weights here are the fine-tuned ones; the `classifier` weights are not trained.",
        }),
    )
}

/// Adds `key: value` to a folder's `config.json` (a note for transformers users).
fn mark(dir: &Path, key: &str, value: serde_json::Value) -> Result<()> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let mut config: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    config.insert(key.into(), value);
    write_json(&path, &config)
}
