//! What each command does, one module per command (eval holds what eval and predict share).

pub(crate) mod augment;
pub(crate) mod calibrate;
pub(crate) mod eval;
pub(crate) mod predict;
pub(crate) mod serve;
pub(crate) mod setfit;
pub(crate) mod train;

use anyhow::Result;

use crate::args::{Cli, Cmd};
use crate::backend::device;

/// Runs a parsed command line.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let device = device();
    match cli.cmd {
        Cmd::Train(a) => train::train(a, &device),
        Cmd::Tune(a) => train::tune(a, &device),
        Cmd::Augment(a) => augment::augment(a),
        Cmd::Eval(a) => eval::eval(a, &device),
        Cmd::Predict(a) => predict::predict(a, &device),
        Cmd::Serve(a) => serve::serve(a, &device),
        Cmd::Calibrate(a) => calibrate::calibrate(a, &device),
        Cmd::Setfit(a) => setfit::setfit(a, &device),
        Cmd::Merge(a) => merge(a, &device),
    }
}

/// Refuses an output path that is the input file, directly or through a link: the input
/// would be destroyed.
pub(crate) fn refuse_same_file(
    input: &std::path::Path,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    if sequin_fs::same_file(input, output) {
        anyhow::bail!(
            "--output {} is the input file {}; writing it would destroy the input (choose another output path)",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// `sequin merge`: a PEFT adapter folded into its base, written as a plain HF folder.
fn merge(a: crate::args::MergeArgs, device: &burn::tensor::Device) -> Result<()> {
    if !sequin_hf::is_adapter(&a.model) {
        anyhow::bail!(
            "--model {}: not a PEFT adapter folder (no {})",
            a.model.display(),
            sequin_hf::ADAPTER_CONFIG
        );
    }
    refuse_same_file(&a.model, &a.output)?;
    let c = sequin_train::Classifier::load_with_base(&a.model, a.base.as_deref(), device)?;
    c.save(&a.output)?;
    eprintln!(
        "merged {} into its base: {} ({})",
        a.model.display(),
        a.output.display(),
        c.report
    );
    Ok(())
}
