//! Run options.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Result, TrainError};

fn d_text() -> String {
    "text".into()
}
fn d_label() -> String {
    "label".into()
}
fn d_epochs() -> usize {
    2
}
fn d_batch() -> usize {
    32
}
fn d_eval_batch() -> usize {
    64
}
fn d_lr() -> f64 {
    5e-5
}
fn d_wd() -> f64 {
    0.01
}
fn d_warmup() -> f64 {
    0.1
}
fn d_max_len() -> usize {
    128
}
fn d_seed() -> u64 {
    42
}
fn d_clip() -> f64 {
    1.0
}
fn d_one() -> usize {
    1
}
fn d_metric() -> String {
    "accuracy".into()
}

/// How the learning rate moves after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Linear decay to zero (transformers' default).
    #[default]
    Linear,
    /// Half a cosine wave down to zero.
    Cosine,
    /// Constant after warmup.
    Constant,
}

/// Class weights: `auto` (inverse class frequency, `n / (k · count)`; for multi-label each
/// label's `negatives / positives` as BCE's `pos_weight`), or one weight per class in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassWeights {
    /// `"auto"`.
    Auto(AutoWeights),
    /// Explicit weights.
    List(Vec<f64>),
}

/// The one named class-weight scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWeights {
    /// Inverse frequency.
    Auto,
}

/// The training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// HF's loss for the problem type (cross-entropy, BCE, MSE).
    #[default]
    Auto,
    /// Focal loss (single-label): down-weights easy examples by `(1 − p)^γ`.
    Focal,
}

/// How training examples are drawn each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampler {
    /// Every example once per epoch, shuffled (grouped by length unless turned off).
    #[default]
    Random,
    /// As many draws as examples, with replacement, each class equally likely
    /// (single-label).
    Balanced,
}

/// When training data is augmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentMode {
    /// Once, before training: `num_aug` variants of every training example are added.
    Offline,
    /// Every epoch, each training example is replaced by a fresh variant (seeded by the run
    /// seed, the epoch and the example, so a resumed run sees the same texts).
    PerEpoch,
}

/// Augmentation of the training data (never of validation or test data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// When.
    pub mode: AugmentMode,
    /// The pipeline.
    pub pipeline: sequin_augment::Pipeline,
    /// Offline: variants per example.
    #[serde(default = "d_num_aug")]
    pub num_aug: usize,
    /// Single-label: before training, add augmented variants of the examples of every class
    /// smaller than the largest until each class has as many examples (cycling through the
    /// class's examples), so rare classes are seen as often without exact duplicates.
    #[serde(default)]
    pub oversample: bool,
}

fn d_num_aug() -> usize {
    4
}

fn d_gamma() -> f64 {
    2.0
}

/// The metrics a run can select its best checkpoint and stop early on.
pub const BEST_METRICS: &[&str] = &["accuracy", "macro_f1", "micro_f1", "loss", "r2"];

/// Every option of a training run. The defaults are those of the reference
/// transformers `Trainer` run (2 epochs, lr 5e-5, batch 32, max_length 128, warmup 0.1,
/// weight decay 0.01, seed 42). Unknown keys in a config file are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Model folder or hub id.
    pub model: String,
    /// Training data file.
    pub train: PathBuf,
    /// Validation data file (evaluated after each epoch; the best epoch is kept).
    #[serde(default)]
    pub validation: Option<PathBuf>,
    /// Test data file (evaluated once at the end).
    #[serde(default)]
    pub test: Option<PathBuf>,
    /// Output model folder.
    pub output: PathBuf,
    /// Text column.
    #[serde(default = "d_text")]
    pub text_column: String,
    /// Optional second-text column.
    #[serde(default)]
    pub text_pair_column: Option<String>,
    /// Label column.
    #[serde(default = "d_label")]
    pub label_column: String,
    /// Epochs.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Training batch size.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Evaluation batch size.
    #[serde(default = "d_eval_batch")]
    pub eval_batch_size: usize,
    /// Peak learning rate.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// AdamW weight decay (not applied to biases and LayerNorm).
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Fraction of steps of linear warmup.
    #[serde(default = "d_warmup")]
    pub warmup_ratio: f64,
    /// Maximum tokens per example.
    #[serde(default = "d_max_len")]
    pub max_length: usize,
    /// Pad batches to a multiple of this.
    #[serde(default)]
    pub pad_to_multiple_of: Option<usize>,
    /// Seed for initialisation, dropout and shuffling.
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Global gradient-norm clipping.
    #[serde(default = "d_clip")]
    pub max_grad_norm: f64,
    /// Stop after this many optimizer steps (for smoke tests); `None` = all epochs.
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// How texts longer than `max_length` are fitted (saved with the model, applied the same
    /// way by eval and predict).
    #[serde(default)]
    pub long_text: sequin_tokenize::LongText,
    /// How a chunked document's window logits are combined.
    #[serde(default)]
    pub aggregate: sequin_heads::Aggregate,
    /// Form training batches of similar length (less padding, same examples per epoch).
    /// `None`: yes, except with offline augmentation, whose variants of one example have
    /// similar lengths and would share batches (measured: it hurt accuracy, README).
    #[serde(default)]
    pub group_by_length: Option<bool>,
    /// Row shards per batch whose forward and backward passes run in parallel (see
    /// `sequin_train::shard`): more CPU cores busy per step, the same gradient up to float
    /// rounding. `None`: 1. The CLI's default is 4 on the CPU backend and 1 on GPUs. Mixup
    /// always runs as one shard (it pairs rows across the batch).
    #[serde(default)]
    pub shards: Option<usize>,
    /// Cap the number of training examples (first N after a seeded shuffle).
    #[serde(default)]
    pub max_train_samples: Option<usize>,
    /// Batches whose gradients are summed (each loss divided by this) before one optimizer
    /// step.
    #[serde(default = "d_one")]
    pub gradient_accumulation_steps: usize,
    /// Learning-rate schedule after warmup.
    #[serde(default)]
    pub lr_scheduler: LrSchedule,
    /// Layer-wise learning-rate decay: the top encoder layer trains at `lr`, each layer below
    /// at `decay` times the one above, the embeddings below the first layer. `None` = the same
    /// rate everywhere.
    #[serde(default)]
    pub layer_lr_decay: Option<f64>,
    /// Learning rate of the classification head (and pooler); `None` = `lr`.
    #[serde(default)]
    pub head_lr: Option<f64>,
    /// Evaluate (and checkpoint) every this many optimizer steps; `None` = after every epoch.
    #[serde(default)]
    pub eval_steps: Option<usize>,
    /// The validation metric that picks the best checkpoint and drives early stopping
    /// (`accuracy`, `macro_f1`: higher is better; `loss`: lower is better).
    #[serde(default = "d_metric")]
    pub metric_for_best_model: String,
    /// Stop after this many evaluations without an improvement of at least
    /// `early_stopping_min_delta`.
    #[serde(default)]
    pub early_stopping_patience: Option<usize>,
    /// The least change of the metric that counts as an improvement.
    #[serde(default)]
    pub early_stopping_min_delta: f64,
    /// Checkpoints kept besides the last one: the best by `metric_for_best_model`.
    #[serde(default = "d_one")]
    pub save_total_limit: usize,
    /// HF `problem_type`; `None` = multi-label when the labels are lists (or
    /// `label_columns` are given), else single-label.
    #[serde(default)]
    pub problem_type: Option<sequin_heads::ProblemType>,
    /// Multi-label data as one 0/1 column per label (instead of `label_column`).
    #[serde(default)]
    pub label_columns: Vec<String>,
    /// Multi-label: choose each label's decision threshold on the validation data (for F1)
    /// instead of 0.5; the thresholds are saved with the model and used by eval and predict.
    #[serde(default)]
    pub tune_thresholds: bool,
    /// Class weights in the loss (`pos_weight` for multi-label).
    #[serde(default)]
    pub class_weights: Option<ClassWeights>,
    /// The training loss.
    #[serde(default)]
    pub loss: LossKind,
    /// Focal loss γ.
    #[serde(default = "d_gamma")]
    pub focal_gamma: f64,
    /// How examples are drawn.
    #[serde(default)]
    pub sampler: Sampler,
    /// Without a validation file: hold out this fraction of the training data, stratified by
    /// label, as validation data.
    #[serde(default)]
    pub validation_split: Option<f64>,
    /// Augmentation of the training data.
    #[serde(default)]
    pub augment: Option<AugmentConfig>,
    /// Mixup in embedding space (Zhang et al. 2018; for text, Sun et al. 2020): each batch's
    /// pooled text vectors and its targets (one-hot, multi-hot or values) are mixed with a
    /// shuffled copy of the batch, `λ ~ Beta(α, α)`, and the loss is the soft-label loss.
    /// Token ids are never mixed. `None` = off.
    #[serde(default)]
    pub mixup_alpha: Option<f64>,
    /// Metadata columns and their transforms (fitted on the training data only).
    #[serde(default)]
    pub features: sequin_data::FeatureSpec,
    /// How metadata is fused with the text; `None`: `concat` when metadata columns are given,
    /// else text only.
    #[serde(default)]
    pub fusion: Option<sequin_heads::FusionMethod>,
}

impl TrainConfig {
    /// A config with defaults for everything but the paths.
    pub fn new(
        model: impl Into<String>,
        train: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        serde_json::from_value(serde_json::json!({
            "model": model.into(),
            "train": train.into(),
            "output": output.into(),
        }))
        .expect("defaults deserialize")
    }

    /// Checks option values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "--warmup-ratio must be in [0, 1), got {}",
                self.warmup_ratio
            ));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad(format!(
                "--weight-decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("--gradient-accumulation-steps must be at least 1".into());
        }
        if let Some(d) = self.layer_lr_decay
            && !(d > 0.0 && d <= 1.0)
        {
            return bad(format!("--layer-lr-decay must be in (0, 1], got {d}"));
        }
        if let Some(h) = self.head_lr
            && !(h > 0.0 && h.is_finite())
        {
            return bad(format!("--head-lr must be positive, got {h}"));
        }
        if self.eval_steps == Some(0) {
            return bad("--eval-steps must be at least 1".into());
        }
        if !BEST_METRICS.contains(&self.metric_for_best_model.as_str()) {
            return bad(format!(
                "--metric-for-best-model `{}` is not one of {}",
                self.metric_for_best_model,
                BEST_METRICS.join(", ")
            ));
        }
        if self.early_stopping_min_delta.is_nan() || self.early_stopping_min_delta < 0.0 {
            return bad(format!(
                "--early-stopping-min-delta must be >= 0, got {}",
                self.early_stopping_min_delta
            ));
        }
        if self.early_stopping_patience == Some(0) {
            return bad("--early-stopping-patience must be at least 1".into());
        }
        if let Some(f) = self.validation_split {
            if !(f > 0.0 && f < 1.0) {
                return bad(format!("--validation-split must be in (0, 1), got {f}"));
            }
            if self.validation.is_some() {
                return bad("--validation-split and --validation exclude each other".into());
            }
        }
        if !(self.focal_gamma >= 0.0 && self.focal_gamma.is_finite()) {
            return bad(format!(
                "--focal-gamma must be >= 0, got {}",
                self.focal_gamma
            ));
        }
        if let Some(ClassWeights::List(w)) = &self.class_weights
            && w.iter().any(|x| !(x.is_finite() && *x >= 0.0))
        {
            return bad(format!(
                "--class-weights must be finite and >= 0, got {w:?}"
            ));
        }
        if let Some(alpha) = self.mixup_alpha
            && !(alpha.is_finite() && alpha > 0.0)
        {
            return bad(format!("--mixup-alpha must be > 0, got {alpha}"));
        }
        if self.mixup_alpha.is_some() && self.loss == LossKind::Focal {
            return bad("--mixup-alpha and --loss focal cannot be combined (mixup uses the soft-label cross-entropy)".into());
        }
        if self.mixup_alpha.is_some()
            && matches!(self.long_text, sequin_tokenize::LongText::Chunk { .. })
        {
            return bad("--mixup-alpha needs one row per document; it cannot be used with --long-text chunk".into());
        }
        if self.fusion_method().is_some() && self.mixup_alpha.is_some() {
            return bad("--mixup-alpha cannot be combined with metadata fusion".into());
        }
        if self.fusion_method().is_some() && self.features.is_empty() {
            return bad("--fusion needs metadata columns (--numeric-columns, --categorical-columns or --date-columns)".into());
        }
        if self.fusion_method().is_some()
            && matches!(self.long_text, sequin_tokenize::LongText::Chunk { .. })
        {
            return bad("metadata fusion needs one row per document; it cannot be used with --long-text chunk".into());
        }
        {
            let cols = self.feature_columns();
            let mut seen = std::collections::HashSet::new();
            for c in &cols {
                if !seen.insert(c) {
                    return bad(format!("feature column `{c}` is given twice"));
                }
                if *c == self.text_column
                    || Some(c) == self.text_pair_column.as_ref()
                    || *c == self.label_column
                {
                    return bad(format!(
                        "feature column `{c}` is also the text or label column"
                    ));
                }
            }
        }
        if let Some(a) = &self.augment {
            a.pipeline
                .validate()
                .map_err(|e| TrainError::Config(e.to_string()))?;
        }
        if self.max_length < 2 {
            return bad(format!(
                "--max-length must be at least 2, got {}",
                self.max_length
            ));
        }
        Ok(())
    }

    /// Row shards per training batch (see [`Self::shards`]).
    pub fn shards(&self) -> usize {
        self.shards.unwrap_or(1).max(1)
    }

    /// Whether training batches are grouped by length (see [`Self::group_by_length`]).
    pub fn length_grouping(&self) -> bool {
        self.group_by_length.unwrap_or_else(|| {
            !self
                .augment
                .as_ref()
                .is_some_and(|a| a.mode == AugmentMode::Offline && a.num_aug > 0)
        })
    }

    /// The metadata columns, in reading order.
    pub fn feature_columns(&self) -> Vec<String> {
        self.features.columns()
    }

    /// The fusion method in effect (`None`: a plain text classifier).
    pub fn fusion_method(&self) -> Option<sequin_heads::FusionMethod> {
        match (self.fusion, self.features.is_empty()) {
            (Some(sequin_heads::FusionMethod::TextOnly), _) | (None, true) => None,
            (Some(m), _) => Some(m),
            (None, false) => Some(sequin_heads::FusionMethod::Concat),
        }
    }

    /// Data columns.
    pub fn columns(&self) -> sequin_data::Columns {
        sequin_data::Columns {
            text: self.text_column.clone(),
            text_pair: self.text_pair_column.clone(),
            label: Some(self.label_column.clone()),
            label_columns: self.label_columns.clone(),
            features: self.feature_columns(),
        }
    }
}
