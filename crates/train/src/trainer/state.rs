//! The values a run carries from step to step and writes into every checkpoint.

use std::collections::BTreeMap;

use sequin_heads::ProblemType;
use serde::{Deserialize, Serialize};

use crate::TrainConfig;
use crate::metrics::EvalMetrics;

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation metrics at the end of the epoch, when evaluating per epoch.
    pub validation: Option<EvalMetrics>,
    /// Training throughput.
    pub samples_per_s: f64,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Per-epoch figures.
    pub epochs: Vec<EpochReport>,
    /// The epoch whose weights were kept (1-based; with `eval_steps`, the epoch of the kept
    /// step).
    pub best_epoch: usize,
    /// The optimizer step whose weights were kept.
    pub best_step: usize,
    /// Validation metrics of the kept weights.
    pub best_validation: Option<EvalMetrics>,
    /// Test metrics of the kept weights, when a test file was given.
    pub test: Option<EvalMetrics>,
    /// Class names in id order.
    pub labels: Vec<String>,
    /// Training examples.
    pub n_train: usize,
    /// Optimizer steps taken (in all sessions of the run).
    pub steps: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Wall time of the training loop, seconds (all sessions).
    pub train_seconds: f64,
    /// The load report of the base model.
    pub load_report: String,
}

/// The best evaluation so far.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Best {
    /// `metric_for_best_model` (or the step, without validation data).
    pub score: f64,
    /// Its optimizer step.
    pub step: usize,
    /// Its epoch.
    pub epoch: usize,
    /// Its validation metrics.
    pub validation: Option<EvalMetrics>,
}

/// A checkpoint on disk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    /// Its optimizer step.
    pub step: usize,
    /// Its score (`None` without validation data).
    pub score: Option<f64>,
}

/// Everything needed to continue a run exactly where a checkpoint left it; saved as
/// `trainer_state.json` in each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// The resolved config of the run.
    pub config: TrainConfig,
    /// sha256 of the train, validation and test files.
    pub data_sha256: BTreeMap<String, Option<String>>,
    /// Class names in id order.
    pub labels: Vec<String>,
    /// Optimizer steps taken.
    pub step: usize,
    /// The epoch the data cursor is in (1-based).
    pub epoch: usize,
    /// The next batch of that epoch.
    pub batch: usize,
    /// Loss sum and examples seen so far in that epoch.
    pub epoch_loss_sum: f64,
    /// Examples seen so far in that epoch.
    pub epoch_seen: usize,
    /// The dropout generator: seed (hex) and word position.
    pub dropout_seed: String,
    /// Word position of the dropout generator (decimal, it is a u128).
    pub dropout_word_pos: String,
    /// The best evaluation so far.
    pub best: Option<Best>,
    /// Evaluations since the last improvement.
    pub evals_without_improvement: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Every line of `metrics.jsonl` so far.
    pub metrics_log: Vec<serde_json::Value>,
    /// Finished epochs.
    pub epochs: Vec<EpochReport>,
    /// The checkpoints kept.
    pub checkpoints: Vec<CheckpointInfo>,
    /// Training-loop seconds so far.
    pub train_seconds: f64,
    /// The problem type of the run.
    #[serde(default)]
    pub problem_type: Option<ProblemType>,
    /// Loss sum and examples since the last training-loss log line.
    #[serde(default)]
    pub interval_loss_sum: f64,
    /// Examples since the last training-loss log line.
    #[serde(default)]
    pub interval_seen: usize,
}

impl TrainerState {
    /// The run's problem type.
    pub fn problem_type(&self) -> ProblemType {
        self.problem_type.unwrap_or_default()
    }

    /// The state of a new run: at the first batch of the first epoch.
    pub(crate) fn start(
        config: &TrainConfig,
        data_sha256: BTreeMap<String, Option<String>>,
        labels: Vec<String>,
        problem: ProblemType,
    ) -> Self {
        TrainerState {
            config: config.clone(),
            data_sha256,
            labels,
            step: 0,
            epoch: 1,
            batch: 0,
            epoch_loss_sum: 0.0,
            epoch_seen: 0,
            dropout_seed: String::new(),
            dropout_word_pos: String::new(),
            best: None,
            evals_without_improvement: 0,
            stopped_early: false,
            metrics_log: Vec::new(),
            epochs: Vec::new(),
            checkpoints: Vec::new(),
            train_seconds: 0.0,
            problem_type: Some(problem),
            interval_loss_sum: 0.0,
            interval_seen: 0,
        }
    }

    /// Moves the cursor to the start of the next epoch.
    pub(crate) fn next_epoch(&mut self) {
        self.epoch += 1;
        self.batch = 0;
        self.epoch_loss_sum = 0.0;
        self.epoch_seen = 0;
    }

    /// Counts a batch of `rows` examples with mean loss `loss`.
    pub(crate) fn count_batch(&mut self, loss: f32, rows: usize) {
        self.batch += 1;
        self.epoch_loss_sum += loss as f64 * rows as f64;
        self.epoch_seen += rows;
        self.interval_loss_sum += loss as f64 * rows as f64;
        self.interval_seen += rows;
    }
}
