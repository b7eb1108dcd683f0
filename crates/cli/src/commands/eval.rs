//! `sequin eval` and what `eval` and `predict` share: a classifier loaded and set up from the
//! inference flags.

use std::path::Path;

use anyhow::Result;
use burn::tensor::Device;
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, ColumnChoice};

use crate::args::{EvalArgs, InferenceArgs};
use crate::backend::default_shards;

/// Loads the classifier of `run.model` with the inference flags applied: the max length
/// (checked against the model), the shards, and any long-text policy or aggregation
/// overriding the saved ones.
pub(crate) fn load(run: &InferenceArgs, device: &Device) -> Result<(Classifier, EncodeOptions)> {
    let dir = sequin_hf::resolve(&run.model)?;
    if run.base.is_some() && !sequin_hf::is_adapter(&dir) {
        return Err(crate::UsageError(format!(
            "--base is for a PEFT adapter folder; {} has no {}",
            run.model,
            sequin_hf::ADAPTER_CONFIG
        ))
        .into());
    }
    let mut c = Classifier::load_with_base(&dir, run.base.as_deref(), device)?;
    let opts = c.checked_options(run.max_length)?;
    c.shards = run.shards.map_or_else(default_shards, |n| n as usize);
    if let Some(policy) = run.long.request().resolve(opts.max_length)? {
        c.policy.long_text = policy;
    }
    if let Some(a) = run.long.aggregate() {
        c.policy.aggregate = a;
    }
    let precision: sequin_train::Precision = run.precision.into();
    if precision != sequin_train::Precision::Fp32 && !cfg!(feature = "cpu") {
        return Err(crate::UsageError(format!(
            "--precision {} runs on the CPU backend only; this build's backend is {}",
            precision.name(),
            crate::backend_name()
        ))
        .into());
    }
    c.set_precision(precision);
    c.calibrated = !run.no_calibration;
    Ok((c, opts))
}

/// `sequin eval`: prints every metric as one JSON object.
pub(crate) fn eval(a: EvalArgs, device: &Device) -> Result<()> {
    let (c, opts) = load(&a.run, device)?;
    let given = ColumnChoice {
        text: a.columns.text_column,
        text_pair: a.columns.text_pair_column,
        label: a.label_column,
        label_columns: a.label_columns,
    };
    let cols = c.columns(given, true);
    let recs = c.read(&a.data, &cols)?;
    note_empty(&a.data, count_empty(&recs));
    warn_unknown(&a.data, &c.check_features(&a.data, 1, &recs)?);
    let bar = spinner("evaluating");
    bar.set_message(format!("{} rows", recs.len()));
    let m = c.evaluate(&recs, &a.data, opts, a.run.batch_size)?;
    bar.finish_and_clear();
    let mut m = serde_json::to_value(&m)?;
    let precision = c.precision();
    if let (Some(kernel), Some(o)) = (precision.kernel_name(), m.as_object_mut()) {
        o.insert("precision".into(), precision.name().into());
        o.insert(format!("{}_kernel", precision.name()), kernel.into());
    }
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Warns about metadata categories the model never saw in training (they were scored with the
/// rare/unknown bucket).
pub(crate) fn warn_unknown(path: &Path, unknown: &[(String, usize)]) {
    for (col, n) in unknown.iter().filter(|(_, n)| *n > 0) {
        eprintln!(
            "warning: {}: {n} value(s) of `{col}` were not in the training vocabulary; they used the rare/unknown bucket",
            path.display()
        );
    }
}

/// Rows with an empty or blank text.
pub(crate) fn count_empty(recs: &[sequin_data::Record]) -> usize {
    recs.iter().filter(|r| r.text.trim().is_empty()).count()
}

/// Says how many rows had an empty or blank text (predicted as transformers predicts one:
/// from `[CLS] [SEP]` alone).
pub(crate) fn note_empty(path: &Path, n: usize) {
    if n > 0 {
        eprintln!(
            "note: {}: {n} row(s) have an empty or blank text; each was predicted from the special tokens alone, as transformers does",
            path.display()
        );
    }
}

/// A spinner on stderr for work of unknown length (drawn only on a terminal).
pub(crate) fn spinner(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{msg}} ({{elapsed}})"
        ))
        .expect("template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
