//! Training, evaluation and prediction for sequin.
//!
//! - [`TrainConfig`]: every option of a run, a plain serde struct (unknown keys rejected).
//! - [`train`]: fine-tunes a classifier as transformers' `Trainer` does (AdamW without decay on
//!   biases and LayerNorm, linear warmup then decay, global gradient clipping at 1.0),
//!   evaluates every epoch or every `eval_steps`, keeps the best checkpoints, stops early on
//!   request, resumes exactly, and writes the best model as an HF model folder. The trainer
//!   runs in phases (prepare, build, step, evaluate, finish): see the `trainer` module.
//! - [`Classifier`]: a saved folder loaded for [`Classifier::evaluate`] and
//!   [`Classifier::predict`]; [`Inference`] is the one path from records to logits that
//!   these and the trainer's evaluations share.
//! - The model folder's format (`sequin.json`, `fusion.*`) is read and written in one module
//!   (`folder`); every write goes through `sequin-fs`.

pub mod calibrate;
mod classifier;
mod config;
mod folder;
mod inference;
pub mod lora;
pub mod metrics;
pub mod optim;
pub mod plots;
mod progress;
pub mod setfit;
pub mod shard;
mod trainer;
pub mod tune;

pub use calibrate::{Calibration, CalibrationMethod, CalibrationMetrics};
pub use classifier::{
    Classifier, ClassifierParts, ColumnChoice, LabelScore, Model, Precision, Prediction,
    ScoreFunction, Targets,
};
pub use config::{
    AugmentConfig, AugmentMode, ClassWeights, LossKind, Sampler, TrainConfig, TrainOptions,
};
pub use config::{BEST_METRICS, LrSchedule};
pub use folder::{
    FUSION_FILE, FUSION_WEIGHTS, FusionFile, InputPolicy, InputSchema, POLICY_FILE, load_model,
    read_fusion_file, read_policy, write_policy,
};
pub use inference::Inference;
pub use metrics::{CalibrationReport, ClassReport, Confusion, EvalMetrics, Report, RocAccumulator};
pub use trainer::{
    Best, CHECKPOINTS, CheckpointInfo, EpochReport, TrainSummary, TrainerState, data_fingerprint,
    latest_checkpoint, list_checkpoints, resume, train, train_model,
};
pub use tune::{SearchSpace, Trial, TuneOptions, tune};

/// Errors of training, evaluation and prediction.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad data.
    #[error(transparent)]
    Data(#[from] sequin_data::DataError),
    /// A model folder could not be read or written.
    #[error(transparent)]
    Hf(#[from] sequin_hf::HfError),
    /// The tokenizer could not be loaded.
    #[error(transparent)]
    Tokenize(#[from] sequin_tokenize::TokenizeError),
    /// The tokenizer can produce ids the model has no embedding for.
    #[error(
        "{tokenizer}: the tokenizer has {tokens} tokens but the model's config.json has vocab_size {vocab}; they do not belong together"
    )]
    VocabMismatch {
        /// The tokenizer file.
        tokenizer: std::path::PathBuf,
        /// Its vocabulary size.
        tokens: usize,
        /// The model's.
        vocab: usize,
    },
    /// A run option is invalid.
    #[error("invalid option: {0}")]
    Config(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("{path}: cannot draw the plot: {message}")]
    Plot {
        /// The image file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A run cannot be resumed as asked.
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step}: the loss is {loss}; lower --lr")]
    Diverged {
        /// The optimizer step.
        step: usize,
        /// The loss value.
        loss: f32,
    },
}

/// Checks that every id the tokenizer can emit has an embedding row.
pub(crate) fn check_vocab(
    tokenizer: &sequin_tokenize::Tokenizer,
    config: &sequin_hf::HfConfig,
) -> Result<()> {
    let (tokens, vocab) = (tokenizer.vocab_size(), config.arch.vocab_size());
    if tokens > vocab {
        return Err(TrainError::VocabMismatch {
            tokenizer: tokenizer.source().to_path_buf(),
            tokens,
            vocab,
        });
    }
    Ok(())
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
