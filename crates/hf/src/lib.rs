//! Hugging Face model folders for sequin.
//!
//! - [`HfConfig`]: `config.json`, read into plain serde structs, unknown keys kept verbatim so
//!   that a folder we write back is still a valid transformers config.
//! - [`load_classifier`]: `model.safetensors` (or `pytorch_model.bin`) → the family's
//!   [`SequenceClassifier`](sequin_heads::SequenceClassifier) through burn-store, with a
//!   [`LoadReport`] that fails closed.
//! - [`save_classifier_folder`]: writes a folder that `AutoModelForSequenceClassification`
//!   loads, atomically.
//! - [`resolve`]: a local folder, or a hub id through hf-hub (the only network access in
//!   sequin).

pub mod adapter;
mod config;
mod load;
mod resolve;
mod save;

pub use adapter::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, is_adapter, read_adapter_config,
};
pub use config::{ArchConfig, HfConfig, LabelNames, supported_model_types};
pub use load::{LoadReport, load_adapted_classifier, load_classifier, load_fusion_weights};
pub use resolve::{ResolveOptions, resolve, resolve_with};
pub use save::{
    FolderMeta, save_adapter_folder, save_classifier_folder, save_fusion_weights, write_atomic,
};

use std::path::PathBuf;

/// Errors from reading, loading, saving or resolving model folders.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` is not valid JSON or misses required fields.
    #[error("{path}: invalid config.json: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint's `model_type` is not supported.
    #[error("{path}: model_type `{model_type}` is not supported; supported: {supported}")]
    UnsupportedModel {
        /// The config file.
        path: PathBuf,
        /// The model type found.
        model_type: String,
        /// The supported types.
        supported: String,
    },
    /// The weights file (`model.safetensors` or `pytorch_model.bin`) is missing, corrupt or
    /// unreadable.
    #[error("{path}: cannot read weights: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// A tensor has the wrong shape or dtype.
    #[error("{path}: tensor `{tensor}` {message}")]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor name, as in the checkpoint.
        tensor: String,
        /// Expected versus found.
        message: String,
    },
    /// Tensors the model needs are not in the checkpoint.
    #[error("{path}: missing tensors: {}", .tensors.join(", "))]
    Missing {
        /// The weights file.
        path: PathBuf,
        /// The missing names, as checkpoint keys.
        tensors: Vec<String>,
    },
    /// Tensors in the checkpoint that the model does not use.
    #[error("{path}: unexpected tensors the model does not use: {}", .tensors.join(", "))]
    Unused {
        /// The weights file.
        path: PathBuf,
        /// The unexpected names.
        tensors: Vec<String>,
    },
    /// The model could not be built from its config.
    #[error("{path}: {source}")]
    Encoder {
        /// The config file.
        path: PathBuf,
        /// The reason.
        source: sequin_encoders::EncoderError,
    },
    /// The tokenizer could not be written.
    #[error(transparent)]
    Tokenizer(#[from] sequin_tokenize::TokenizeError),
    /// The hub could not be reached or the repo is unknown.
    #[error("cannot resolve model `{id}`: {message}")]
    Resolve {
        /// The hub id or path.
        id: String,
        /// Why.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, HfError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HfError {
    let path = path.into();
    move |source| HfError::Io { path, source }
}
