//! Phase 4, `evaluate_and_checkpoint`: validation metrics at an evaluation point, the best
//! model kept in the run folder, early stopping, the metrics log and a checkpoint.

use burn::module::Module;
use sequin_heads::ProblemType;

use super::Trainer;
use super::checkpoint::write_metrics;
use super::state::{Best, TrainerState};
use crate::classifier::Model;
use crate::metrics::EvalMetrics;
use crate::{Result, TrainConfig};

/// The metric that picks the best checkpoint: as configured, except that regression, where
/// accuracy means nothing, falls back from the default (accuracy) to the loss (MSE).
pub(crate) fn best_metric(cfg: &TrainConfig, problem: ProblemType) -> &str {
    match (problem, cfg.metric_for_best_model.as_str()) {
        (ProblemType::Regression, "accuracy" | "macro_f1" | "micro_f1") => "loss",
        (_, m) => m,
    }
}

/// Whether an evaluation's `key` counts as an improvement over the best so far (`min_delta`
/// counts for early stopping), and whether it is better at all (it then becomes the kept
/// model). Without validation data the key is the step, and later is better.
fn compare(
    best: Option<Best>,
    key: f64,
    validated: bool,
    higher_is_better: bool,
    min_delta: f64,
) -> (bool, bool) {
    let Some(b) = best else {
        return (true, true);
    };
    let improved = match () {
        _ if !validated => key > b.score,
        _ if higher_is_better => key > b.score + min_delta,
        _ => key < b.score - min_delta,
    };
    let better = if higher_is_better || !validated {
        key > b.score
    } else {
        key < b.score
    };
    (improved, better)
}

impl Trainer<'_> {
    /// One evaluation and checkpoint, with the cursor already pointing past the last step.
    /// Returns whether early stopping ends the run.
    pub(super) fn evaluate_and_checkpoint(
        &mut self,
        model: &Model,
        train_loss: f64,
    ) -> Result<bool> {
        let cfg = self.cfg;
        let inference = model.valid();
        let validation = match &self.data.val {
            Some((r, t)) => Some(
                self.inference(&inference)
                    .evaluate(r, t, self.data.labels.names())?
                    .summary,
            ),
            None => None,
        };
        let metric = best_metric(cfg, self.data.problem);
        let score = validation.as_ref().map(|v: &EvalMetrics| v.score(metric));
        self.log_evaluation(validation.as_ref(), train_loss);
        let state = &mut self.state;
        // Without validation data the latest weights count as the best.
        let key = score.unwrap_or(state.step as f64);
        let (improved, better) = compare(
            state.best,
            key,
            score.is_some(),
            metric != "loss",
            cfg.early_stopping_min_delta,
        );
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
            self.folder().write(&cfg.output, &inference, &self.policy)?;
        }
        let state = &mut self.state;
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
        state.train_seconds = self.clock.seconds();
        self.write_checkpoint(score, &inference)?;
        Ok(self.state.stopped_early)
    }

    /// Adds an evaluation's line to the metrics log, and prints it.
    fn log_evaluation(&mut self, validation: Option<&EvalMetrics>, train_loss: f64) {
        let s: &TrainerState = &self.state;
        let entry = serde_json::json!({
            "step": s.step,
            "epoch": (s.epoch - 1) as f64 + s.batch as f64 / self.plan.batches_per_epoch as f64,
            "lr": self.plan.lr(self.cfg, s.step),
            "train_loss": train_loss,
            "validation": validation,
            "elapsed_s": self.clock.seconds(),
        });
        if let Some(v) = validation {
            eprintln!(
                "step {}: validation accuracy {:.4}, macro-F1 {:.4}, loss {:.4}",
                s.step, v.accuracy, v.macro_f1, v.loss
            );
        }
        self.state.metrics_log.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(score: f64) -> Option<Best> {
        Some(Best {
            score,
            step: 1,
            epoch: 1,
            validation: None,
        })
    }

    #[test]
    fn improvement_needs_the_delta_but_better_does_not() {
        // Higher is better: +0.005 is better, but no improvement with min_delta 0.01.
        assert_eq!(compare(best(0.8), 0.805, true, true, 0.01), (false, true));
        assert_eq!(compare(best(0.8), 0.82, true, true, 0.01), (true, true));
        // Lower is better (loss).
        assert_eq!(compare(best(0.5), 0.495, true, false, 0.01), (false, true));
        assert_eq!(compare(best(0.5), 0.6, true, false, 0.0), (false, false));
        // Without validation data the later step wins.
        assert_eq!(compare(best(3.0), 4.0, false, false, 0.5), (true, true));
        assert_eq!(compare(None, 0.0, true, true, 0.0), (true, true));
    }
}
