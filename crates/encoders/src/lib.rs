//! Encoder families for sequin, built on burn's backend-generic tensors.
//!
//! One file per encoder family, as transformers keeps `modeling_<family>.py`: its config, its
//! backbone ([`Backbone`]) and its sequence classifier ([`Family`]). Module fields are named
//! after the Hugging Face checkpoint keys so that loading needs almost no remapping. The
//! families are listed once, in [`for_each_family!`]. Shared math lives in [`common`].
//!
//! This crate knows nothing of strings or files: configs are plain serde structs that the
//! caller fills (usually `sequin-hf` from `config.json`), inputs are tensors.

pub mod bert;
pub mod bf16;
pub mod common;
pub mod distilbert;
pub mod family;
pub mod fused;
pub mod host;
pub mod int8;
pub mod longformer;
pub mod modernbert;
pub mod quant;
pub mod roberta;

pub use EncoderError as Error;
pub use bert::{BertConfig, BertModel};
pub use common::Activation;
pub use distilbert::{DistilBertConfig, DistilBertModel};
pub use family::{Backbone, CheckpointKeys, Family, Inputs};
pub use longformer::{LongformerConfig, LongformerModel};
pub use modernbert::{ModernBertConfig, ModernBertModel};
pub use quant::{LowPrecisionLinears, Precision};
pub use roberta::{RobertaConfig, RobertaModel};

/// Errors raised when a configuration cannot build a model.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A configuration value is invalid or unsupported.
    #[error("invalid encoder config: {0}")]
    Config(String),
}
