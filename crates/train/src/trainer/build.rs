//! Phase 2, `build`: the output folder checked, the data prepared, the model loaded (with a
//! fresh fusion head, or the checkpoint's), the optimizer and learning-rate schedule, and the
//! run state, new or restored from a checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsAccumulator;
use burn::tensor::Device;
use sequin_data::Seeds;
use sequin_encoders::common::{DropoutStream, materialize, with_param_init};
use sequin_heads::{FusionConfig, ProblemType};
use sequin_hf::resolve;
use sequin_tokenize::Tokenizer;

use super::checkpoint::{self, CHECKPOINTS, io, list_checkpoints, remove_leftovers};
use super::prepare::{PreparedData, prepare};
use super::state::TrainerState;
use super::step::Objective;
use super::{Base, Clock, Plan, Trainer};
use crate::classifier::Model;
use crate::folder::{InputPolicy, InputSchema};
use crate::optim::{ParamMap, adamw, lr_groups, module_scheduler, stable_param_ids};
use crate::{Result, TrainConfig, TrainError};

/// Builds a run: a [`Trainer`] and the model to train.
pub(crate) fn build<'a>(
    cfg: &'a TrainConfig,
    device: &'a Device,
    resume: Option<(PathBuf, TrainerState)>,
) -> Result<(Trainer<'a>, Model)> {
    cfg.validate()?;
    let seeds = Seeds::new(cfg.seed);
    let fingerprint = check_output(cfg, resume.as_ref())?;
    // The base model, or the checkpoint (an HF folder with its tokenizer) when resuming.
    let model_dir = match &resume {
        Some((dir, _)) => dir.clone(),
        None => resolve(&cfg.model)?,
    };
    let tokenizer = Tokenizer::from_dir(&model_dir)?;
    let data = prepare(cfg, seeds)?;
    // Calibration needs single-label validation data: said before training, not after.
    if cfg.calibrate.is_some()
        && (data.problem != ProblemType::SingleLabelClassification || data.val.is_none())
    {
        return Err(TrainError::Config(
            "calibrate = temperature needs a single-label model and validation data (--validation or --validation-split); multi-label models are calibrated by their decision thresholds (--tune-thresholds)".into(),
        ));
    }
    check_lora(cfg)?;
    let lora_run = cfg.lora_rank.is_some();
    // A LoRA checkpoint is an adapter: the run rebuilds the base and puts the adapter back.
    let load_dir = match (&resume, lora_run) {
        (Some(_), true) => resolve(&cfg.model)?,
        _ => model_dir,
    };
    let ad = device.clone().autodiff();
    // burn's backends draw parameter initialisation from one process-wide generator: the
    // seeded initialisation (LoRA's factors included) takes the process's turn.
    let (model, base, lora) = with_param_init(|| {
        ad.seed(seeds.run());
        // A LoRA checkpoint's fusion head is put back with its factors, below.
        let resumed_full = resume.is_some() && !lora_run;
        let (model, base) = load(cfg, &data, load_dir, tokenizer, resumed_full, &ad)?;
        let (model, lora) = match cfg.lora_rank {
            Some(rank) => {
                let targets = match cfg.lora_targets.is_empty() {
                    true => base
                        .config
                        .arch
                        .keys()
                        .lora_targets
                        .iter()
                        .map(|t| t.to_string())
                        .collect(),
                    false => cfg.lora_targets.clone(),
                };
                let (m, spec) =
                    crate::lora::apply(model, rank, cfg.lora_alpha.unwrap_or(8.0), &targets)?;
                (m, Some(spec))
            }
            None => (model, None),
        };
        materialize(&model);
        Ok::<_, crate::TrainError>((model, base, lora))
    })?;
    // Ids by position: the optimizer state of a checkpoint applies to the reloaded model.
    let model = stable_param_ids(model.train());
    let (model, parameters) = match (&resume, &lora) {
        (Some((dir, _)), Some(_)) => {
            let model = crate::lora::restore(model, &dir.join(sequin_hf::ADAPTER_WEIGHTS))?;
            let model = restore_fusion(model, dir, base.fusion.as_ref())?;
            let counts = crate::lora::counts(&model);
            report_lora(counts);
            (model, counts)
        }
        (None, Some(_)) => {
            let counts = crate::lora::counts(&model);
            report_lora(counts);
            (model, counts)
        }
        (_, None) => freeze(model, cfg)?,
    };
    let lora = lora.map(|spec| {
        let base = match std::path::Path::new(&cfg.model).canonicalize() {
            Ok(p) if p.is_dir() => p.to_string_lossy().into_owned(),
            _ => cfg.model.clone(),
        };
        (spec, base)
    });
    let mut optim = adamw(&model, cfg.weight_decay);
    let (state, dropout) = match resume {
        Some((dir, state)) => {
            let dropout;
            (optim, dropout) = checkpoint::restore(&dir, &state, optim)?;
            eprintln!(
                "resuming {} at step {} (epoch {}, batch {})",
                cfg.output.display(),
                state.step,
                state.epoch,
                state.batch
            );
            (state, dropout)
        }
        None => (
            TrainerState::start(cfg, fingerprint, data.labels.names().to_vec(), data.problem),
            DropoutStream::new(seeds.run()),
        ),
    };
    let plan = Plan::new(cfg, data.train.len());
    report_class_weights(&data);
    let objective = Objective::new(cfg, &data, &ad);
    let groups = lr_groups(&model, cfg.lr, cfg.layer_lr_decay, cfg.head_lr);
    let scheduler = module_scheduler(
        cfg.lr_scheduler,
        cfg.lr,
        &groups,
        plan.warmup,
        plan.total,
        state.step,
    );
    let policy = InputPolicy {
        max_length: cfg.max_length,
        long_text: cfg.long_text,
        aggregate: cfg.aggregate,
        thresholds: None,
        schema: Some(InputSchema::new(&cfg.columns(), data.labels.names())),
        calibration: None,
        examples: examples(&data),
    };
    let clock = Clock {
        session: Instant::now(),
        before: state.train_seconds,
    };
    let trainer = Trainer {
        cfg,
        parameters,
        lora,
        seeds,
        device,
        ad,
        data,
        base,
        optim,
        scheduler,
        accumulator: GradientsAccumulator::new(),
        objective,
        state,
        dropout,
        plan,
        policy,
        clock,
        augmenter: sequin_augment::Augmenter::new(),
    };
    Ok((trainer, model))
}

/// Creates the output folder (failing on an unwritable one before any work is done), checks
/// a resumed run's data against its checkpoint, or removes an earlier run's checkpoints.
/// Returns the data fingerprint.
fn check_output(
    cfg: &TrainConfig,
    resume: Option<&(PathBuf, TrainerState)>,
) -> Result<std::collections::BTreeMap<String, Option<String>>> {
    std::fs::create_dir_all(&cfg.output).map_err(io(&cfg.output))?;
    let fingerprint = checkpoint::data_fingerprint(cfg)?;
    let ckpt_root = cfg.output.join(CHECKPOINTS);
    if let Some((dir, state)) = resume {
        remove_leftovers(&cfg.output);
        if state.data_sha256 != fingerprint {
            return Err(TrainError::Resume(format!(
                "the data files changed since the checkpoint {} was written (sha256 then {:?}, now {:?}); a resumed run must see the same data",
                dir.display(),
                state.data_sha256,
                fingerprint
            )));
        }
    } else if ckpt_root.is_dir() {
        let old = list_checkpoints(&cfg.output).len();
        if old > 0 {
            eprintln!(
                "note: starting a new run in {}: removing {old} checkpoint(s) of an earlier run (use --resume to continue it instead)",
                cfg.output.display()
            );
        }
        std::fs::remove_dir_all(&ckpt_root).map_err(io(&ckpt_root))?;
    }
    Ok(fingerprint)
}

/// Loads the model (the base, or the checkpoint when `resumed`) on the autodiff device, with
/// a fresh fusion head for a new metadata run, and checks it against the options.
fn load(
    cfg: &TrainConfig,
    data: &PreparedData,
    dir: PathBuf,
    tokenizer: Tokenizer,
    resumed: bool,
    ad: &Device,
) -> Result<(Model, Base)> {
    let (model, config, report, saved_fusion) =
        crate::folder::load_model(&dir, Some(data.labels.len()), ad)?;
    let fusion = match (&data.features, cfg.fusion_method()) {
        (Some(f), Some(method)) => Some(FusionConfig {
            method,
            text_size: model.text.pooled_size(),
            numeric_width: f.numeric_width(),
            categorical: f.categorical_dims(),
            num_labels: data.labels.len(),
            dropout: 0.1,
            gating_beta: 0.2,
        }),
        _ => None,
    };
    let model = match (&fusion, resumed) {
        // A resumed run's checkpoint holds the head.
        (Some(fc), true) => {
            if saved_fusion.as_ref().map(|f| &f.fusion) != Some(fc) {
                return Err(TrainError::Resume(format!(
                    "{}: the checkpoint's fusion head does not match the run's options",
                    dir.display()
                )));
            }
            model
        }
        (Some(fc), false) => Model {
            text: model.text,
            fusion: Some(fc.init(ad)),
            sentence: None,
        },
        (None, _) => Model {
            text: model.text,
            fusion: None,
            sentence: None,
        },
    };
    if cfg.max_length > config.arch.max_length() {
        return Err(TrainError::Config(format!(
            "--max-length {} exceeds the {} positions the model's max_position_embeddings allows",
            cfg.max_length,
            config.arch.max_length()
        )));
    }
    crate::check_vocab(&tokenizer, &config)?;
    eprintln!("model {}: {report}", dir.display());
    let base = Base {
        dir,
        config,
        report,
        tokenizer,
        fusion,
    };
    Ok((model, base))
}

/// Prints the class weights of the loss, when there are any.
fn report_class_weights(data: &PreparedData) {
    let Some(w) = &data.class_weights else {
        return;
    };
    eprintln!(
        "class weights{}: {}",
        if data.problem == ProblemType::MultiLabelClassification {
            " (pos_weight)"
        } else {
            ""
        },
        data.labels
            .names()
            .iter()
            .zip(w)
            .map(|(n, w)| format!("{n} {w:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Up to three example texts for the serve playground: the first validation (else test, else
/// training) texts of distinct labels, cut to 400 characters.
fn examples(data: &PreparedData) -> Vec<String> {
    let records = data
        .val
        .as_ref()
        .or(data.test.as_ref())
        .map_or(&data.train, |(r, _)| r);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for r in records
        .iter()
        .filter(|r| !r.text.trim().is_empty() && r.text_pair.is_none())
    {
        let label = r
            .label
            .clone()
            .or_else(|| r.labels.as_ref().map(|l| l.join(",")));
        if seen.contains(&label) {
            continue;
        }
        seen.push(label);
        out.push(r.text.chars().take(400).collect());
        if out.len() == 3 {
            break;
        }
    }
    out
}

/// Freezes what `freeze_backbone` / `freeze_layers` leave untrained (never the head, the
/// pooler or a fusion head) and says how many parameters train. Returns the model and
/// `(trainable, total)`.
fn freeze(model: Model, cfg: &TrainConfig) -> Result<(Model, (usize, usize))> {
    let map = ParamMap::of(&model);
    match (cfg.freeze_backbone, cfg.freeze_layers) {
        (true, Some(_)) => {
            return Err(TrainError::Config(
                "freeze_backbone and freeze_layers: choose one (the backbone is all the layers)"
                    .into(),
            ));
        }
        (_, Some(n)) if n > map.n_layers => {
            return Err(TrainError::Config(format!(
                "freeze_layers = {n}, but the model has {} encoder layers",
                map.n_layers
            )));
        }
        _ => {}
    }
    let frozen = map.frozen(cfg.freeze_backbone, cfg.freeze_layers);
    let (trainable, total) = map.counts(&frozen);
    eprintln!(
        "trainable parameters: {trainable} of {total} ({:.2}%){}",
        100.0 * trainable as f64 / total.max(1) as f64,
        match (cfg.freeze_backbone, cfg.freeze_layers) {
            (true, _) => " (backbone frozen: a linear probe)".to_string(),
            (false, Some(n)) => format!(" (embeddings and layers 0..{n} frozen)"),
            (false, None) => String::new(),
        }
    );
    let model = match frozen.is_empty() {
        true => model,
        false => model.freeze_group(burn::module::ParamGroup::from_ids(frozen)),
    };
    Ok((model, (trainable, total)))
}

/// The options LoRA cannot take, refused before any training.
fn check_lora(cfg: &TrainConfig) -> Result<()> {
    let Some(rank) = cfg.lora_rank else {
        return Ok(());
    };
    let refuse = |m: &str| Err(TrainError::Config(m.to_string()));
    if rank == 0 {
        return refuse("lora_rank must be at least 1");
    }
    if cfg.lora_dropout != 0.0 {
        return refuse(
            "lora_dropout: only 0 is supported (burn's LoRA composes the weight, W + (alpha/r)·A·B, so PEFT's dropout on the adapter's input cannot be reproduced)",
        );
    }
    if cfg.freeze_backbone || cfg.freeze_layers.is_some() {
        return refuse(
            "lora_rank with freeze_backbone or freeze_layers: LoRA already freezes the backbone",
        );
    }
    Ok(())
}

/// Puts a LoRA checkpoint's fusion head back (its factors and text head are put back by
/// [`crate::lora::restore`]); the head stays trainable.
fn restore_fusion(model: Model, dir: &Path, fusion: Option<&FusionConfig>) -> Result<Model> {
    let Model {
        text,
        fusion: head,
        sentence,
    } = model;
    let (Some(head), Some(fc)) = (head, fusion) else {
        return Ok(Model {
            text,
            fusion: None,
            sentence,
        });
    };
    let saved = crate::folder::read_fusion_file(dir)?;
    if saved.as_ref().map(|f| &f.fusion) != Some(fc) {
        return Err(TrainError::Resume(format!(
            "{}: the checkpoint's fusion head does not match the run's options",
            dir.display()
        )));
    }
    let head = sequin_hf::load_fusion_weights(&dir.join(crate::folder::FUSION_WEIGHTS), head)?;
    Ok(Model {
        text,
        fusion: Some(head),
        sentence,
    })
}

/// Says how many parameters a LoRA run trains.
fn report_lora((trainable, total): (usize, usize)) {
    eprintln!(
        "trainable parameters: {trainable} of {total} ({:.2}%) (LoRA factors and the head)",
        100.0 * trainable as f64 / total.max(1) as f64
    );
}
