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

/// Defines [`TrainConfig`] and [`TrainOptions`] from one table of fields: `name: Type =>
/// default`, where the default is `Ok(value)` or, for a required option, an error. The one
/// place an option, its type and its default are written.
macro_rules! train_options {
    ($( $(#[$m:meta])* $f:ident : $t:ty => $d:expr, )*) => {
        /// Every option of a training run. The defaults are those of the reference
        /// transformers `Trainer` run (2 epochs, lr 5e-5, batch 32, max_length 128, warmup 0.1,
        /// weight decay 0.01, seed 42). Read from JSON through [`TrainOptions`], so unknown
        /// keys are rejected and absent ones take their defaults.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(try_from = "TrainOptions")]
        pub struct TrainConfig {
            $( $(#[$m])* pub $f: $t, )*
        }

        /// A partial [`TrainConfig`]: the options one source gives (flags, a config file, a
        /// saved run), each `None` where that source is silent. Sources are merged with
        /// [`TrainOptions::or`], and [`TrainOptions::resolve`] fills the defaults.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TrainOptions {
            $(
                $(#[$m])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $f: Option<$t>,
            )*
        }

        impl TrainOptions {
            /// These options, with `base`'s wherever these have none.
            pub fn or(self, base: TrainOptions) -> TrainOptions {
                TrainOptions { $( $f: self.$f.or(base.$f), )* }
            }

            /// The config: every option given, the defaults elsewhere; an error names a
            /// required option that is missing.
            pub fn resolve(self) -> Result<TrainConfig> {
                Ok(TrainConfig {
                    $(
                        $f: match self.$f {
                            Some(v) => v,
                            None => {
                                let default: Result<$t> = $d;
                                default?
                            }
                        },
                    )*
                })
            }
        }

        impl From<TrainConfig> for TrainOptions {
            fn from(c: TrainConfig) -> Self {
                TrainOptions { $( $f: Some(c.$f), )* }
            }
        }
    };
}

impl TryFrom<TrainOptions> for TrainConfig {
    type Error = TrainError;
    fn try_from(o: TrainOptions) -> Result<Self> {
        o.resolve()
    }
}

fn required(name: &str) -> TrainError {
    TrainError::Config(format!(
        "--{} is required (as a flag or in --config)",
        name.replace('_', "-")
    ))
}

train_options! {
    /// Model folder or hub id.
    model: String => Err(required("model")),
    /// Training data file.
    train: PathBuf => Err(required("train")),
    /// Validation data file (evaluated after each epoch; the best epoch is kept).
    validation: Option<PathBuf> => Ok(Default::default()),
    /// Test data file (evaluated once at the end).
    test: Option<PathBuf> => Ok(Default::default()),
    /// Output model folder.
    output: PathBuf => Err(required("output")),
    /// Text column.
    text_column: String => Ok(d_text()),
    /// Optional second-text column.
    text_pair_column: Option<String> => Ok(Default::default()),
    /// Label column.
    label_column: String => Ok(d_label()),
    /// Epochs.
    epochs: usize => Ok(d_epochs()),
    /// Training batch size.
    batch_size: usize => Ok(d_batch()),
    /// Evaluation batch size.
    eval_batch_size: usize => Ok(d_eval_batch()),
    /// Peak learning rate.
    lr: f64 => Ok(d_lr()),
    /// AdamW weight decay (not applied to biases and LayerNorm).
    weight_decay: f64 => Ok(d_wd()),
    /// Fraction of steps of linear warmup.
    warmup_ratio: f64 => Ok(d_warmup()),
    /// Maximum tokens per example.
    max_length: usize => Ok(d_max_len()),
    /// Pad batches to a multiple of this.
    pad_to_multiple_of: Option<usize> => Ok(Default::default()),
    /// Seed for initialisation, dropout and shuffling.
    seed: u64 => Ok(d_seed()),
    /// Global gradient-norm clipping.
    max_grad_norm: f64 => Ok(d_clip()),
    /// Stop after this many optimizer steps (for smoke tests); `None` = all epochs.
    max_steps: Option<usize> => Ok(Default::default()),
    /// How texts longer than `max_length` are fitted (saved with the model, applied the same
    /// way by eval and predict).
    long_text: sequin_tokenize::LongText => Ok(Default::default()),
    /// How a chunked document's window logits are combined.
    aggregate: sequin_heads::Aggregate => Ok(Default::default()),
    /// Form training batches of similar length (less padding, same examples per epoch).
    /// `None`: yes, except with offline augmentation, whose variants of one example have
    /// similar lengths and would share batches (measured: it hurt accuracy, README).
    group_by_length: Option<bool> => Ok(Default::default()),
    /// Row shards per batch whose forward and backward passes run in parallel (see
    /// `sequin_train::shard`): more CPU cores busy per step, the same gradient up to float
    /// rounding. `None`: 1. The CLI's default is 4 on the CPU backend and 1 on GPUs. Mixup
    /// always runs as one shard (it pairs rows across the batch).
    shards: Option<usize> => Ok(Default::default()),
    /// Cap the number of training examples (first N after a seeded shuffle).
    max_train_samples: Option<usize> => Ok(Default::default()),
    /// Batches whose gradients are summed (each loss divided by this) before one optimizer
    /// step.
    gradient_accumulation_steps: usize => Ok(d_one()),
    /// Learning-rate schedule after warmup.
    lr_scheduler: LrSchedule => Ok(Default::default()),
    /// Layer-wise learning-rate decay: the top encoder layer trains at `lr`, each layer below
    /// at `decay` times the one above, the embeddings below the first layer. `None` = the same
    /// rate everywhere.
    layer_lr_decay: Option<f64> => Ok(Default::default()),
    /// Learning rate of the classification head (and pooler); `None` = `lr`.
    head_lr: Option<f64> => Ok(Default::default()),
    /// Evaluate (and checkpoint) every this many optimizer steps; `None` = after every epoch.
    eval_steps: Option<usize> => Ok(Default::default()),
    /// The validation metric that picks the best checkpoint and drives early stopping
    /// (`accuracy`, `macro_f1`: higher is better; `loss`: lower is better).
    metric_for_best_model: String => Ok(d_metric()),
    /// Stop after this many evaluations without an improvement of at least
    /// `early_stopping_min_delta`.
    early_stopping_patience: Option<usize> => Ok(Default::default()),
    /// The least change of the metric that counts as an improvement.
    early_stopping_min_delta: f64 => Ok(Default::default()),
    /// Checkpoints kept besides the last one: the best by `metric_for_best_model`.
    save_total_limit: usize => Ok(d_one()),
    /// HF `problem_type`; `None` = multi-label when the labels are lists (or
    /// `label_columns` are given), else single-label.
    problem_type: Option<sequin_heads::ProblemType> => Ok(Default::default()),
    /// Multi-label data as one 0/1 column per label (instead of `label_column`).
    label_columns: Vec<String> => Ok(Default::default()),
    /// Train on rows whose text is empty or blank (as `[CLS] [SEP]`) instead of refusing them.
    allow_empty_text: bool => Ok(false),
    /// Multi-label: choose each label's decision threshold on the validation data (for F1)
    /// instead of 0.5; the thresholds are saved with the model and used by eval and predict.
    tune_thresholds: bool => Ok(Default::default()),
    /// Single-label: calibrate the scores after training, on the validation data
    /// (`temperature`: one temperature fitted by minimising the NLL; predictions unchanged).
    /// Saved in `sequin.json`; eval, predict and serve apply it.
    calibrate: Option<crate::calibrate::CalibrationMethod> => Ok(Default::default()),
    /// Train only the head (and the pooler, and any fusion head): a linear probe on the frozen
    /// backbone.
    freeze_backbone: bool => Ok(false),
    /// Freeze the embeddings and the first N encoder layers; the rest, and the head, train.
    freeze_layers: Option<usize> => Ok(Default::default()),
    /// LoRA: train rank-r factors of the target modules (and the head) instead of every weight;
    /// the run writes a PEFT adapter folder. `None` = full fine-tuning.
    lora_rank: Option<usize> => Ok(Default::default()),
    /// LoRA's scaling numerator (`alpha / r`); `None` = 8, PEFT's default.
    lora_alpha: Option<f64> => Ok(Default::default()),
    /// LoRA dropout: only 0 (burn's LoRA composes the weight, so PEFT's input-side dropout
    /// cannot be reproduced).
    lora_dropout: f64 => Ok(0.0),
    /// LoRA's target modules by PEFT's names (`query`, `value`; `q_lin`, `v_lin`; `Wqkv`), or
    /// `all-linear`; empty = the family's default.
    lora_targets: Vec<String> => Ok(Default::default()),
    /// Class weights in the loss (`pos_weight` for multi-label).
    class_weights: Option<ClassWeights> => Ok(Default::default()),
    /// The training loss.
    loss: LossKind => Ok(Default::default()),
    /// Focal loss γ.
    focal_gamma: f64 => Ok(d_gamma()),
    /// How examples are drawn.
    sampler: Sampler => Ok(Default::default()),
    /// Without a validation file: hold out this fraction of the training data, stratified by
    /// label, as validation data.
    validation_split: Option<f64> => Ok(Default::default()),
    /// Augmentation of the training data.
    augment: Option<AugmentConfig> => Ok(Default::default()),
    /// Mixup in embedding space (Zhang et al. 2018; for text, Sun et al. 2020): each batch's
    /// pooled text vectors and its targets (one-hot, multi-hot or values) are mixed with a
    /// shuffled copy of the batch, `λ ~ Beta(α, α)`, and the loss is the soft-label loss.
    /// Token ids are never mixed. `None` = off.
    mixup_alpha: Option<f64> => Ok(Default::default()),
    /// Metadata columns and their transforms (fitted on the training data only).
    features: sequin_data::FeatureSpec => Ok(Default::default()),
    /// How metadata is fused with the text; `None`: `concat` when metadata columns are given,
    /// else text only.
    fusion: Option<sequin_heads::FusionMethod> => Ok(Default::default()),
}

impl TrainConfig {
    /// A config with defaults for everything but the paths.
    pub fn new(
        model: impl Into<String>,
        train: impl Into<PathBuf>,
        output: impl Into<PathBuf>,
    ) -> Self {
        TrainOptions {
            model: Some(model.into()),
            train: Some(train.into()),
            output: Some(output.into()),
            ..TrainOptions::default()
        }
        .resolve()
        .expect("only the paths are required")
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
