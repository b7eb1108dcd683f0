//! Data loading for sequin: Parquet, CSV and JSONL records, label maps, seeded shuffling and
//! batching into tensors.
//!
//! This is the only crate that turns records into tensors, and the only place where HF's
//! `attention_mask` (1 = token) becomes burn's pad mask (`true` = pad): [`to_pad_mask`].

mod batch;
mod features;
mod labels;
mod read;
mod seeds;
mod write;

pub use batch::{
    DocumentRows, EncodedBatch, length_grouped_batches, shuffled_indices, to_pad_mask,
};
pub use features::{
    CategoricalColumn, DateColumn, EncodedFeatures, FeatureBatch, FeatureSpec, FittedFeatures,
    NumericColumn, NumericFit, NumericTransform,
};
pub use labels::LabelMap;
pub use read::{
    Columns, EmptyText, Record, column_names, for_each_chunk, for_each_chunk_with, read_records,
    read_records_with,
};
pub use seeds::Seeds;
pub use write::{ProvenanceRow, write_records};

use std::path::PathBuf;

/// Errors from reading and validating data files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file extension is not one sequin reads.
    #[error("{path}: unknown data format; expected a .parquet, .csv, .tsv, .jsonl or .json file")]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The file is corrupt or not in the format its extension says.
    #[error("{path}: cannot parse as {format}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The format tried.
        format: &'static str,
        /// What the parser said.
        message: String,
    },
    /// A requested column does not exist.
    #[error("{path}: no column `{column}` (the {role} column); columns are: {}", .available.join(", "))]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// What it was for (text, text pair, label).
        role: &'static str,
        /// The columns the file has.
        available: Vec<String>,
    },
    /// A column holds a type that cannot be used for its role.
    #[error("{path}: column `{column}` has type {found}; expected {expected}")]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The type found.
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A row has an empty or missing value where one is required.
    #[error("{path}: row {row}: {problem}")]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 1-based data row number (header excluded).
        row: usize,
        /// What is wrong.
        problem: String,
    },
    /// A feature column cannot be fitted.
    #[error("{path}: feature `{column}`: {problem}")]
    Feature {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What is wrong.
        problem: String,
    },
    /// A file could not be written as asked.
    #[error("{path}: cannot write: {message}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file has no data rows.
    #[error("{path}: the file has no data rows")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Labels that the training data never showed.
    #[error("{path}: labels not seen in the training data: {} (known: {})", .labels.join(", "), .known.join(", "))]
    UnknownLabels {
        /// The file with the labels.
        path: PathBuf,
        /// The unseen labels.
        labels: Vec<String>,
        /// The labels the model knows.
        known: Vec<String>,
    },
    /// Fewer than two classes in the training data.
    #[error("{path}: a classifier needs at least two labels; found {}", .labels.join(", "))]
    TooFewLabels {
        /// The training file.
        path: PathBuf,
        /// The labels found.
        labels: Vec<String>,
    },
    /// Tokenization failed.
    #[error(transparent)]
    Tokenize(#[from] sequin_tokenize::TokenizeError),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, DataError>;
