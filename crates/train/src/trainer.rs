//! The training loop.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use sequin_data::{
    EncodedBatch, LabelMap, Record, length_grouped_batches, read_records, shuffled_indices,
};
use sequin_heads::{ProblemType, SequenceClassifier, loss};
use sequin_hf::{load_classifier, resolve, save_classifier_folder, write_atomic};
use sequin_tokenize::{EncodeOptions, Tokenizer};
use serde::Serialize;

use crate::classifier::{Classifier, InputPolicy, POLICY_FILE, doc_logits, evaluate_model};
use crate::metrics::EvalMetrics;
use crate::optim::{adamw, clip_global_norm, linear_schedule};
use crate::progress::bar;
use crate::{Result, TrainConfig, TrainError};

/// One epoch's figures.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Validation metrics, when a validation file was given.
    pub validation: Option<EvalMetrics>,
    /// Training throughput.
    pub samples_per_s: f64,
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// Per-epoch figures.
    pub epochs: Vec<EpochReport>,
    /// The epoch whose weights were kept (1-based).
    pub best_epoch: usize,
    /// Test metrics of the kept weights, when a test file was given.
    pub test: Option<EvalMetrics>,
    /// Class names in id order.
    pub labels: Vec<String>,
    /// Training examples.
    pub n_train: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Wall time of the training loop, seconds.
    pub train_seconds: f64,
    /// The load report of the base model.
    pub load_report: String,
}

fn read(path: &Path, cfg: &TrainConfig) -> Result<Vec<Record>> {
    Ok(read_records(path, &cfg.columns())?)
}

/// Fine-tunes a sequence classifier and writes an HF folder to `cfg.output`.
///
/// `device` is the inference device (e.g. `Device::flex()`); training runs on its autodiff
/// counterpart.
pub fn train(cfg: &TrainConfig, device: &Device) -> Result<TrainSummary> {
    train_model(cfg, device).map(|(s, _)| s)
}

/// Serialises training runs within a process: burn's CPU backend draws every random number
/// (head initialisation, dropout) from one process-wide seeded generator, so two runs at once
/// would interleave their draws and neither would be reproducible.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// As [`train`], and also returns the kept model, in memory, ready for inference.
pub fn train_model(cfg: &TrainConfig, device: &Device) -> Result<(TrainSummary, Classifier)> {
    let _one_at_a_time = TRAINING.lock().unwrap_or_else(|p| p.into_inner());
    cfg.validate()?;
    // Fail on an unwritable output before any work is done.
    std::fs::create_dir_all(&cfg.output).map_err(|source| TrainError::Io {
        path: cfg.output.clone(),
        source,
    })?;
    let model_dir = resolve(&cfg.model)?;
    let tokenizer = Tokenizer::from_dir(&model_dir)?;

    let mut train_recs = read(&cfg.train, cfg)?;
    let labels = LabelMap::from_train(&train_recs, &cfg.train)?;
    if let Some(n) = cfg.max_train_samples {
        let order = shuffled_indices(train_recs.len(), cfg.seed, usize::MAX);
        train_recs = order
            .into_iter()
            .take(n)
            .map(|i| train_recs[i].clone())
            .collect();
    }
    let train_ids = labels.encode(&train_recs, &cfg.train)?;
    let val = match &cfg.validation {
        Some(p) => {
            let r = read(p, cfg)?;
            let ids = labels.encode(&r, p)?;
            Some((r, ids))
        }
        None => None,
    };
    let test = match &cfg.test {
        Some(p) => {
            let r = read(p, cfg)?;
            let ids = labels.encode(&r, p)?;
            Some((r, ids))
        }
        None => None,
    };

    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    sequin_encoders::common::seed_dropout(cfg.seed);
    let (mut model, base_config, report) = load_classifier(&model_dir, Some(labels.len()), &ad)?;
    if cfg.max_length > base_config.arch.max_length() {
        return Err(TrainError::Config(format!(
            "--max-length {} exceeds the {} positions the model's max_position_embeddings allows",
            cfg.max_length,
            base_config.arch.max_length()
        )));
    }
    crate::check_vocab(&tokenizer, &base_config)?;
    eprintln!("model {}: {report}", model_dir.display());
    model = model.train();
    let mut optim = adamw(&model, cfg.weight_decay);

    let opts = EncodeOptions {
        max_length: cfg.max_length,
        pad_to_multiple_of: cfg.pad_to_multiple_of,
    };
    let n = train_recs.len();
    let lengths: Vec<usize> = train_recs
        .iter()
        .map(|r| r.text.len() + r.text_pair.as_ref().map_or(0, String::len))
        .collect();
    let steps_per_epoch = n.div_ceil(cfg.batch_size);
    let total = cfg
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * cfg.epochs);
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;

    let mut step = 0usize;
    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize)> = None;
    let mut kept: Option<SequenceClassifier> = None;
    let mut metrics_log: Vec<serde_json::Value> = Vec::new();
    let started = Instant::now();
    let policy = InputPolicy {
        max_length: cfg.max_length,
        long_text: cfg.long_text,
        aggregate: cfg.aggregate,
    };
    let eval_on = |m: &SequenceClassifier, recs: &[Record], ids: &[usize]| {
        evaluate_model(
            m,
            &tokenizer,
            recs,
            ids,
            labels.names(),
            policy,
            cfg.eval_batch_size,
            device,
        )
        .map(|r| r.summary)
    };
    let save = |m: &SequenceClassifier| -> Result<()> {
        save_classifier_folder(
            &cfg.output,
            m,
            &base_config,
            labels.names(),
            ProblemType::SingleLabelClassification,
            &tokenizer,
            cfg.max_length,
        )?;
        write_atomic(
            &cfg.output.join(POLICY_FILE),
            serde_json::to_string_pretty(&policy)
                .expect("json")
                .as_bytes(),
        )?;
        Ok(())
    };

    'epochs: for epoch in 1..=cfg.epochs {
        let batches: Vec<Vec<usize>> = if cfg.group_by_length {
            length_grouped_batches(&lengths, cfg.batch_size, cfg.seed, epoch)
        } else {
            shuffled_indices(n, cfg.seed, epoch)
                .chunks(cfg.batch_size)
                .map(<[usize]>::to_vec)
                .collect()
        };
        let pb = bar(
            steps_per_epoch.min(total - step) as u64,
            &format!("epoch {epoch}/{}", cfg.epochs),
        );
        let t0 = Instant::now();
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for chunk in &batches {
            if step >= total {
                pb.finish_and_clear();
                break 'epochs;
            }
            let recs: Vec<&Record> = chunk.iter().map(|&i| &train_recs[i]).collect();
            let ids: Vec<usize> = chunk.iter().map(|&i| train_ids[i]).collect();
            let mut b =
                EncodedBatch::new_long(&tokenizer, &recs, Some(&ids), opts, cfg.long_text, &ad)?;
            let targets = b.labels.take().expect("labelled");
            let logits = doc_logits(&model, b, cfg.aggregate);
            let loss = loss::cross_entropy(logits, targets);
            let loss_val: f32 = loss.clone().into_scalar();
            if !loss_val.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    loss: loss_val,
                });
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            if cfg.max_grad_norm > 0.0 {
                clip_global_norm(&model, &mut grads, cfg.max_grad_norm);
            }
            let lr = linear_schedule(cfg.lr, step, warmup, total);
            model = optim.step(lr, model, grads);
            step += 1;
            loss_sum += loss_val as f64 * chunk.len() as f64;
            seen += chunk.len();
            pb.inc(1);
            let status = format!(
                "loss {:.4} | {:.1} samples/s",
                loss_sum / seen as f64,
                seen as f64 / t0.elapsed().as_secs_f64()
            );
            // Without a terminal the bar is hidden: log a line every tenth of an epoch.
            let every = (steps_per_epoch / 10).max(1);
            if pb.is_hidden() && (pb.position() as usize).is_multiple_of(every) {
                eprintln!(
                    "epoch {epoch} step {}/{}: {status}",
                    pb.position(),
                    pb.length().unwrap_or(0)
                );
            }
            pb.set_prefix(status);
        }
        pb.finish_and_clear();
        let samples_per_s = seen as f64 / t0.elapsed().as_secs_f64();
        let validation = match &val {
            Some((r, ids)) => Some(eval_on(&model.valid(), r, ids)?),
            None => None,
        };
        let rep = EpochReport {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            validation,
            samples_per_s,
        };
        eprintln!("{}", serde_json::to_string(&rep).expect("json"));
        metrics_log.push(serde_json::json!({
            "epoch": epoch,
            "step": step,
            "elapsed_s": started.elapsed().as_secs_f64(),
            "lr": linear_schedule(cfg.lr, step.saturating_sub(1), warmup, total),
            "train_loss": rep.train_loss,
            "train_samples_per_s": rep.samples_per_s,
            "validation": rep.validation,
        }));
        let lines: String = metrics_log.iter().map(|m| format!("{m}\n")).collect();
        write_atomic(&cfg.output.join("metrics.jsonl"), lines.as_bytes())?;
        // Keep the best epoch by validation accuracy (the last epoch without validation).
        let score = validation.map_or(epoch as f64, |v| v.accuracy);
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, epoch));
            let m = model.valid();
            save(&m)?;
            kept = Some(m);
        }
        epochs.push(rep);
    }
    let kept = match kept {
        Some(m) => m,
        // Stopped by max_steps before an epoch ended: keep the weights as they are.
        None => {
            let m = model.valid();
            save(&m)?;
            best = Some((0.0, epochs.len() + 1));
            m
        }
    };
    let train_seconds = started.elapsed().as_secs_f64();
    let best_epoch = best.map_or(0, |b| b.1);

    let test_metrics = match &test {
        Some((r, ids)) => Some(eval_on(&kept, r, ids)?),
        None => None,
    };
    let summary = TrainSummary {
        epochs,
        best_epoch,
        test: test_metrics,
        labels: labels.names().to_vec(),
        n_train: n,
        steps: step,
        train_seconds,
        load_report: report.to_string(),
    };
    let fingerprint = |p: &Path| -> Option<String> {
        use sha2::{Digest, Sha256};
        std::fs::read(p)
            .ok()
            .map(|b| format!("{:x}", Sha256::digest(&b)))
    };
    let json = serde_json::json!({
        "config": cfg,
        "model_dir": model_dir,
        "data_sha256": {
            "train": fingerprint(&cfg.train),
            "validation": cfg.validation.as_deref().and_then(fingerprint),
            "test": cfg.test.as_deref().and_then(fingerprint),
        },
        "sequin_version": env!("CARGO_PKG_VERSION"),
        "device": format!("{device:?}"),
        "summary": &summary,
    });
    write_atomic(
        &cfg.output.join("sequin_train.json"),
        serde_json::to_string_pretty(&json)
            .expect("json")
            .as_bytes(),
    )?;
    let classifier = Classifier::from_parts(
        kept,
        tokenizer,
        labels,
        base_config,
        cfg.output.clone(),
        policy,
        device,
    );
    Ok((summary, classifier))
}
