//! `sequin train` and `sequin tune`: flags, a config file and (on resume) the saved run merged
//! as typed [`TrainOptions`] (flags over the file over the saved run), then the library's
//! defaults.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use sequin_tokenize::LongTextRequest;
use sequin_train::{AugmentConfig, ClassWeights, TrainConfig, TrainOptions};
use serde::de::{DeserializeOwned, IntoDeserializer};

use crate::args::{TrainArgs, TuneArgs};
use crate::backend::{backend_name, default_shards};
use crate::commands::augment::augment_spec;

/// A flag's value as the library's enum (by its serde name).
fn parse<T: DeserializeOwned>(flag: &str, value: &str) -> Result<T> {
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        value.into_deserializer();
    T::deserialize(de).with_context(|| format!("--{flag} {value}"))
}

/// An optional flag's value as the library's enum.
fn enumerated<T: DeserializeOwned>(flag: &str, value: &Option<String>) -> Result<Option<T>> {
    value.as_deref().map(|v| parse(flag, v)).transpose()
}

/// The options the flags give (`None` wherever a flag is absent). The long-text policy and
/// the metadata columns are merged later: they build on options from other sources.
fn flag_options(a: &TrainArgs) -> Result<TrainOptions> {
    let path = |p: &Option<PathBuf>| p.clone().map(Some);
    Ok(TrainOptions {
        model: a.model.clone(),
        train: a.train.clone(),
        validation: path(&a.validation),
        test: path(&a.test),
        output: a.output.clone(),
        text_column: a.text_column.clone(),
        text_pair_column: a.text_pair_column.clone().map(Some),
        label_column: a.label_column.clone(),
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        max_length: a.max_length,
        seed: a.seed,
        max_steps: a.max_steps.map(Some),
        group_by_length: match (a.group_by_length, a.no_group_by_length) {
            (true, _) => Some(Some(true)),
            (_, true) => Some(Some(false)),
            _ => None,
        },
        shards: a.shards.map(|n| Some(n as usize)),
        max_train_samples: a.max_train_samples.map(Some),
        gradient_accumulation_steps: a.gradient_accumulation_steps,
        lr_scheduler: enumerated("lr-scheduler", &a.lr_scheduler)?,
        layer_lr_decay: a.layer_lr_decay.map(Some),
        head_lr: a.head_lr.map(Some),
        eval_steps: a.eval_steps.map(Some),
        metric_for_best_model: a.metric_for_best_model.clone(),
        early_stopping_patience: a.early_stopping_patience.map(Some),
        early_stopping_min_delta: a.early_stopping_min_delta,
        save_total_limit: a.save_total_limit,
        problem_type: enumerated("problem-type", &a.problem_type)?.map(Some),
        label_columns: (!a.label_columns.is_empty()).then(|| a.label_columns.clone()),
        tune_thresholds: a.tune_thresholds.then_some(true),
        calibrate: enumerated("calibrate", &a.calibrate)?.map(Some),
        freeze_backbone: a.freeze_backbone.then_some(true),
        freeze_layers: a.freeze_layers.map(Some),
        lora_rank: a.lora_rank.map(Some),
        lora_alpha: a.lora_alpha.map(Some),
        lora_dropout: a.lora_dropout,
        lora_targets: (!a.lora_targets.is_empty()).then(|| a.lora_targets.clone()),
        allow_empty_text: a.allow_empty_text.then_some(true),
        class_weights: class_weights(a.class_weights.as_deref())?.map(Some),
        loss: enumerated("loss", &a.loss)?,
        focal_gamma: a.focal_gamma,
        sampler: enumerated("sampler", &a.sampler)?,
        validation_split: a.validation_split.map(Some),
        augment: augment(a)?.map(Some),
        mixup_alpha: a.mixup_alpha.map(Some),
        fusion: enumerated("fusion", &a.fusion)?.map(Some),
        aggregate: a.long.aggregate(),
        ..TrainOptions::default()
    })
}

/// `--class-weights auto` or a comma-separated list.
fn class_weights(flag: Option<&str>) -> Result<Option<ClassWeights>> {
    Ok(match flag {
        None => None,
        Some("auto") => Some(parse("class-weights", "auto").map(ClassWeights::Auto)?),
        Some(list) => Some(ClassWeights::List(
            list.split(',')
                .map(|w| {
                    w.trim().parse::<f64>().map_err(|_| {
                        anyhow::anyhow!(
                            "--class-weights: `{w}` is not a number (give `auto` or numbers separated by commas)"
                        )
                    })
                })
                .collect::<Result<Vec<f64>>>()?,
        )),
    })
}

/// The augmentation the flags ask for.
fn augment(a: &TrainArgs) -> Result<Option<AugmentConfig>> {
    let pipeline = || augment_spec(a.augment_spec.as_deref().unwrap_or("eda"));
    if let Some(mode) = &a.augment {
        return Ok(Some(AugmentConfig {
            mode: parse("augment", mode)?,
            pipeline: pipeline()?,
            num_aug: a.num_aug.unwrap_or(4),
            oversample: a.oversample,
        }));
    }
    if a.oversample {
        if a.num_aug.is_some() {
            bail!("--num-aug needs --augment offline");
        }
        return Ok(Some(AugmentConfig {
            mode: sequin_train::AugmentMode::Offline,
            pipeline: pipeline()?,
            num_aug: 0,
            oversample: true,
        }));
    }
    if a.augment_spec.is_some() || a.num_aug.is_some() {
        bail!("--augment-spec and --num-aug need --augment offline or per-epoch (or --oversample)");
    }
    Ok(None)
}

/// The options of a `--config` file, over `base`. Three shapes are read:
/// - flat: every flag's option as a snake_case key with the flag's value (`"num_aug": 2`,
///   `"augment": "offline"`, `"long_text": "chunk"`, `"numeric_columns": ["price"]`);
/// - the typed options, as `run.json` saves them under `"config"`;
/// - a whole `run.json` (its `"config"` is taken), to repeat a run.
fn file_options(path: &Path, base: TrainOptions) -> Result<(TrainOptions, LongTextRequest)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON object of options", path.display()))?;
    let serde_json::Value::Object(mut map) = value else {
        bail!("{}: not a JSON object of options", path.display());
    };
    if let Some(serde_json::Value::Object(saved)) = map.remove("config") {
        map = saved;
    }
    let value = serde_json::Value::Object(map.clone());
    if let Ok(typed) = serde_json::from_value::<TrainOptions>(value) {
        return Ok((typed.or(base), LongTextRequest::default()));
    }
    let known: Vec<String> = <FileArgs as clap::CommandFactory>::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    if let Some(key) = map.keys().find(|k| !known.contains(k)) {
        bail!(
            "{}: unknown field `{key}`; a config file takes the flags' options as snake_case keys (see `sequin train --help`)",
            path.display()
        );
    }
    let args = flat_args(&map).with_context(|| format!("{}", path.display()))?;
    let parsed = <FileArgs as clap::Parser>::try_parse_from(
        std::iter::once("--config".to_string()).chain(args),
    )
    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), crate::clap_line(&e)))?;
    if parsed.train.config.is_some() || parsed.train.resume.is_some() {
        bail!(
            "{}: `config` and `resume` are not options of a config file",
            path.display()
        );
    }
    Ok((
        options_over(&parsed.train, base)?,
        parsed.train.long.request(),
    ))
}

/// A config file's keys as the flags they stand for: `key: value` → `--key=value`
/// (lists comma-joined, `true` → the bare flag, `false` and null → nothing).
fn flat_args(map: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<String>> {
    use serde_json::Value;
    let mut args = Vec::new();
    for (key, value) in map {
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &Value| -> Result<String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => bail!("`{key}` holds {other}; expected a string or a number"),
            }
        };
        match value {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => args.push(flag),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(scalar).collect::<Result<_>>()?;
                args.push(format!("{flag}={}", items.join(",")));
            }
            Value::Object(_) => bail!(
                "`{key}` is an object; give the flags' options as flat keys (see `sequin train --help`), or the shape of run.json's \"config\""
            ),
            v => args.push(format!("{flag}={}", scalar(v)?)),
        }
    }
    Ok(args)
}

/// Train options parsed from a config file, as if they were flags.
#[derive(clap::Parser)]
#[command(disable_help_flag = true)]
struct FileArgs {
    #[command(flatten)]
    train: TrainArgs,
}

/// The options `a`'s flags give, over `base`: the flags first, then the metadata flags merged
/// key by key over `base`'s. (The long-text flags are merged as a request, resolved once the
/// final `max_length` is known: see [`train_config`].)
fn options_over(a: &TrainArgs, base: TrainOptions) -> Result<TrainOptions> {
    let mut o = flag_options(a)?.or(base);
    // The metadata flags are merged key by key over the file's `features`.
    if !(a.numeric_columns.is_empty()
        && a.categorical_columns.is_empty()
        && a.date_columns.is_empty()
        && a.numeric_transform.is_none()
        && a.min_category_count.is_none()
        && a.category_embedding_dim.is_none())
    {
        let mut f = o.features.take().unwrap_or_default();
        for (flag, list) in [
            (&a.numeric_columns, &mut f.numeric),
            (&a.categorical_columns, &mut f.categorical),
            (&a.date_columns, &mut f.date),
        ] {
            if !flag.is_empty() {
                *list = flag.clone();
            }
        }
        if let Some(t) = &a.numeric_transform {
            f.numeric_transform = parse("numeric-transform", t)?;
        }
        f.min_category_count = a.min_category_count.unwrap_or(f.min_category_count);
        f.embedding_dim = a.category_embedding_dim.or(f.embedding_dim);
        o.features = Some(f);
    }
    Ok(o)
}

/// The run's config: flags over the config file over `base` (a resumed run's saved options),
/// then the defaults.
fn train_config(a: &TrainArgs, base: TrainOptions) -> Result<TrainConfig> {
    let (base, from_file) = match &a.config {
        Some(p) => file_options(p, base)?,
        None => (base, LongTextRequest::default()),
    };
    let mut o = options_over(a, base)?;
    // The long-text defaults depend on max_length: resolved as the run will resolve it.
    let max_length = o.max_length.unwrap_or(128);
    if let Some(policy) = a.long.request().or(from_file).resolve(max_length)? {
        o.long_text = Some(policy);
    }
    o.shards.get_or_insert(Some(default_shards()));
    Ok(o.resolve()?)
}

/// What `sequin train` was asked to do: a new run, or a resume (with the options given, to be
/// checked against the saved ones).
enum TrainJob {
    New(TrainConfig),
    Resume(PathBuf, Option<TrainConfig>),
}

fn train_job(a: &TrainArgs) -> Result<TrainJob> {
    let Some(dir) = a.resume.clone() else {
        return Ok(TrainJob::New(train_config(a, TrainOptions::default())?));
    };
    // Options given with --resume are completed from the saved config and must equal it.
    let (_, state) = sequin_train::latest_checkpoint(&dir)?;
    let given = train_config(a, state.config.into())?;
    Ok(TrainJob::Resume(dir, Some(given)))
}

/// `sequin train`: prints the run's summary as one JSON object.
pub(crate) fn train(a: TrainArgs, device: &Device) -> Result<()> {
    eprintln!("sequin train on {}", backend_name());
    let (s, output) = match train_job(&a)? {
        TrainJob::New(cfg) => (sequin_train::train(&cfg, device)?, cfg.output),
        TrainJob::Resume(dir, expected) => {
            let (s, c) = sequin_train::resume(&dir, expected.as_ref(), device)?;
            (s, c.dir)
        }
    };
    let out = serde_json::json!({
        "output": output,
        "best_epoch": s.best_epoch,
        "best_step": s.best_step,
        "stopped_early": s.stopped_early,
        "validation": s.best_validation,
        "test": s.test,
        "train_seconds": (s.train_seconds * 10.0).round() / 10.0,
        "steps": s.steps,
    });
    println!("{out}");
    Ok(())
}

/// `sequin tune`: one run per point of the grid (or a random sample of it).
pub(crate) fn tune(a: TuneArgs, device: &Device) -> Result<()> {
    if !a.grid && a.random.is_none() {
        bail!("tune needs --grid or --random N");
    }
    if a.train.resume.is_some() {
        bail!(
            "tune does not resume a search: run it again, or resume one trial with `sequin train --resume OUTPUT/trial-NNN`"
        );
    }
    let base = train_config(&a.train, TrainOptions::default())?;
    let space = sequin_train::SearchSpace {
        lr: a.lr_values,
        batch_size: a.batch_size_values,
        epochs: a.epochs_values,
        warmup_ratio: a.warmup_ratio_values,
        weight_decay: a.weight_decay_values,
        lora_rank: a.lora_rank_values,
        lora_alpha: a.lora_alpha_values,
    };
    let metric = a
        .metric
        .unwrap_or_else(|| base.metric_for_best_model.clone());
    eprintln!("sequin tune on {}", backend_name());
    let opts = sequin_train::TuneOptions {
        random: a.random,
        metric: metric.clone(),
        keep_checkpoints: a.keep_checkpoints,
    };
    let trials = sequin_train::tune(&base, &space, &opts, device)?;
    let best = trials.first().map(|t| t.output.clone());
    println!(
        "{}",
        serde_json::json!({"trials": trials.len(), "best": best, "metric": metric,
            "results": base.output.join("tune_results.md")})
    );
    Ok(())
}
