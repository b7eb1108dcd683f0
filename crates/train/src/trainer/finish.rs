//! Phase 5, `finish`: the kept model reloaded as written, multi-label thresholds tuned on
//! validation data, the test report, the plots, the run record and the summary.

use std::path::Path;

use burn::tensor::Device;
use sequin_heads::ProblemType;
use sequin_hf::{HfConfig, write_atomic};

use super::Trainer;
use super::state::{TrainSummary, TrainerState};
use crate::classifier::{Classifier, ClassifierParts, Model, Targets};
use crate::folder::write_policy;
use crate::metrics::Report;
use crate::plots::ConfusionChart;
use crate::{Result, TrainConfig};

impl Trainer<'_> {
    /// Finishes the run: thresholds, test report, plots, `run.json`; returns the summary and
    /// the kept model, ready for inference.
    pub(crate) fn finish(mut self) -> Result<(TrainSummary, Classifier)> {
        let cfg = self.cfg;
        // The kept weights, as written (the same bytes whichever session wrote them).
        let (kept, _, _, _) =
            crate::folder::load_model(&cfg.output, Some(self.data.labels.len()), self.device)?;
        let best = self.state.best.expect("at least one evaluation ran");
        self.tune_thresholds(&kept)?;
        self.calibrate(&kept)?;
        let test_report = match &self.data.test {
            Some((r, t)) => Some(self.report(&kept, r, t)?),
            None => None,
        };
        let confusion = self.confusion_chart(&kept, test_report.as_ref())?;
        let plots =
            crate::plots::plot_run(&cfg.output, &self.state.metrics_log, confusion.as_ref())?;
        eprintln!(
            "plots: {}",
            plots
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "png"))
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let state = &self.state;
        let summary = TrainSummary {
            epochs: state.epochs.clone(),
            best_epoch: best.epoch,
            best_step: best.step,
            best_validation: best.validation,
            test: test_report.as_ref().map(|r| r.summary),
            labels: self.data.labels.names().to_vec(),
            n_train: self.data.train.len(),
            steps: state.step,
            stopped_early: state.stopped_early,
            train_seconds: state.train_seconds,
            load_report: self.base.report.to_string(),
        };
        let record = RunRecord {
            cfg,
            parameters: self.parameters,
            state,
            summary: &summary,
            test_report: test_report.as_ref(),
            model_dir: &self.base.dir,
            device: self.device,
        };
        record.write()?;
        let classifier = Classifier::from_parts(
            ClassifierParts {
                model: kept,
                features: self.data.features,
                tokenizer: self.base.tokenizer,
                labels: self.data.labels,
                config: HfConfig::from_dir(&cfg.output)?,
                dir: cfg.output.clone(),
                policy: self.policy,
            },
            self.device,
        );
        Ok((summary, classifier))
    }

    /// Multi-label: per-label thresholds chosen on validation data, saved with the model.
    fn tune_thresholds(&mut self, kept: &Model) -> Result<()> {
        let Some((r, Targets::MultiHot(truth))) = &self.data.val else {
            return Ok(());
        };
        if self.data.problem != ProblemType::MultiLabelClassification || !self.cfg.tune_thresholds {
            return Ok(());
        }
        let probs = self.inference(kept).sigmoid_probs(r)?;
        let t = crate::metrics::tune_thresholds(&probs, truth);
        eprintln!(
            "thresholds tuned on validation: {}",
            self.data
                .labels
                .names()
                .iter()
                .zip(&t)
                .map(|(n, t)| format!("{n} {t:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.policy.thresholds = Some(t);
        write_policy(&self.cfg.output, &self.policy)
    }

    /// Single-label with `calibrate`: one temperature fitted on the validation data, saved
    /// with the model, and the reliability diagram before and after it in `plots/`.
    fn calibrate(&mut self, kept: &Model) -> Result<()> {
        let Some(method) = self.cfg.calibrate else {
            return Ok(());
        };
        let Some((r, Targets::Classes(ids))) = &self.data.val else {
            return Err(crate::TrainError::Config(format!(
                "calibrate = {}: a single-label model with validation data is needed (multi-label models are calibrated by their tuned thresholds: tune_thresholds)",
                serde_json::to_string(&method).expect("json")
            )));
        };
        let logits = self.inference(kept).logits(r, "calibrate")?;
        let c = crate::calibrate::Calibration::fit(&logits, ids, "validation".into());
        eprintln!(
            "calibrated on validation ({} examples): temperature {:.3}; ECE {:.4} -> {:.4}, NLL {:.4} -> {:.4}",
            c.n, c.temperature, c.before.ece, c.after.ece, c.before.nll, c.after.nll
        );
        crate::plots::write_reliability(
            &self.cfg.output.join("plots"),
            &logits,
            ids,
            &c,
            "validation",
        )?;
        self.policy.calibration = Some(c);
        write_policy(&self.cfg.output, &self.policy)
    }

    /// The full report of the kept model on labelled records.
    fn report(&self, kept: &Model, records: &[sequin_data::Record], t: &Targets) -> Result<Report> {
        self.inference(kept)
            .evaluate(records, t, self.data.labels.names())
    }

    /// The confusion matrix of the kept model (single-label): on test data, else on
    /// validation data.
    fn confusion_chart(
        &self,
        kept: &Model,
        test: Option<&Report>,
    ) -> Result<Option<ConfusionChart>> {
        if self.data.problem != ProblemType::SingleLabelClassification {
            return Ok(None);
        }
        let (split, report) = match (test, &self.data.val) {
            (Some(r), _) => ("test", r.clone()),
            (None, Some((r, t))) => ("validation", self.report(kept, r, t)?),
            (None, None) => return Ok(None),
        };
        Ok(Some(ConfusionChart {
            title: format!("Confusion matrix ({split}, {} examples)", report.summary.n),
            labels: self.data.labels.names().to_vec(),
            counts: report.confusion,
        }))
    }
}

/// `run.json`: what ran, on what, and what came out.
struct RunRecord<'a> {
    cfg: &'a TrainConfig,
    parameters: (usize, usize),
    state: &'a TrainerState,
    summary: &'a TrainSummary,
    test_report: Option<&'a Report>,
    model_dir: &'a Path,
    device: &'a Device,
}

impl RunRecord<'_> {
    fn write(&self) -> Result<()> {
        let cfg = self.cfg;
        let json = serde_json::json!({
            "config": cfg,
            "base_model": cfg.model,
            "resolved_from": self.model_dir,
            "data_sha256": self.state.data_sha256,
            "seed": cfg.seed,
            "parameters": {"trainable": self.parameters.0, "total": self.parameters.1},
            "sequin_version": env!("CARGO_PKG_VERSION"),
            "git_revision": option_env!("SEQUIN_GIT_REVISION").unwrap_or("unknown"),
            "crates": {"burn": "0.22.1"},
            "device": format!("{:?}", self.device),
            "summary": self.summary,
            "test_report": self.test_report,
        });
        write_atomic(
            &cfg.output.join("run.json"),
            serde_json::to_string_pretty(&json)
                .expect("json")
                .as_bytes(),
        )?;
        Ok(())
    }
}
