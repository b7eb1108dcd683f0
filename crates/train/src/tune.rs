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
    pub fn grid(&self, base: &TrainConfig) -> Vec<(f64, usize, usize, f64, f64)> {
        let or = |v: &Vec<f64>, d: f64| if v.is_empty() { vec![d] } else { v.clone() };
        let oru = |v: &Vec<usize>, d: usize| if v.is_empty() { vec![d] } else { v.clone() };
        let mut out = Vec::new();
        for &lr in &or(&self.lr, base.lr) {
            for &bs in &oru(&self.batch_size, base.batch_size) {
                for &ep in &oru(&self.epochs, base.epochs) {
                    for &wu in &or(&self.warmup_ratio, base.warmup_ratio) {
                        for &wd in &or(&self.weight_decay, base.weight_decay) {
                            out.push((lr, bs, ep, wu, wd));
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
    for (i, (lr, batch_size, epochs, warmup_ratio, weight_decay)) in points.into_iter().enumerate()
    {
        let mut cfg = base.clone();
        cfg.lr = lr;
        cfg.batch_size = batch_size;
        cfg.epochs = epochs;
        cfg.warmup_ratio = warmup_ratio;
        cfg.weight_decay = weight_decay;
        cfg.output = root.join(format!("trial-{:03}", i + 1));
        cfg.metric_for_best_model = metric.to_string();
        eprintln!(
            "trial {}: lr {lr}, batch size {batch_size}, epochs {epochs}, warmup {warmup_ratio}, weight decay {weight_decay}",
            i + 1
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
    let mut md = format!(
        "# Hyperparameter search\n\nSorted by validation `{metric}` ({}); the best run is marked ★.\n\n\
         | | trial | lr | batch | epochs | warmup | weight decay |{} val accuracy | val macro-F1 | test accuracy | test macro-F1 | train s | folder |\n\
         |---|---:|---:|---:|---:|---:|---:|{}---:|---:|---:|---:|---:|---|\n",
        if metric == "loss" {
            "lower is better"
        } else {
            "higher is better"
        },
        if own {
            format!(" val {metric} |")
        } else {
            String::new()
        },
        if own { "---:|" } else { "" }
    );
    for (i, t) in trials.iter().enumerate() {
        md.push_str(&format!(
            "| {} | {} | {:e} | {} | {} | {} | {} |{} {} | {} | {} | {} | {:.0} | `{}` |\n",
            if i == 0 { "★" } else { "" },
            t.trial,
            t.lr,
            t.batch_size,
            t.epochs,
            t.warmup_ratio,
            t.weight_decay,
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
