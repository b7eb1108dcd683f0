//! The epochs: batches through [`step`](super::step), gradient accumulation, optimizer steps,
//! the training-loss log, and evaluations with checkpoints at their points.

use std::time::Instant;

use burn::optim::GradientsParams;
use indicatif::ProgressBar;
use sequin_encoders::common::with_dropout_stream;

use super::Trainer;
use super::checkpoint::{capture_dropout, write_metrics};
use super::state::EpochReport;
use super::step::{Batch, batch_records};
use crate::classifier::Model;
use crate::optim::clip_global_norm;
use crate::progress::bar;
use crate::{Result, TrainError};

/// What the loop does after an optimizer step.
enum After {
    /// The next batch of this epoch.
    NextBatch,
    /// The epoch ended: the next one.
    NextEpoch,
    /// The run is over (the last step, or early stopping).
    Stop,
}

/// Throughput counters of the current epoch in this session.
struct Meter {
    start: Instant,
    seen: usize,
}

impl Meter {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            seen: 0,
        }
    }

    fn rate(&self) -> f64 {
        self.seen as f64 / self.start.elapsed().as_secs_f64()
    }
}

impl Trainer<'_> {
    /// Trains until the last step or early stopping, evaluating and checkpointing on the way.
    pub(crate) fn fit(&mut self, mut model: Model) -> Result<()> {
        // A resumed run that had already finished trains no further.
        let done = self.state.step >= self.plan.total || self.state.stopped_early;
        let mut meter = Meter::new();
        while !done && self.state.epoch <= self.cfg.epochs {
            let (m, stop) = self.epoch(model, &mut meter)?;
            model = m;
            if stop {
                break;
            }
        }
        self.state.train_seconds = self.clock.seconds();
        Ok(())
    }

    /// Runs the rest of the current epoch; returns the model and whether the run is over.
    fn epoch(&mut self, mut model: Model, meter: &mut Meter) -> Result<(Model, bool)> {
        let epoch = self.state.epoch;
        let batches = self.epoch_batches(epoch);
        let pb = bar(
            (batches.len() - self.state.batch) as u64,
            &format!("epoch {epoch}/{}", self.cfg.epochs),
        );
        let accum = self.cfg.gradient_accumulation_steps;
        let mut in_accum = 0usize;
        while self.state.batch < batches.len() {
            let index = self.state.batch;
            let chunk = &batches[index];
            let records = batch_records(
                self.cfg,
                self.seeds,
                &self.augmenter,
                &self.data.train,
                chunk,
                epoch,
            );
            // The last group of an epoch may hold fewer batches.
            let group_start = index - index % accum;
            let batch = Batch {
                chunk,
                records: records.iter().map(|r| r.as_ref()).collect(),
                targets: self.data.train_targets.select(chunk),
                epoch,
                index,
                group_len: accum.min(batches.len() - group_start),
            };
            // The step draws its dropout masks from the run's stream.
            let mut dropout = self.dropout;
            let step = with_dropout_stream(&mut dropout, || self.batch_grads(&model, &batch));
            self.dropout = dropout;
            let (loss, grads) = step?;
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    step: self.state.step,
                    loss,
                });
            }
            self.accumulator.accumulate(&model, grads);
            in_accum += 1;
            self.state.count_batch(loss, chunk.len());
            meter.seen += chunk.len();
            self.show_progress(&pb, meter, batches.len());
            if in_accum < batch.group_len {
                continue;
            }
            in_accum = 0;
            model = self.optimizer_step(model);
            match self.after_step(&model, &pb, meter, batches.len())? {
                After::NextBatch => {}
                After::NextEpoch => return Ok((model, false)),
                After::Stop => return Ok((model, true)),
            }
        }
        pb.finish_and_clear();
        Ok((model, false))
    }

    /// The progress bar's status: the running loss and the throughput; without a terminal the
    /// bar is hidden, and a line is logged every tenth of an epoch.
    fn show_progress(&self, pb: &ProgressBar, meter: &Meter, batches: usize) {
        let s = &self.state;
        pb.inc(1);
        let status = format!(
            "loss {:.4} | {:.1} samples/s",
            s.epoch_loss_sum / s.epoch_seen as f64,
            meter.rate()
        );
        let log_every = (batches / 10).max(1);
        if pb.is_hidden() && s.batch.is_multiple_of(log_every) {
            eprintln!("epoch {} batch {}/{batches}: {status}", s.epoch, s.batch);
        }
        pb.set_prefix(status);
    }

    /// Clips the accumulated gradients and takes one optimizer step.
    fn optimizer_step(&mut self, model: Model) -> Model {
        let mut grads: GradientsParams = self.accumulator.grads();
        if self.cfg.max_grad_norm > 0.0 {
            clip_global_norm(&model, &mut grads, self.cfg.max_grad_norm);
        }
        let lr = self.scheduler.step();
        let model = self.optim.step(lr, model, grads);
        self.state.step += 1;
        model
    }

    /// After an optimizer step: the training-loss log, the end of an epoch, and an evaluation
    /// with a checkpoint when one is due.
    fn after_step(
        &mut self,
        model: &Model,
        pb: &ProgressBar,
        meter: &mut Meter,
        batches: usize,
    ) -> Result<After> {
        let epoch = self.state.epoch;
        self.log_train_loss(batches);
        let epoch_end = self.state.batch == batches;
        let finished = self.state.step >= self.plan.total;
        let running_loss = self.state.epoch_loss_sum / self.state.epoch_seen.max(1) as f64;
        if epoch_end {
            pb.finish_and_clear();
            self.end_epoch(epoch, running_loss, meter)?;
            *meter = Meter::new();
        }
        let eval_now = match self.cfg.eval_steps {
            Some(k) => self.state.step.is_multiple_of(k) || finished,
            None => epoch_end || finished,
        };
        if eval_now {
            capture_dropout(&mut self.state, &self.dropout);
            let stop = self.evaluate_and_checkpoint(model, running_loss)?;
            if epoch_end && let Some(last) = self.state.epochs.last_mut() {
                last.validation = self
                    .state
                    .metrics_log
                    .last()
                    .and_then(|m| serde_json::from_value(m["validation"].clone()).ok());
            }
            if stop || finished {
                pb.finish_and_clear();
                if epoch_end {
                    self.print_last_epoch();
                }
                return Ok(After::Stop);
            }
        }
        if epoch_end {
            self.print_last_epoch();
            return Ok(After::NextEpoch);
        }
        Ok(After::NextBatch)
    }

    /// The training loss, ten times an epoch (as transformers' logging_steps).
    fn log_train_loss(&mut self, batches: usize) {
        let log_steps = (self.plan.steps_per_epoch / 10).max(1);
        let s = &mut self.state;
        if s.step.is_multiple_of(log_steps) {
            let lr = self.plan.lr(self.cfg, s.step);
            s.metrics_log.push(serde_json::json!({
                "step": s.step,
                "epoch": (s.epoch - 1) as f64 + s.batch as f64 / batches as f64,
                "lr": lr,
                "loss": s.interval_loss_sum / s.interval_seen.max(1) as f64,
            }));
            s.interval_loss_sum = 0.0;
            s.interval_seen = 0;
        }
    }

    /// Records a finished epoch (before any checkpoint, so a resumed run's log is the same)
    /// and moves the cursor to the next one.
    fn end_epoch(&mut self, epoch: usize, train_loss: f64, meter: &Meter) -> Result<()> {
        let rep = EpochReport {
            epoch,
            train_loss,
            validation: None,
            samples_per_s: meter.rate(),
        };
        self.state.metrics_log.push(serde_json::json!({
            "epoch_end": epoch, "step": self.state.step, "train_loss": rep.train_loss,
            "train_samples_per_s": rep.samples_per_s,
        }));
        write_metrics(&self.cfg.output, &self.state.metrics_log)?;
        self.state.epochs.push(rep);
        self.state.next_epoch();
        Ok(())
    }

    fn print_last_epoch(&self) {
        if let Some(last) = self.state.epochs.last() {
            eprintln!("{}", serde_json::to_string(last).expect("json"));
        }
    }
}
