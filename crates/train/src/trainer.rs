//! The training loop: evaluation and checkpoints every N steps or every epoch, the best
//! checkpoints kept, early stopping, and exact resume from the last checkpoint.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use sequin_data::{
    EncodedBatch, LabelMap, Record, length_grouped_batches, read_records, shuffled_indices,
};
use sequin_encoders::common::{dropout_position, restore_dropout, seed_dropout};
use sequin_heads::{FusionConfig, ProblemType, loss};
use sequin_hf::{HfConfig, resolve, save_classifier_folder, save_fusion_weights, write_atomic};
use sequin_tokenize::{EncodeOptions, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::classifier::{
    Classifier, InputPolicy, Model, POLICY_FILE, Targets, doc_logits, evaluate_model, sigmoid_probs,
};
use crate::metrics::EvalMetrics;
use crate::optim::{adamw, clip_global_norm, lr_groups, module_scheduler, stable_param_ids};
use crate::progress::bar;
use crate::{Result, TrainConfig, TrainError};

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
}

/// The file of [`TrainerState`] in a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// The optimizer state in a checkpoint (burnpack).
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The folder of checkpoints in a run folder.
pub const CHECKPOINTS: &str = "checkpoints";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path, cfg: &TrainConfig) -> Result<Vec<Record>> {
    Ok(read_records(path, &cfg.columns())?)
}

fn sha256_file(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).map_err(io(p))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// sha256 of each data file of a config.
pub fn data_fingerprint(cfg: &TrainConfig) -> Result<BTreeMap<String, Option<String>>> {
    let mut m = BTreeMap::new();
    m.insert("train".into(), Some(sha256_file(&cfg.train)?));
    for (k, p) in [("validation", &cfg.validation), ("test", &cfg.test)] {
        m.insert(k.to_string(), p.as_deref().map(sha256_file).transpose()?);
    }
    Ok(m)
}

/// The checkpoints of a run folder, oldest first: `(step, folder)`. Unfinished checkpoints
/// (temp folders of a killed write) are not listed.
pub fn list_checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let dir = run_dir.join(CHECKPOINTS);
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The last checkpoint of a run folder and its state.
pub fn latest_checkpoint(run_dir: &Path) -> Result<(PathBuf, TrainerState)> {
    let Some((_, dir)) = list_checkpoints(run_dir).pop() else {
        return Err(TrainError::Resume(format!(
            "{} holds no checkpoint to resume from (expected {}/checkpoint-N/{STATE_FILE})",
            run_dir.display(),
            run_dir.join(CHECKPOINTS).display()
        )));
    };
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
        TrainError::Resume(format!(
            "{}: not a valid trainer state: {e}",
            path.display()
        ))
    })?;
    Ok((dir, state))
}

/// Fine-tunes a sequence classifier and writes an HF folder to `cfg.output`.
///
/// `device` is the inference device (e.g. `Device::flex()`); training runs on its autodiff
/// counterpart.
pub fn train(cfg: &TrainConfig, device: &Device) -> Result<TrainSummary> {
    train_model(cfg, device).map(|(s, _)| s)
}

/// Serialises training runs within a process: burn's CPU backend draws every random number
/// (head initialisation) from one process-wide seeded generator, as does sequin's dropout, so
/// two runs at once would interleave their draws and neither would be reproducible.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    if let Some(want) = expected
        && want != &state.config
    {
        let a = serde_json::to_value(want).expect("json");
        let b = serde_json::to_value(&state.config).expect("json");
        let diff: Vec<String> = a
            .as_object()
            .expect("object")
            .iter()
            .filter(|(k, v)| b.get(k.as_str()) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {} → {v}",
                    b.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                )
            })
            .collect();
        return Err(TrainError::Resume(format!(
            "the options differ from those of the run in {} ({}); resume with the run's own options, or start a new run in another folder",
            run_dir.display(),
            diff.join("; ")
        )));
    }
    let cfg = state.config.clone();
    run(cfg, device, Some((dir, state)))
}

fn run(
    cfg: TrainConfig,
    device: &Device,
    resume: Option<(PathBuf, TrainerState)>,
) -> Result<(TrainSummary, Classifier)> {
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|p| p.into_inner());
    let created = !cfg.output.exists();
    let result = run_locked(&cfg, device, resume);
    // A run that failed before writing anything leaves no empty output folder behind.
    if result.is_err()
        && created
        && std::fs::read_dir(&cfg.output).is_ok_and(|mut d| d.next().is_none())
    {
        let _ = std::fs::remove_dir(&cfg.output);
    }
    result
}

fn run_locked(
    cfg: &TrainConfig,
    device: &Device,
    resume: Option<(PathBuf, TrainerState)>,
) -> Result<(TrainSummary, Classifier)> {
    cfg.validate()?;
    // Fail on an unwritable output before any work is done.
    std::fs::create_dir_all(&cfg.output).map_err(io(&cfg.output))?;
    let fingerprint = data_fingerprint(cfg)?;
    let ckpt_root = cfg.output.join(CHECKPOINTS);
    if let Some((dir, state)) = &resume {
        remove_leftovers(&cfg.output);
        if state.data_sha256 != fingerprint {
            return Err(TrainError::Resume(format!(
                "the data files changed since the checkpoint {} was written (sha256 then {:?}, now {:?}); a resumed run must see the same data",
                dir.display(),
                state.data_sha256,
                fingerprint
            )));
        }
    } else if ckpt_root.is_dir() {
        let old = list_checkpoints(&cfg.output).len();
        if old > 0 {
            eprintln!(
                "note: starting a new run in {}: removing {old} checkpoint(s) of an earlier run (use --resume to continue it instead)",
                cfg.output.display()
            );
        }
        std::fs::remove_dir_all(&ckpt_root).map_err(io(&ckpt_root))?;
    }
    // The base model, or the checkpoint (an HF folder with its tokenizer) when resuming.
    let model_dir = match &resume {
        Some((dir, _)) => dir.clone(),
        None => resolve(&cfg.model)?,
    };
    let tokenizer = Tokenizer::from_dir(&model_dir)?;

    let mut train_recs = read(&cfg.train, cfg)?;
    let fusion_method = cfg.fusion_method();
    // Every metadata cell checked with its file row; the fit is kept unless the training set
    // shrinks below (a subset or a hold-out), when it is refitted on what remains.
    let mut fitted = match fusion_method {
        Some(_) => Some(cfg.features.fit(&cfg.train, &train_recs)?),
        None => None,
    };
    // The problem type: as asked, else multi-label when the labels are sets.
    let problem = cfg.problem_type.unwrap_or(
        // (Decided by the first row: a later row of the other kind is then the error.)
        if !cfg.label_columns.is_empty() || train_recs.first().is_some_and(|r| r.labels.is_some()) {
            ProblemType::MultiLabelClassification
        } else {
            ProblemType::SingleLabelClassification
        },
    );
    let labels = match problem {
        ProblemType::SingleLabelClassification => LabelMap::from_train(&train_recs, &cfg.train)?,
        ProblemType::MultiLabelClassification => {
            LabelMap::from_train_sets(&train_recs, &cfg.train)?
        }
        ProblemType::Regression => LabelMap::new(vec![cfg.label_column.clone()]),
    };
    if let Some(n) = cfg.max_train_samples {
        let order = shuffled_indices(train_recs.len(), cfg.seed, usize::MAX);
        train_recs = order
            .into_iter()
            .take(n)
            .map(|i| train_recs[i].clone())
            .collect();
    }
    let mut train_targets = Targets::encode(problem, &labels, &train_recs, &cfg.train)?;
    // Without a validation file, a stratified, seeded hold-out of the training data.
    let mut split_val: Option<(Vec<Record>, Targets)> = None;
    if let Some(fraction) = cfg.validation_split {
        let held = stratified_holdout(&train_targets, fraction, cfg.seed);
        let keep: Vec<usize> = (0..train_recs.len())
            .filter(|i| !held.contains(i))
            .collect();
        let held: Vec<usize> = held.into_iter().collect();
        split_val = Some((
            held.iter().map(|&i| train_recs[i].clone()).collect(),
            train_targets.select(&held),
        ));
        train_targets = train_targets.select(&keep);
        train_recs = keep.iter().map(|&i| train_recs[i].clone()).collect();
        eprintln!(
            "validation: {} examples held out of the training data (stratified, seed {})",
            held.len(),
            cfg.seed
        );
    }
    let labelled = |p: &Option<PathBuf>| -> Result<Option<(Vec<Record>, Targets)>> {
        p.as_ref()
            .map(|p| {
                let r = read(p, cfg)?;
                let t = Targets::encode(problem, &labels, &r, p)?;
                Ok((r, t))
            })
            .transpose()
    };
    // Metadata transforms, fitted on the training examples only (before augmentation, which
    // only copies them).
    if fitted.is_some() && (cfg.max_train_samples.is_some() || cfg.validation_split.is_some()) {
        fitted = Some(cfg.features.fit(&cfg.train, &train_recs)?);
    }
    let fitted = fitted;
    // Offline augmentation: `num_aug` variants of every training example, then (optionally)
    // variants of rare classes' examples until every class is as large as the largest. Done
    // after any validation hold-out, so validation data is never augmented.
    if let Some(a) = &cfg.augment {
        use rand::SeedableRng;
        let aug = sequin_augment::Augmenter::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xA06_0FF1);
        let n0 = train_recs.len();
        let mut idx: Vec<usize> = (0..n0).collect();
        let mut add = |i: usize, recs: &mut Vec<Record>, idx: &mut Vec<usize>| {
            let mut v = recs[i].clone();
            v.text = aug.apply(&v.text, &a.pipeline, &mut rng).text;
            if !v.text.trim().is_empty() {
                recs.push(v);
                idx.push(i);
            }
        };
        if a.mode == crate::config::AugmentMode::Offline && a.num_aug > 0 {
            for i in 0..n0 {
                for _ in 0..a.num_aug {
                    add(i, &mut train_recs, &mut idx);
                }
            }
            eprintln!(
                "augmentation: {} training examples from {n0} ({} variants each)",
                train_recs.len(),
                a.num_aug
            );
        }
        if a.oversample {
            let Targets::Classes(ids) = &train_targets else {
                return Err(TrainError::Config(
                    "augmentation oversampling needs single-label data".into(),
                ));
            };
            let mut members = vec![Vec::new(); labels.len()];
            for i in 0..n0 {
                members[ids[i]].push(i);
            }
            let mut count = vec![0usize; labels.len()];
            for &i in &idx {
                count[ids[i]] += 1;
            }
            let most = count.iter().copied().max().unwrap_or(0);
            let before = train_recs.len();
            for (c, m) in members.iter().enumerate() {
                // Bounded tries: a text that augments to nothing is skipped.
                for j in 0..(most - count[c]) * 2 {
                    if m.is_empty() || count[c] >= most {
                        break;
                    }
                    let n = train_recs.len();
                    add(m[j % m.len()], &mut train_recs, &mut idx);
                    count[c] += train_recs.len() - n;
                }
            }
            eprintln!(
                "augmentation: {} variants of rare classes' examples added (every class now {most})",
                train_recs.len() - before
            );
        }
        train_targets = train_targets.select(&idx);
    }
    let val = match split_val {
        Some(v) => Some(v),
        None => labelled(&cfg.validation)?,
    };
    let test = labelled(&cfg.test)?;
    // Metadata of every split, encoded once (checking val/test cells with their file rows).
    let train_meta = match &fitted {
        Some(f) => {
            let refs: Vec<&Record> = train_recs.iter().collect();
            Some(f.encode(&cfg.train, 1, &refs)?)
        }
        None => None,
    };
    if let Some(f) = &fitted {
        for (path, split) in [(&cfg.validation, &val), (&cfg.test, &test)] {
            if let (Some(p), Some((recs, _))) = (path, split) {
                let refs: Vec<&Record> = recs.iter().collect();
                let enc = f.encode(p, 1, &refs)?;
                for (c, n) in f.categorical.iter().zip(&enc.unknown) {
                    if *n > 0 {
                        eprintln!(
                            "note: {}: {n} value(s) of `{}` not in the training vocabulary (rare/unknown bucket)",
                            p.display(),
                            c.column
                        );
                    }
                }
            }
        }
    }

    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let (model, base_config, report, saved_fusion) =
        crate::classifier::load_model(&model_dir, Some(labels.len()), &ad)?;
    let fusion_config = match (&fitted, fusion_method) {
        (Some(f), Some(method)) => Some(FusionConfig {
            method,
            text_size: model.text.pooled_size(),
            numeric_width: f.numeric_width(),
            categorical: f.categorical_dims(),
            num_labels: labels.len(),
            dropout: 0.1,
            gating_beta: 0.2,
        }),
        _ => None,
    };
    let model = match (&fusion_config, resume.is_some()) {
        // A resumed run's checkpoint holds the head.
        (Some(fc), true) => {
            if saved_fusion.as_ref().map(|f| &f.fusion) != Some(fc) {
                return Err(TrainError::Resume(format!(
                    "{}: the checkpoint's fusion head does not match the run's options",
                    model_dir.display()
                )));
            }
            model
        }
        (Some(fc), false) => sequin_heads::Classifier {
            text: model.text,
            fusion: Some(fc.init(&ad)),
        },
        (None, _) => sequin_heads::Classifier {
            text: model.text,
            fusion: None,
        },
    };
    if cfg.max_length > base_config.arch.max_length() {
        return Err(TrainError::Config(format!(
            "--max-length {} exceeds the {} positions the model's max_position_embeddings allows",
            cfg.max_length,
            base_config.arch.max_length()
        )));
    }
    crate::check_vocab(&tokenizer, &base_config)?;
    eprintln!("model {}: {report}", model_dir.display());
    // Ids by position: the optimizer state of a checkpoint applies to the reloaded model.
    let mut model = stable_param_ids(model.train());
    let mut optim = adamw(&model, cfg.weight_decay);

    let mut state = match resume {
        Some((dir, state)) => {
            let path = dir.join(OPTIMIZER_FILE);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            optim = optim
                .from_bytes(Bytes::from_bytes_vec(bytes))
                .map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
            let seed = hex_to_seed(&state.dropout_seed).ok_or_else(|| {
                TrainError::Resume(format!(
                    "{}: bad dropout_seed",
                    dir.join(STATE_FILE).display()
                ))
            })?;
            let pos: u128 = state.dropout_word_pos.parse().map_err(|_| {
                TrainError::Resume(format!(
                    "{}: bad dropout_word_pos",
                    dir.join(STATE_FILE).display()
                ))
            })?;
            restore_dropout(seed, pos);
            eprintln!(
                "resuming {} at step {} (epoch {}, batch {})",
                cfg.output.display(),
                state.step,
                state.epoch,
                state.batch
            );
            state
        }
        None => {
            seed_dropout(cfg.seed);
            TrainerState {
                config: cfg.clone(),
                data_sha256: fingerprint,
                labels: labels.names().to_vec(),
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
    };

    let opts = EncodeOptions {
        max_length: cfg.max_length,
        pad_to_multiple_of: cfg.pad_to_multiple_of,
    };
    let n = train_recs.len();
    let lengths: Vec<usize> = train_recs
        .iter()
        .map(|r| r.text.len() + r.text_pair.as_ref().map_or(0, String::len))
        .collect();
    let accum = cfg.gradient_accumulation_steps;
    let batches_per_epoch = n.div_ceil(cfg.batch_size);
    let steps_per_epoch = batches_per_epoch.div_ceil(accum);
    let total = cfg
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * cfg.epochs);
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;
    let weights = class_weights(cfg, &train_targets, labels.len())?;
    if let Some(w) = &weights {
        eprintln!(
            "class weights{}: {}",
            if problem == ProblemType::MultiLabelClassification {
                " (pos_weight)"
            } else {
                ""
            },
            labels
                .names()
                .iter()
                .zip(w)
                .map(|(n, w)| format!("{n} {w:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let weights_tensor = weights.as_ref().map(|w| {
        burn::tensor::Tensor::<1>::from_data(
            burn::tensor::TensorData::new(
                w.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                [w.len()],
            ),
            &ad,
        )
    });
    if cfg.sampler == crate::config::Sampler::Balanced
        && problem != ProblemType::SingleLabelClassification
    {
        return Err(TrainError::Config(
            "--sampler balanced needs single-label data".into(),
        ));
    }
    if cfg.loss == crate::config::LossKind::Focal
        && problem != ProblemType::SingleLabelClassification
    {
        return Err(TrainError::Config(
            "--loss focal needs single-label data".into(),
        ));
    }
    let groups = lr_groups(&model, cfg.lr, cfg.layer_lr_decay, cfg.head_lr);
    let mut scheduler =
        module_scheduler(cfg.lr_scheduler, cfg.lr, &groups, warmup, total, state.step);

    let mut policy = InputPolicy {
        max_length: cfg.max_length,
        long_text: cfg.long_text,
        aggregate: cfg.aggregate,
        thresholds: None,
    };
    let eval_on = |m: &Model, recs: &[Record], t: &Targets| {
        evaluate_model(
            m,
            &tokenizer,
            recs,
            t,
            labels.names(),
            &policy,
            cfg.eval_batch_size,
            cfg.shards(),
            device,
            fitted.as_ref(),
        )
        .map(|r| r.summary)
    };
    let save_folder = |dir: &Path, m: &Model| -> Result<()> {
        if let (Some(head), Some(fc), Some(f)) = (&m.fusion, &fusion_config, &fitted) {
            save_fusion_weights(&dir.join(crate::classifier::FUSION_WEIGHTS), head)?;
            let file = crate::classifier::FusionFile {
                version: 1,
                fusion: fc.clone(),
                features: f.clone(),
            };
            write_atomic(
                &dir.join(crate::classifier::FUSION_FILE),
                serde_json::to_string_pretty(&file)
                    .expect("json")
                    .as_bytes(),
            )?;
        }
        save_classifier_folder(
            dir,
            &m.text,
            &base_config,
            labels.names(),
            problem,
            &tokenizer,
            cfg.max_length,
        )?;
        write_atomic(
            &dir.join(POLICY_FILE),
            serde_json::to_string_pretty(&policy)
                .expect("json")
                .as_bytes(),
        )?;
        if let Some(fc) = &fusion_config {
            // Tell a transformers user that this folder's classifier is not the trained one.
            let path = dir.join("config.json");
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let mut config: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text)
                    .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
            config.insert(
                "sequin_fusion".into(),
                serde_json::json!({
                    "method": fc.method,
                    "files": [crate::classifier::FUSION_FILE, crate::classifier::FUSION_WEIGHTS],
                    "note": "This model fuses metadata with the text: its predictions come from the fusion head in the files above (load the folder with sequin). The encoder weights here are the fine-tuned ones; the `classifier` weights are not trained.",
                }),
            );
            write_atomic(
                &path,
                serde_json::to_string_pretty(&config)
                    .expect("json")
                    .as_bytes(),
            )?;
        }
        Ok(())
    };
    let metric = best_metric(cfg, problem);
    let higher_is_better = metric != "loss";
    let score_of = |v: &EvalMetrics| v.score(metric);

    let session = Instant::now();
    let seconds_before = state.train_seconds;
    let mut accumulator = GradientsAccumulator::<Model>::new();
    let mut in_accum = 0usize;
    let mut t_epoch = Instant::now();
    let mut seen_session = 0usize;
    let done = state.step >= total || state.stopped_early;
    let log_steps = (steps_per_epoch / 10).max(1);
    // Built once (it holds the stopword set), used by per-epoch augmentation in every batch.
    let augmenter = sequin_augment::Augmenter::new();

    // One evaluation and checkpoint, with the cursor already pointing past the last step.
    let eval_point = |model: &Model,
                      optim: &burn::optim::ModuleOptimizer,
                      state: &mut TrainerState,
                      train_loss: f64|
     -> Result<bool> {
        let inference = model.valid();
        let validation = match &val {
            Some((r, t)) => Some(eval_on(&inference, r, t)?),
            None => None,
        };
        let score = validation.as_ref().map(score_of);
        let entry = serde_json::json!({
            "step": state.step,
            "epoch": (state.epoch - 1) as f64 + state.batch as f64 / batches_per_epoch as f64,
            "lr": scheduler_lr(cfg, warmup, total, state.step),
            "train_loss": train_loss,
            "validation": validation,
            "elapsed_s": seconds_before + session.elapsed().as_secs_f64(),
        });
        if let Some(v) = &validation {
            eprintln!(
                "step {}: validation accuracy {:.4}, macro-F1 {:.4}, loss {:.4}",
                state.step, v.accuracy, v.macro_f1, v.loss
            );
        }
        state.metrics_log.push(entry);
        // Without validation data the latest weights count as the best.
        let key = score.unwrap_or(state.step as f64);
        let improved = match state.best {
            None => true,
            Some(b) if score.is_none() => key > b.score,
            Some(b) => {
                if higher_is_better {
                    key > b.score + cfg.early_stopping_min_delta
                } else {
                    key < b.score - cfg.early_stopping_min_delta
                }
            }
        };
        // Strictly better (without the delta) still becomes the kept model.
        let better = match state.best {
            None => true,
            Some(b) if higher_is_better || score.is_none() => key > b.score,
            Some(b) => key < b.score,
        };
        if better {
            state.best = Some(Best {
                score: key,
                step: state.step,
                // The epoch the step belongs to (the cursor may already be in the next one).
                epoch: if state.batch == 0 {
                    state.epoch - 1
                } else {
                    state.epoch
                },
                validation,
            });
            save_folder(&cfg.output, &inference)?;
        }
        if improved {
            state.evals_without_improvement = 0;
        } else {
            state.evals_without_improvement += 1;
        }
        if let Some(p) = cfg.early_stopping_patience
            && state.evals_without_improvement >= p
        {
            eprintln!(
                "early stopping: {} evaluations without an improvement of {} in {}",
                p, cfg.early_stopping_min_delta, cfg.metric_for_best_model
            );
            state.stopped_early = true;
        }
        write_metrics(&cfg.output, &state.metrics_log)?;
        state.train_seconds = seconds_before + session.elapsed().as_secs_f64();
        write_checkpoint(cfg, state, score, &inference, optim, &save_folder)?;
        Ok(state.stopped_early)
    };

    'epochs: while !done && state.epoch <= cfg.epochs {
        // (`done` only matters for a resumed run that had already finished.)
        let epoch = state.epoch;
        let batches: Vec<Vec<usize>> =
            if let (crate::config::Sampler::Balanced, Targets::Classes(ids)) =
                (cfg.sampler, &train_targets)
            {
                balanced_batches(ids, labels.len(), cfg.batch_size, cfg.seed, epoch)
            } else if cfg.length_grouping() {
                length_grouped_batches(&lengths, cfg.batch_size, cfg.seed, epoch)
            } else {
                shuffled_indices(n, cfg.seed, epoch)
                    .chunks(cfg.batch_size)
                    .map(<[usize]>::to_vec)
                    .collect()
            };
        let pb = bar(
            (batches.len() - state.batch) as u64,
            &format!("epoch {epoch}/{}", cfg.epochs),
        );
        let log_every = (batches.len() / 10).max(1);
        while state.batch < batches.len() {
            let chunk = &batches[state.batch];
            let augmented: Vec<Record>;
            let recs: Vec<&Record> = match cfg
                .augment
                .as_ref()
                .filter(|a| a.mode == crate::config::AugmentMode::PerEpoch)
            {
                // A fresh variant per example and epoch, from an RNG seeded by both.
                // In parallel (each example has its own RNG, so the result does not depend on
                // the threads).
                Some(a) => {
                    use rand::SeedableRng;
                    use rayon::prelude::*;
                    augmented = chunk
                        .par_iter()
                        .map(|&i| {
                            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                                cfg.seed
                                    ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                                    ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9),
                            );
                            let mut r = train_recs[i].clone();
                            let t = augmenter.apply(&r.text, &a.pipeline, &mut rng).text;
                            if !t.trim().is_empty() {
                                r.text = t;
                            }
                            r
                        })
                        .collect();
                    augmented.iter().collect()
                }
                None => chunk.iter().map(|&i| &train_recs[i]).collect(),
            };
            let batch_targets = train_targets.select(chunk);
            // The last group of an epoch may hold fewer batches.
            let group_start = state.batch - state.batch % accum;
            let group_len = accum.min(batches.len() - group_start);
            let (loss_val, grads) = if let Some(alpha) = cfg.mixup_alpha {
                // Mixup pairs rows across the whole batch: one shard.
                let ids = match &batch_targets {
                    Targets::Classes(ids) => Some(ids.as_slice()),
                    _ => None,
                };
                let b = EncodedBatch::new_long(&tokenizer, &recs, ids, opts, cfg.long_text, &ad)?;
                // Mixup on the pooled text vectors, never on token ids.
                let (lambda, perm) = mixup_draw(alpha, cfg.seed, epoch, state.batch, chunk.len());
                let pooled =
                    model
                        .text
                        .pooled(b.input_ids, Some(b.token_type_ids), Some(b.pad_mask));
                let perm_t = Tensor::<1, Int>::from_data(
                    TensorData::from(
                        perm.iter()
                            .map(|&i| i as i64)
                            .collect::<Vec<_>>()
                            .as_slice(),
                    ),
                    &ad,
                );
                let mixed = pooled.clone().mul_scalar(lambda)
                    + pooled.select(0, perm_t).mul_scalar(1.0 - lambda);
                let logits = model.text.classify(mixed);
                let y = EncodedBatch::float_targets(
                    &mix_targets(&batch_targets, labels.len(), lambda, &perm),
                    &ad,
                );
                let loss = match &batch_targets {
                    Targets::Classes(_) => {
                        loss::soft_cross_entropy(logits, y, weights_tensor.clone())
                    }
                    Targets::MultiHot(_) => match &weights_tensor {
                        Some(w) => loss::bce_with_logits_pos_weight(logits, y, w.clone()).mean(),
                        None => loss::bce_with_logits(logits, y),
                    },
                    Targets::Values(_) => loss::mse(logits, y),
                };
                let v: f32 = loss.clone().into_scalar();
                let loss = loss.div_scalar(group_len as f64);
                (v, GradientsParams::from_grads(loss.backward(), &model))
            } else {
                // Row shards of the batch, forward and backward in parallel (see `shard`).
                // Each shard's loss is weighted by its share of the batch's: its rows, or its
                // class weights when a weighted loss divides by their sum.
                let class_weight = |rows: std::ops::Range<usize>| -> Option<f64> {
                    match (&batch_targets, &weights) {
                        (Targets::Classes(ids), Some(w)) => {
                            Some(ids[rows].iter().map(|&c| w[c]).sum())
                        }
                        _ => None,
                    }
                };
                let total_weight = class_weight(0..chunk.len());
                let (losses, grads) = crate::shard::sharded_step(
                    &model,
                    chunk.len(),
                    cfg.shards(),
                    |m, range, _| {
                        let rows: Vec<usize> = range.clone().collect();
                        let targets = batch_targets.select(&rows);
                        let ids = match &targets {
                            Targets::Classes(ids) => Some(ids.as_slice()),
                            _ => None,
                        };
                        let mut b = EncodedBatch::new_long(
                            &tokenizer,
                            &recs[range.clone()],
                            ids,
                            opts,
                            cfg.long_text,
                            &ad,
                        )?;
                        let class_ids = b.labels.take();
                        let meta = match (&fitted, &train_meta) {
                            (Some(f), Some(enc)) => Some(f.batch(enc, &chunk[range.clone()], &ad)),
                            _ => None,
                        };
                        let logits = doc_logits(m, b, cfg.aggregate, meta);
                        let loss = match (&targets, class_ids) {
                            (Targets::Classes(_), Some(ids)) => match (cfg.loss, &weights_tensor) {
                                (crate::config::LossKind::Focal, w) => {
                                    loss::focal(logits, ids, cfg.focal_gamma, w.clone())
                                }
                                (_, Some(w)) => {
                                    loss::weighted_cross_entropy(logits, ids, w.clone())
                                }
                                (_, None) => loss::cross_entropy(logits, ids),
                            },
                            (Targets::MultiHot(rows), _) => {
                                let y = EncodedBatch::float_targets(rows, &ad);
                                match &weights_tensor {
                                    Some(w) => {
                                        loss::bce_with_logits_pos_weight(logits, y, w.clone())
                                            .mean()
                                    }
                                    None => loss::bce_with_logits(logits, y),
                                }
                            }
                            (Targets::Values(v), _) => {
                                let rows: Vec<Vec<f32>> = v.iter().map(|&x| vec![x]).collect();
                                loss::mse(logits, EncodedBatch::float_targets(&rows, &ad))
                            }
                            (Targets::Classes(_), None) => {
                                unreachable!("class ids were given")
                            }
                        };
                        let share = match (class_weight(range.clone()), total_weight) {
                            (Some(part), Some(total)) => part / total,
                            _ => range.len() as f64 / chunk.len() as f64,
                        };
                        Ok(loss.mul_scalar(share / group_len as f64))
                    },
                )?;
                let v = losses.iter().map(|&l| l as f64).sum::<f64>() * group_len as f64;
                (v as f32, grads)
            };
            if !loss_val.is_finite() {
                return Err(TrainError::Diverged {
                    step: state.step,
                    loss: loss_val,
                });
            }
            accumulator.accumulate(&model, grads);
            in_accum += 1;
            state.batch += 1;
            state.epoch_loss_sum += loss_val as f64 * chunk.len() as f64;
            state.epoch_seen += chunk.len();
            state.interval_loss_sum += loss_val as f64 * chunk.len() as f64;
            state.interval_seen += chunk.len();
            seen_session += chunk.len();
            pb.inc(1);
            let status = format!(
                "loss {:.4} | {:.1} samples/s",
                state.epoch_loss_sum / state.epoch_seen as f64,
                seen_session as f64 / t_epoch.elapsed().as_secs_f64()
            );
            // Without a terminal the bar is hidden: log a line every tenth of an epoch.
            if pb.is_hidden() && state.batch.is_multiple_of(log_every) {
                eprintln!(
                    "epoch {epoch} batch {}/{}: {status}",
                    state.batch,
                    batches.len()
                );
            }
            pb.set_prefix(status);
            if in_accum < group_len {
                continue;
            }
            let mut grads = accumulator.grads();
            in_accum = 0;
            if cfg.max_grad_norm > 0.0 {
                clip_global_norm(&model, &mut grads, cfg.max_grad_norm);
            }
            let lr = scheduler.step();
            model = optim.step(lr, model, grads);
            state.step += 1;
            // The training loss, ten times an epoch (as transformers' logging_steps).
            if state.step.is_multiple_of(log_steps) {
                state.metrics_log.push(serde_json::json!({
                    "step": state.step,
                    "epoch": (epoch - 1) as f64 + state.batch as f64 / batches.len() as f64,
                    "lr": scheduler_lr(cfg, warmup, total, state.step),
                    "loss": state.interval_loss_sum / state.interval_seen.max(1) as f64,
                }));
                state.interval_loss_sum = 0.0;
                state.interval_seen = 0;
            }
            let epoch_end = state.batch == batches.len();
            let finished = state.step >= total;
            let running_loss = state.epoch_loss_sum / state.epoch_seen.max(1) as f64;
            if epoch_end {
                pb.finish_and_clear();
                let rep = EpochReport {
                    epoch,
                    train_loss: running_loss,
                    validation: None,
                    samples_per_s: seen_session as f64 / t_epoch.elapsed().as_secs_f64(),
                };
                // Logged before any checkpoint, so a resumed run's log is the same.
                state.metrics_log.push(serde_json::json!({
                    "epoch_end": epoch, "step": state.step, "train_loss": rep.train_loss,
                    "train_samples_per_s": rep.samples_per_s,
                }));
                write_metrics(&cfg.output, &state.metrics_log)?;
                state.epochs.push(rep);
                // The cursor moves to the next epoch before any checkpoint is written.
                state.epoch += 1;
                state.batch = 0;
                state.epoch_loss_sum = 0.0;
                state.epoch_seen = 0;
                seen_session = 0;
                t_epoch = Instant::now();
            }
            let eval_now = match cfg.eval_steps {
                Some(k) => state.step.is_multiple_of(k) || finished,
                None => epoch_end || finished,
            };
            if eval_now {
                capture_dropout(&mut state);
                let stop = eval_point(&model, &optim, &mut state, running_loss)?;
                if epoch_end && let Some(last) = state.epochs.last_mut() {
                    last.validation = state
                        .metrics_log
                        .last()
                        .and_then(|m| serde_json::from_value(m["validation"].clone()).ok());
                }
                if stop || finished {
                    pb.finish_and_clear();
                    if let Some(last) = state.epochs.last().filter(|_| epoch_end) {
                        eprintln!("{}", serde_json::to_string(last).expect("json"));
                    }
                    break 'epochs;
                }
            }
            if epoch_end {
                if let Some(last) = state.epochs.last() {
                    eprintln!("{}", serde_json::to_string(last).expect("json"));
                }
                continue 'epochs;
            }
        }
        pb.finish_and_clear();
    }
    state.train_seconds = seconds_before + session.elapsed().as_secs_f64();

    // The kept weights, as written (the same bytes whichever session wrote them).
    let (kept, _, _, _) = crate::classifier::load_model(&cfg.output, Some(labels.len()), device)?;
    let best = state.best.expect("at least one evaluation ran");
    // Multi-label: per-label thresholds chosen on validation data, saved with the model.
    if problem == ProblemType::MultiLabelClassification
        && cfg.tune_thresholds
        && let Some((r, Targets::MultiHot(truth))) = &val
    {
        let probs = sigmoid_probs(
            &kept,
            &tokenizer,
            r,
            &policy,
            cfg.eval_batch_size,
            cfg.shards(),
            device,
            fitted.as_ref(),
        )?;
        let t = crate::metrics::tune_thresholds(&probs, truth);
        eprintln!(
            "thresholds tuned on validation: {}",
            labels
                .names()
                .iter()
                .zip(&t)
                .map(|(n, t)| format!("{n} {t:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        policy.thresholds = Some(t);
        write_atomic(
            &cfg.output.join(POLICY_FILE),
            serde_json::to_string_pretty(&policy)
                .expect("json")
                .as_bytes(),
        )?;
    }
    let policy = policy;
    let full_report = |recs: &[Record], t: &Targets| {
        evaluate_model(
            &kept,
            &tokenizer,
            recs,
            t,
            labels.names(),
            &policy,
            cfg.eval_batch_size,
            cfg.shards(),
            device,
            fitted.as_ref(),
        )
    };
    let test_report = match &test {
        Some((r, t)) => Some(full_report(r, t)?),
        None => None,
    };
    let test_metrics = test_report.as_ref().map(|r| r.summary);
    // The confusion matrix of the kept model: on test data, else on validation data.
    let (confusion_split, confusion_report) = match (&test_report, &val) {
        _ if problem != ProblemType::SingleLabelClassification => ("", None),
        (Some(r), _) => ("test", Some(r.clone())),
        (None, Some((r, t))) => ("validation", Some(full_report(r, t)?)),
        (None, None) => ("", None),
    };
    let confusion = confusion_report
        .as_ref()
        .map(|r| crate::plots::ConfusionChart {
            title: format!(
                "Confusion matrix ({confusion_split}, {} examples)",
                r.summary.n
            ),
            labels: labels.names().to_vec(),
            counts: r.confusion.clone(),
        });
    let plots = crate::plots::plot_run(&cfg.output, &state.metrics_log, confusion.as_ref())?;
    eprintln!(
        "plots: {}",
        plots
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let summary = TrainSummary {
        epochs: state.epochs.clone(),
        best_epoch: best.epoch,
        best_step: best.step,
        best_validation: best.validation,
        test: test_metrics,
        labels: labels.names().to_vec(),
        n_train: n,
        steps: state.step,
        stopped_early: state.stopped_early,
        train_seconds: state.train_seconds,
        load_report: report.to_string(),
    };
    write_run_record(
        cfg,
        &state,
        &summary,
        test_report.as_ref(),
        &model_dir,
        device,
    )?;
    let classifier = Classifier::from_parts(
        kept,
        fitted,
        tokenizer,
        labels,
        base_config_for(&cfg.output)?,
        cfg.output.clone(),
        policy,
        device,
    );
    Ok((summary, classifier))
}

/// Removes what a killed run may have left half-written: temp files of atomic writes in the
/// run folder and temp checkpoint folders (never listed as checkpoints).
fn remove_leftovers(run_dir: &Path) {
    for dir in [run_dir.to_path_buf(), run_dir.join(CHECKPOINTS)] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
}

fn base_config_for(dir: &Path) -> Result<HfConfig> {
    Ok(HfConfig::from_dir(dir)?)
}

/// Indices held out for validation: per class (first label for multi-label, one group for
/// regression) a seeded `fraction`, at least one when the class has two or more examples.
fn stratified_holdout(
    targets: &Targets,
    fraction: f64,
    seed: u64,
) -> std::collections::BTreeSet<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let key: Vec<usize> = match targets {
        Targets::Classes(ids) => ids.clone(),
        Targets::MultiHot(rows) => rows
            .iter()
            .map(|r| r.iter().position(|&y| y >= 0.5).map_or(0, |j| j + 1))
            .collect(),
        Targets::Values(v) => vec![0; v.len()],
    };
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, k) in key.into_iter().enumerate() {
        groups.entry(k).or_default().push(i);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_5917);
    let mut out = std::collections::BTreeSet::new();
    for (_, mut idx) in groups {
        idx.shuffle(&mut rng);
        let take = ((idx.len() as f64 * fraction).round() as usize)
            .max(usize::from(idx.len() >= 2))
            .min(idx.len().saturating_sub(1));
        out.extend(idx.into_iter().take(take));
    }
    out
}

/// Class weights for the loss: explicit, or `auto` (single-label `n / (k · count)`;
/// multi-label `negatives / positives` per label).
fn class_weights(cfg: &TrainConfig, targets: &Targets, k: usize) -> Result<Option<Vec<f64>>> {
    use crate::config::ClassWeights;
    let Some(w) = &cfg.class_weights else {
        return Ok(None);
    };
    if matches!(targets, Targets::Values(_)) {
        return Err(TrainError::Config(
            "--class-weights does not apply to regression".into(),
        ));
    }
    Ok(Some(match w {
        ClassWeights::List(v) => {
            if v.len() != k {
                return Err(TrainError::Config(format!(
                    "--class-weights has {} values for {k} labels",
                    v.len()
                )));
            }
            v.clone()
        }
        ClassWeights::Auto(_) => match targets {
            Targets::Classes(ids) => {
                let mut count = vec![0usize; k];
                for &c in ids {
                    count[c] += 1;
                }
                let n = ids.len() as f64;
                count
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            n / (k as f64 * c as f64)
                        }
                    })
                    .collect()
            }
            Targets::MultiHot(rows) => (0..k)
                .map(|j| {
                    let pos = rows.iter().filter(|r| r[j] >= 0.5).count();
                    let neg = rows.len() - pos;
                    if pos == 0 {
                        1.0
                    } else {
                        neg as f64 / pos as f64
                    }
                })
                .collect(),
            Targets::Values(_) => unreachable!("checked above"),
        },
    }))
}

/// A balanced epoch: as many draws as examples, with replacement, each class equally likely
/// (then uniform within the class); seeded by (seed, epoch), so a resumed run draws the same.
fn balanced_batches(
    ids: &[usize],
    k: usize,
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    use rand::{Rng, SeedableRng};
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in ids.iter().enumerate() {
        by_class[c].push(i);
    }
    let present: Vec<&Vec<usize>> = by_class.iter().filter(|v| !v.is_empty()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0xBA1A_4CED ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let draws: Vec<usize> = (0..ids.len())
        .map(|_| {
            let class = present[rng.random_range(0..present.len())];
            class[rng.random_range(0..class.len())]
        })
        .collect();
    draws
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// The metric that picks the best checkpoint: as configured, except that regression, where
/// accuracy means nothing, falls back from the default (accuracy) to the loss (MSE).
fn best_metric(cfg: &TrainConfig, problem: ProblemType) -> &str {
    match (problem, cfg.metric_for_best_model.as_str()) {
        (ProblemType::Regression, "accuracy" | "macro_f1" | "micro_f1") => "loss",
        (_, m) => m,
    }
}

/// The learning rate of the base group at a step (for the record).
/// Mixup's draw for one batch: `λ ~ Beta(α, α)` and a permutation of the batch, from an RNG
/// seeded by the run seed, the epoch and the batch (so a resumed run draws the same).
fn mixup_draw(alpha: f64, seed: u64, epoch: usize, batch: usize, n: usize) -> (f64, Vec<usize>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0x4D49_5855_5000_0000
            ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (batch as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9),
    );
    let lambda = rand_distr::Beta::new(alpha, alpha)
        .expect("alpha > 0 was validated")
        .sample(&mut rng);
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rng);
    (lambda, perm)
}

/// Targets mixed as mixup mixes inputs: `λ·y + (1 − λ)·y[perm]`, as rows of floats (one-hot for
/// classes, multi-hot, or one value).
fn mix_targets(t: &Targets, k: usize, lambda: f64, perm: &[usize]) -> Vec<Vec<f32>> {
    let rows: Vec<Vec<f32>> = match t {
        Targets::Classes(ids) => ids
            .iter()
            .map(|&c| {
                let mut r = vec![0.0; k];
                r[c] = 1.0;
                r
            })
            .collect(),
        Targets::MultiHot(rows) => rows.clone(),
        Targets::Values(v) => v.iter().map(|&x| vec![x]).collect(),
    };
    let l = lambda as f32;
    rows.iter()
        .zip(perm)
        .map(|(a, &j)| {
            a.iter()
                .zip(&rows[j])
                .map(|(x, y)| l * x + (1.0 - l) * y)
                .collect()
        })
        .collect()
}

fn scheduler_lr(cfg: &TrainConfig, warmup: usize, total: usize, step: usize) -> f64 {
    crate::optim::schedule(
        cfg.lr_scheduler,
        cfg.lr,
        step.saturating_sub(1),
        warmup,
        total,
    )
}

fn capture_dropout(state: &mut TrainerState) {
    if let Some((seed, pos)) = dropout_position() {
        state.dropout_seed = seed.iter().map(|b| format!("{b:02x}")).collect();
        state.dropout_word_pos = pos.to_string();
    }
}

fn hex_to_seed(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn write_metrics(dir: &Path, log: &[serde_json::Value]) -> Result<()> {
    let lines: String = log.iter().map(|m| format!("{m}\n")).collect();
    write_atomic(&dir.join("metrics.jsonl"), lines.as_bytes())?;
    Ok(())
}

/// Writes `checkpoints/checkpoint-N` (HF folder + optimizer + state) through a temp folder
/// and one rename, then removes checkpoints beyond the last and the best
/// `save_total_limit`.
fn write_checkpoint(
    cfg: &TrainConfig,
    state: &mut TrainerState,
    score: Option<f64>,
    model: &Model,
    optim: &burn::optim::ModuleOptimizer,
    save_folder: &dyn Fn(&Path, &Model) -> Result<()>,
) -> Result<()> {
    let root = cfg.output.join(CHECKPOINTS);
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let name = format!("checkpoint-{}", state.step);
    let fin = root.join(&name);
    let tmp = root.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    save_folder(&tmp, model)?;
    let bytes = optim
        .into_bytes()
        .map_err(|e| TrainError::Resume(format!("cannot serialise the optimizer state: {e}")))?;
    write_atomic(&tmp.join(OPTIMIZER_FILE), &bytes)?;
    state.checkpoints.retain(|c| c.step != state.step);
    state.checkpoints.push(CheckpointInfo {
        step: state.step,
        score,
    });
    // Which to keep: the last, and the best `save_total_limit` by score.
    let higher = best_metric(cfg, state.problem_type()) != "loss";
    let mut ranked: Vec<CheckpointInfo> = state.checkpoints.clone();
    ranked.sort_by(|a, b| {
        let key = |c: &CheckpointInfo| c.score.unwrap_or(c.step as f64);
        let ord = key(b).total_cmp(&key(a));
        if higher { ord } else { ord.reverse() }
    });
    let keep: Vec<usize> = ranked
        .iter()
        .take(cfg.save_total_limit)
        .map(|c| c.step)
        .chain([state.step])
        .collect();
    let dropped: Vec<usize> = state
        .checkpoints
        .iter()
        .filter(|c| !keep.contains(&c.step))
        .map(|c| c.step)
        .collect();
    state.checkpoints.retain(|c| keep.contains(&c.step));
    write_atomic(
        &tmp.join(STATE_FILE),
        serde_json::to_string_pretty(state)
            .expect("json")
            .as_bytes(),
    )?;
    if fin.exists() {
        // A resumed run re-writing the checkpoint it started from: swap it out atomically.
        let old = root.join(format!(".{name}.{}.old.tmp", std::process::id()));
        std::fs::rename(&fin, &old).map_err(io(&fin))?;
        std::fs::rename(&tmp, &fin).map_err(io(&fin))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &fin).map_err(io(&fin))?;
    }
    if let Ok(d) = std::fs::File::open(&root) {
        let _ = d.sync_all();
    }
    for step in dropped {
        // Renamed out of the checkpoint namespace first: a kill mid-removal leaves a temp
        // folder (cleaned at resume), never a half-deleted checkpoint.
        let d = root.join(format!("checkpoint-{step}"));
        let gone = root.join(format!(
            ".checkpoint-{step}.{}.deleted.tmp",
            std::process::id()
        ));
        if std::fs::rename(&d, &gone).is_ok() {
            let _ = std::fs::remove_dir_all(&gone);
        }
    }
    Ok(())
}

/// `run.json`: what ran, on what, and what came out.
fn write_run_record(
    cfg: &TrainConfig,
    state: &TrainerState,
    summary: &TrainSummary,
    test_report: Option<&crate::metrics::Report>,
    model_dir: &Path,
    device: &Device,
) -> Result<()> {
    let json = serde_json::json!({
        "config": cfg,
        "base_model": cfg.model,
        "resolved_from": model_dir,
        "data_sha256": state.data_sha256,
        "seed": cfg.seed,
        "sequin_version": env!("CARGO_PKG_VERSION"),
        "git_revision": option_env!("SEQUIN_GIT_REVISION").unwrap_or("unknown"),
        "crates": {"burn": "0.22.1"},
        "device": format!("{device:?}"),
        "summary": summary,
        "test_report": test_report,
    });
    write_atomic(
        &cfg.output.join("run.json"),
        serde_json::to_string_pretty(&json)
            .expect("json")
            .as_bytes(),
    )?;
    Ok(())
}
