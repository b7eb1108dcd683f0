//! `sequin calibrate`: fits the temperature of an existing single-label folder.

use anyhow::{Result, bail};
use burn::tensor::Device;
use sequin_heads::ProblemType;
use sequin_train::{Calibration, ColumnChoice, Targets};

use crate::args::CalibrateArgs;
use crate::commands::eval::{count_empty, note_empty};

/// Fits one temperature on the labelled data, saves it in the folder's `sequin.json`
/// (atomically), writes `plots/reliability.{png,svg}`, and prints the calibration as JSON.
pub(crate) fn calibrate(a: CalibrateArgs, device: &Device) -> Result<()> {
    if !a.model.is_dir() {
        bail!(
            "--model {}: calibrate updates a model folder in place; give a local folder (copy a hub model first)",
            a.model.display()
        );
    }
    let mut c = sequin_train::Classifier::load(&a.model, device)?;
    c.shards = crate::backend::default_shards();
    if c.problem_type() != ProblemType::SingleLabelClassification {
        bail!(
            "{}: temperature scaling is for single-label models; this one is {:?} (multi-label models are calibrated by their decision thresholds: train --tune-thresholds)",
            a.model.display(),
            c.problem_type()
        );
    }
    let given = ColumnChoice {
        text: a.columns.text_column,
        text_pair: a.columns.text_pair_column,
        label: a.label_column,
        label_columns: Vec::new(),
    };
    let cols = c.columns(given, true);
    let recs = c.read(&a.data, &cols)?;
    note_empty(&a.data, count_empty(&recs));
    let Targets::Classes(ids) = Targets::encode(c.problem_type(), &c.labels, &recs, &a.data)?
    else {
        unreachable!("single-label targets are class ids")
    };
    let opts = c.checked_options(None)?;
    let logits = c.logits(&recs, opts, a.batch_size)?;
    let fit = Calibration::fit(&logits, &ids, a.data.display().to_string());
    let plots = sequin_train::plots::write_reliability(
        &a.model.join("plots"),
        &logits,
        &ids,
        &fit,
        &a.data.file_name().map_or_else(
            || a.data.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    )?;
    c.policy.calibration = Some(fit.clone());
    sequin_train::write_policy(&a.model, &c.policy)?;
    eprintln!(
        "temperature {:.4} saved in {}; reliability diagram: {}",
        fit.temperature,
        a.model.join(sequin_train::POLICY_FILE).display(),
        plots[0].display()
    );
    println!("{}", serde_json::to_string(&fit)?);
    Ok(())
}
