//! Hyperparameter search: a grid or a seeded random sample over learning rate, batch size,
//! epochs, warmup and weight decay. Every trial is a normal run folder; a results table
//! (Markdown and JSON), sorted by the chosen metric, marks the best.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::metrics::EvalMetrics;
use crate::{Result, TrainConfig, TrainError, train_model};

/// The values to try for each hyperparameter (an empty list keeps the base config's value).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchSpace {
    /// Peak learning rates.
    pub lr: Vec<f64>,
    /// Batch sizes.
    pub batch_size: Vec<usize>,
    /// Epoch counts.
    pub epochs: Vec<usize>,
    /// Warmup ratios.
    pub warmup_ratio: Vec<f64>,
    /// Weight decays.
    pub weight_decay: Vec<f64>,
    /// LoRA ranks (a LoRA search; empty: the base config's).
    pub lora_rank: Vec<usize>,
    /// LoRA alphas.
    pub lora_alpha: Vec<f64>,
}

/// One point of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// Warmup ratio.
    pub warmup_ratio: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// LoRA rank (`None`: full fine-tuning).
    pub lora_rank: Option<usize>,
    /// LoRA alpha.
    pub lora_alpha: Option<f64>,
}

/// One trial's settings and results.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// 1-based trial number.
    pub trial: usize,
    /// Its run folder.
    pub output: PathBuf,
    /// Learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// Warmup ratio.
    pub warmup_ratio: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// LoRA rank (absent: full fine-tuning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<usize>,
    /// LoRA alpha.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<f64>,
    /// Validation metrics of the kept model.
    pub validation: Option<EvalMetrics>,
    /// Test metrics of the kept model.
    pub test: Option<EvalMetrics>,
    /// The chosen metric on validation.
    pub score: Option<f64>,
    /// Training seconds.
    pub train_seconds: f64,
}

impl SearchSpace {
    /// Every combination, in a fixed order.
    pub fn grid(&self, base: &TrainConfig) -> Vec<Point> {
        let or = |v: &Vec<f64>, d: f64| if v.is_empty() { vec![d] } else { v.clone() };
        let oru = |v: &Vec<usize>, d: usize| if v.is_empty() { vec![d] } else { v.clone() };
        let ranks: Vec<Option<usize>> = match self.lora_rank.is_empty() {
            true => vec![base.lora_rank],
            false => self.lora_rank.iter().copied().map(Some).collect(),
        };
        let alphas: Vec<Option<f64>> = match self.lora_alpha.is_empty() {
            true => vec![base.lora_alpha],
            false => self.lora_alpha.iter().copied().map(Some).collect(),
        };
        let mut out = Vec::new();
        for &lr in &or(&self.lr, base.lr) {
            for &batch_size in &oru(&self.batch_size, base.batch_size) {
                for &epochs in &oru(&self.epochs, base.epochs) {
                    for &warmup_ratio in &or(&self.warmup_ratio, base.warmup_ratio) {
                        for &weight_decay in &or(&self.weight_decay, base.weight_decay) {
                            for &lora_rank in &ranks {
                                for &lora_alpha in &alphas {
                                    out.push(Point {
                                        lr,
                                        batch_size,
                                        epochs,
                                        warmup_ratio,
                                        weight_decay,
                                        lora_rank,
                                        lora_alpha,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// How a search runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TuneOptions {
    /// Sample this many points of the grid (with the base seed) instead of running all.
    pub random: Option<usize>,
    /// The metric that ranks trials: `accuracy`, `macro_f1`, `micro_f1`, `r2` (higher is
    /// better) or `loss` (lower is better), on validation data.
    pub metric: String,
    /// Keep every trial's checkpoints (optimizer state included); by default a trial keeps
    /// only its model folder, which is what the results table points to.
    pub keep_checkpoints: bool,
}

/// Runs the trials (the whole grid, or a random sample of it), each into
/// `base.output/trial-NNN`, and writes `tune_results.md` and `tune_results.json` after every
/// trial. The base config must have validation data.
pub fn tune(
    base: &TrainConfig,
    space: &SearchSpace,
    opts: &TuneOptions,
    device: &Device,
) -> Result<Vec<Trial>> {
    let (random, metric) = (opts.random, opts.metric.as_str());
    if base.validation.is_none() && base.validation_split.is_none() {
        return Err(TrainError::Config(
            "tune needs validation data (--validation or --validation-split) to compare trials"
                .into(),
        ));
    }
    if !crate::BEST_METRICS.contains(&metric) {
        return Err(TrainError::Config(format!(
            "tune metric `{metric}` is not one of {}",
            crate::BEST_METRICS.join(", ")
        )));
    }
    let mut points = space.grid(base);
    if let Some(n) = random {
        let mut rng = sequin_data::Seeds::new(base.seed).tune_sample();
        points.shuffle(&mut rng);
        points.truncate(n.max(1));
    }
    let root = base.output.clone();
    std::fs::create_dir_all(&root).map_err(|source| TrainError::Io {
        path: root.clone(),
        source,
    })?;
    let mut trials = Vec::with_capacity(points.len());
    for (i, point) in points.into_iter().enumerate() {
        let Point {
            lr,
            batch_size,
            epochs,
            warmup_ratio,
            weight_decay,
            lora_rank,
            lora_alpha,
        } = point;
        let mut cfg = base.clone();
        cfg.lr = lr;
        cfg.batch_size = batch_size;
        cfg.epochs = epochs;
        cfg.warmup_ratio = warmup_ratio;
        cfg.weight_decay = weight_decay;
        cfg.lora_rank = lora_rank;
        cfg.lora_alpha = lora_alpha;
        cfg.output = root.join(format!("trial-{:03}", i + 1));
        cfg.metric_for_best_model = metric.to_string();
        eprintln!(
            "trial {}: lr {lr}, batch size {batch_size}, epochs {epochs}, warmup {warmup_ratio}, weight decay {weight_decay}{}",
            i + 1,
            lora_rank.map_or(String::new(), |r| format!(
                ", LoRA rank {r} alpha {}",
                lora_alpha.unwrap_or(8.0)
            ))
        );
        let (summary, _) = train_model(&cfg, device)?;
        if !opts.keep_checkpoints {
            let checkpoints = cfg.output.join("checkpoints");
            if checkpoints.exists() {
                sequin_fs::remove(&checkpoints).map_err(|source| TrainError::Io {
                    path: checkpoints.clone(),
                    source,
                })?;
            }
        }
        let score = summary.best_validation.map(|v| v.score(metric));
        trials.push(Trial {
            trial: i + 1,
            output: cfg.output.clone(),
            lr,
            batch_size,
            epochs,
            warmup_ratio,
            weight_decay,
            lora_rank,
            lora_alpha: lora_rank.map(|_| lora_alpha.unwrap_or(8.0)),
            validation: summary.best_validation,
            test: summary.test,
            score,
            train_seconds: summary.train_seconds,
        });
        write_results(&root, &trials, metric)?;
    }
    Ok(sorted(trials, metric))
}

fn sorted(mut trials: Vec<Trial>, metric: &str) -> Vec<Trial> {
    let lower = metric == "loss";
    trials.sort_by(|a, b| {
        let key = |t: &Trial| {
            t.score.unwrap_or(if lower {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            })
        };
        let o = key(b).total_cmp(&key(a));
        if lower { o.reverse() } else { o }
    });
    trials
}

/// `tune_results.json` and `tune_results.md`, best first.
fn write_results(root: &Path, trials: &[Trial], metric: &str) -> Result<()> {
    let trials = sorted(trials.to_vec(), metric);
    let json = serde_json::json!({
        "metric": metric,
        "best": trials.first().map(|t| t.output.clone()),
        "trials": trials,
    });
    sequin_hf::write_atomic(
        &root.join("tune_results.json"),
        serde_json::to_string_pretty(&json)
            .expect("json")
            .as_bytes(),
    )?;
    let f = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.4}"));
    // The ranking metric gets its own column unless the table has it already.
    let own = !matches!(metric, "accuracy" | "macro_f1");
    let lora = trials.iter().any(|t| t.lora_rank.is_some());
    let mut md = format!(
        "# Hyperparameter search\n\nSorted by validation `{metric}` ({}); the best run is marked ★.\n\n\
         | | trial | lr | batch | epochs | warmup | weight decay |{}{} val accuracy | val macro-F1 | test accuracy | test macro-F1 | train s | folder |\n\
         |---|---:|---:|---:|---:|---:|---:|{}{}---:|---:|---:|---:|---:|---|\n",
        if metric == "loss" {
            "lower is better"
        } else {
            "higher is better"
        },
        if lora { " LoRA r / alpha |" } else { "" },
        if own {
            format!(" val {metric} |")
        } else {
            String::new()
        },
        if lora { "---:|" } else { "" },
        if own { "---:|" } else { "" }
    );
    for (i, t) in trials.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} | {:e} | {} | {} | {} | {} |{}{} {} | {} | {} | {} | {:.0} | `{}` |\n",
            if i == 0 { "★" } else { "" },
            t.trial,
            t.lr,
            t.batch_size,
            t.epochs,
            t.warmup_ratio,
            t.weight_decay,
            match (lora, t.lora_rank, t.lora_alpha) {
                (false, _, _) => String::new(),
                (true, Some(r), Some(a)) => format!(" {r} / {a} |"),
                (true, _, _) => " full |".to_string(),
            },
            if own {
                format!(" {} |", f(t.score))
            } else {
                String::new()
            },
            f(t.validation.map(|v| v.accuracy)),
            f(t.validation.map(|v| v.macro_f1)),
            f(t.test.map(|v| v.accuracy)),
            f(t.test.map(|v| v.macro_f1)),
            t.train_seconds,
            t.output.display()
        ));
    }
    sequin_hf::write_atomic(&root.join("tune_results.md"), md.as_bytes())?;
    Ok(())
}
