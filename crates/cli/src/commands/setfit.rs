//! `sequin setfit`: few-shot training with SetFit (contrastive body, logistic-regression head).

use anyhow::Result;
use burn::tensor::Device;
use sequin_train::setfit::{SetFitConfig, train};

use crate::args::SetFitArgs;

/// Trains, writes the folder, evaluates the given splits and prints one JSON summary.
pub(crate) fn setfit(a: SetFitArgs, device: &Device) -> Result<()> {
    let cfg = SetFitConfig {
        validation: a.validation,
        test: a.test,
        text_column: a.text_column,
        text_pair_column: a.text_pair_column,
        label_column: a.label_column,
        num_iterations: a.num_iterations,
        batch_size: a.batch_size,
        epochs: a.epochs,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        max_length: a.max_length,
        seed: a.seed,
        head_c: a.head_c,
        shards: crate::backend::default_shards(),
        ..SetFitConfig::new(a.model, a.train, a.output)
    };
    crate::commands::refuse_same_file(&cfg.train, &cfg.output)?;
    let (summary, _) = train(&cfg, device)?;
    let brief = |r: &Option<sequin_train::Report>| {
        r.as_ref().map(|r| {
            serde_json::json!({"accuracy": r.summary.accuracy, "macro_f1": r.summary.macro_f1, "n": r.summary.n})
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "output": summary.output,
            "examples": summary.examples,
            "pairs": summary.pairs,
            "body_steps": summary.body_steps,
            "body_loss": summary.body_loss,
            "body_seconds": summary.body_seconds,
            "head_seconds": summary.head_seconds,
            "train_seconds": summary.train_seconds,
            "validation": brief(&summary.validation),
            "test": brief(&summary.test),
        })
    );
    Ok(())
}
