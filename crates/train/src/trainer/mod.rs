//! The training loop: evaluation and checkpoints every N steps or every epoch, the best
//! checkpoints kept, early stopping, and exact resume from the last checkpoint.
//!
//! A run goes through five phases, each in its own module:
//!
//! 1. [`prepare`]: data files → [`prepare::PreparedData`] (splits, labels, features,
//!    augmentation, class weights);
//! 2. [`build`]: the model, the optimizer and the run state, new or resumed → a [`Trainer`];
//! 3. [`step`]: one batch's loss and gradients, with one [`step::Objective`] chosen once and
//!    shared by the mixup and row-shard paths; [`fit`] runs the epochs around it;
//! 4. [`evaluate`]: evaluation, the best model and checkpoints (files in [`checkpoint`]);
//! 5. [`finish`]: thresholds, the test report, plots and the run record.
//!
//! Folder layout of a run (`--output DIR`):
//!
//! ```text
//! DIR/                          the best model so far: an export-ready HF folder
//!   config.json, model.safetensors, tokenizer.json, tokenizer_config.json, sequin.json
//!   metrics.jsonl               one line per evaluation (and per finished epoch)
//!   run.json                    resolved config, data fingerprints, versions, timings, results
//!   checkpoints/checkpoint-N/   the last checkpoint and the best `save_total_limit` ones:
//!     (an HF folder as above) + optimizer.bpk + trainer_state.json
//! ```

mod build;
mod checkpoint;
mod evaluate;
mod finish;
mod fit;
mod prepare;
mod state;
mod step;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{GradientsAccumulator, ModuleOptimizer};
use burn::tensor::Device;
use sequin_data::Seeds;
use sequin_encoders::common::DropoutStream;
use sequin_heads::FusionConfig;
use sequin_hf::{HfConfig, LoadReport};
use sequin_tokenize::Tokenizer;

pub use checkpoint::{CHECKPOINTS, data_fingerprint, latest_checkpoint, list_checkpoints};
pub use state::{Best, CheckpointInfo, EpochReport, TrainSummary, TrainerState};

use crate::classifier::{Classifier, Model};
use crate::folder::{FolderWriter, InputPolicy};
use crate::inference::Inference;
use crate::{Result, TrainConfig};

/// Fine-tunes a sequence classifier and writes an HF folder to `cfg.output`.
///
/// `device` is the inference device (e.g. `Device::flex()`); training runs on its autodiff
/// counterpart.
pub fn train(cfg: &TrainConfig, device: &Device) -> Result<TrainSummary> {
    train_model(cfg, device).map(|(s, _)| s)
}

/// As [`train`], and also returns the kept model, in memory, ready for inference.
pub fn train_model(cfg: &TrainConfig, device: &Device) -> Result<(TrainSummary, Classifier)> {
    run(cfg.clone(), device, None)
}

/// Continues the run in `run_dir` from its last checkpoint, with the config saved there.
///
/// `expected`, when given, must equal the saved config (the data files must also be
/// unchanged): a resumed run never silently trains on something else.
pub fn resume(
    run_dir: &Path,
    expected: Option<&TrainConfig>,
    device: &Device,
) -> Result<(TrainSummary, Classifier)> {
    let (dir, state) = latest_checkpoint(run_dir)?;
    checkpoint::check_same_config(run_dir, &state, expected)?;
    let cfg = state.config.clone();
    run(cfg, device, Some((dir, state)))
}

fn run(
    cfg: TrainConfig,
    device: &Device,
    resume: Option<(PathBuf, TrainerState)>,
) -> Result<(TrainSummary, Classifier)> {
    let created = !cfg.output.exists();
    let result = run_phases(&cfg, device, resume);
    // A run that failed before writing anything leaves no empty output folder behind.
    if result.is_err()
        && created
        && std::fs::read_dir(&cfg.output).is_ok_and(|mut d| d.next().is_none())
    {
        let _ = std::fs::remove_dir(&cfg.output);
    }
    result
}

/// The phases in order: prepare, build, fit (steps, evaluations, checkpoints), finish.
fn run_phases(
    cfg: &TrainConfig,
    device: &Device,
    resume: Option<(PathBuf, TrainerState)>,
) -> Result<(TrainSummary, Classifier)> {
    let (mut trainer, model) = build::build(cfg, device, resume)?;
    trainer.fit(model)?;
    trainer.finish()
}

/// The epoch and step arithmetic of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Batches in an epoch.
    pub batches_per_epoch: usize,
    /// Optimizer steps in an epoch.
    pub steps_per_epoch: usize,
    /// Optimizer steps of the whole run.
    pub total: usize,
    /// Warmup steps.
    pub warmup: usize,
}

impl Plan {
    fn new(cfg: &TrainConfig, n_train: usize) -> Self {
        let batches_per_epoch = n_train.div_ceil(cfg.batch_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.gradient_accumulation_steps);
        let total = cfg
            .max_steps
            .unwrap_or(usize::MAX)
            .min(steps_per_epoch * cfg.epochs);
        let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
        Self {
            batches_per_epoch,
            steps_per_epoch,
            total,
            warmup,
        }
    }

    /// The learning rate of the base group after `step` steps (for the record).
    fn lr(&self, cfg: &TrainConfig, step: usize) -> f64 {
        crate::optim::schedule(
            cfg.lr_scheduler,
            cfg.lr,
            step.saturating_sub(1),
            self.warmup,
            self.total,
        )
    }
}

/// The model as loaded: where from, its config, and what loading did.
pub(crate) struct Base {
    /// The base model's folder, or the checkpoint's when resuming.
    pub dir: PathBuf,
    /// Its `config.json`.
    pub config: HfConfig,
    /// What loading did.
    pub report: LoadReport,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// The fusion head's config, for a metadata model.
    pub fusion: Option<FusionConfig>,
}

/// Wall time of a run over all its sessions.
pub(crate) struct Clock {
    session: Instant,
    before: f64,
}

impl Clock {
    /// Training-loop seconds of the whole run so far.
    pub fn seconds(&self) -> f64 {
        self.before + self.session.elapsed().as_secs_f64()
    }
}

/// A run between `build` and `finish`: everything but the model, which the loop owns.
pub(crate) struct Trainer<'a> {
    cfg: &'a TrainConfig,
    /// `(trainable, total)` parameters.
    parameters: (usize, usize),
    /// A LoRA run: its settings and the base model's name for `adapter_config.json`.
    lora: Option<(crate::lora::LoraSpec, String)>,
    seeds: Seeds,
    /// The inference device (evaluation, the kept model).
    device: &'a Device,
    /// Its autodiff counterpart (training).
    ad: Device,
    data: prepare::PreparedData,
    base: Base,
    optim: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
    accumulator: GradientsAccumulator<Model>,
    objective: step::Objective,
    state: TrainerState,
    /// The run's dropout stream (saved in every checkpoint).
    dropout: DropoutStream,
    plan: Plan,
    policy: InputPolicy,
    clock: Clock,
    /// Built once (it holds the stopword set), used by per-epoch augmentation in every batch.
    augmenter: sequin_augment::Augmenter<'static>,
}

impl Trainer<'_> {
    /// The writer of this run's model folders.
    fn folder(&self) -> FolderWriter<'_> {
        FolderWriter {
            base_config: &self.base.config,
            labels: self.data.labels.names(),
            problem: self.data.problem,
            tokenizer: &self.base.tokenizer,
            max_length: self.cfg.max_length,
            fusion: self.base.fusion.as_ref().zip(self.data.features.as_ref()),
            lora: self.lora.as_ref().map(|(spec, base)| (spec, base.as_str())),
        }
    }

    /// Inference with an inference-mode `model` on the inference device.
    fn inference<'m>(&'m self, model: &'m Model) -> Inference<'m> {
        Inference {
            model,
            tokenizer: &self.base.tokenizer,
            features: self.data.features.as_ref(),
            policy: &self.policy,
            batch_size: self.cfg.eval_batch_size,
            shards: self.cfg.shards(),
            device: self.device,
            temperature: self
                .policy
                .calibration
                .as_ref()
                .map_or(1.0, |c| c.temperature),
        }
    }
}
