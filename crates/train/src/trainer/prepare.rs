//! Phase 1, `prepare`: from the config's data files to [`PreparedData`]: the problem type, the
//! label map, the training subset and hold-out, the fitted metadata transforms, offline
//! augmentation, the validation and test splits, and the class weights.
//!
//! Nothing here touches a model or a tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use sequin_data::{
    EmptyText, EncodedFeatures, FittedFeatures, LabelMap, Record, Seeds, read_records_with,
    shuffled_indices,
};
use sequin_heads::ProblemType;

use crate::classifier::Targets;
use crate::config::{AugmentConfig, AugmentMode, ClassWeights, LossKind, Sampler};
use crate::{Result, TrainConfig, TrainError};

/// Records with their encoded targets.
pub(crate) type Labelled = (Vec<Record>, Targets);

/// The data of a run, ready for training.
pub(crate) struct PreparedData {
    /// The problem type: as asked, else multi-label when the labels are sets.
    pub problem: ProblemType,
    /// Class names in id order.
    pub labels: LabelMap,
    /// The training examples (after subset, hold-out and offline augmentation).
    pub train: Vec<Record>,
    /// Their targets.
    pub train_targets: Targets,
    /// Text length of every training example (bytes of text and pair), for length grouping.
    pub lengths: Vec<usize>,
    /// The validation split (a file, or the hold-out).
    pub val: Option<Labelled>,
    /// The test split.
    pub test: Option<Labelled>,
    /// Metadata transforms fitted on the training examples, for a fusion model.
    pub features: Option<FittedFeatures>,
    /// The training examples' metadata, encoded once.
    pub train_meta: Option<EncodedFeatures>,
    /// Class weights of the loss.
    pub class_weights: Option<Vec<f64>>,
}

fn read(path: &Path, cfg: &TrainConfig) -> Result<Vec<Record>> {
    let empty = match cfg.allow_empty_text {
        true => EmptyText::Keep,
        false => EmptyText::Refuse,
    };
    Ok(read_records_with(path, &cfg.columns(), empty)?)
}

/// Reads and prepares the data of a run.
pub(crate) fn prepare(cfg: &TrainConfig, seeds: Seeds) -> Result<PreparedData> {
    let mut train = read(&cfg.train, cfg)?;
    // Every metadata cell checked with its file row; the fit is kept unless the training set
    // shrinks below (a subset or a hold-out), when it is refitted on what remains.
    let mut features = match cfg.fusion_method() {
        Some(_) => Some(cfg.features.fit(&cfg.train, &train)?),
        None => None,
    };
    let problem = problem_type(cfg, &train);
    let labels = match problem {
        ProblemType::SingleLabelClassification => LabelMap::from_train(&train, &cfg.train)?,
        ProblemType::MultiLabelClassification => LabelMap::from_train_sets(&train, &cfg.train)?,
        ProblemType::Regression => LabelMap::new(vec![cfg.label_column.clone()]),
    };
    if let Some(n) = cfg.max_train_samples {
        let order = shuffled_indices(train.len(), seeds.run(), usize::MAX);
        train = order
            .into_iter()
            .take(n)
            .map(|i| train[i].clone())
            .collect();
    }
    let mut train_targets = Targets::encode(problem, &labels, &train, &cfg.train)?;
    // Without a validation file, a stratified, seeded hold-out of the training data.
    let mut val = None;
    if let Some(fraction) = cfg.validation_split {
        let held = stratified_holdout(&train_targets, fraction, seeds.holdout());
        let keep: Vec<usize> = (0..train.len()).filter(|i| !held.contains(i)).collect();
        let held: Vec<usize> = held.into_iter().collect();
        val = Some((
            held.iter().map(|&i| train[i].clone()).collect(),
            train_targets.select(&held),
        ));
        train_targets = train_targets.select(&keep);
        train = keep.iter().map(|&i| train[i].clone()).collect();
        eprintln!(
            "validation: {} examples held out of the training data (stratified, seed {})",
            held.len(),
            cfg.seed
        );
    }
    // Metadata transforms, fitted on the training examples only (before augmentation, which
    // only copies them).
    if features.is_some() && (cfg.max_train_samples.is_some() || cfg.validation_split.is_some()) {
        features = Some(cfg.features.fit(&cfg.train, &train)?);
    }
    if let Some(a) = &cfg.augment {
        let idx = augment_offline(a, &mut train, &train_targets, labels.len(), seeds)?;
        train_targets = train_targets.select(&idx);
    }
    let labelled = |p: &Option<PathBuf>| -> Result<Option<Labelled>> {
        p.as_ref()
            .map(|p| {
                let r = read(p, cfg)?;
                let t = Targets::encode(problem, &labels, &r, p)?;
                Ok((r, t))
            })
            .transpose()
    };
    let val = match val {
        Some(v) => Some(v),
        None => labelled(&cfg.validation)?,
    };
    let test = labelled(&cfg.test)?;
    let train_meta = match &features {
        Some(f) => Some(encode_metadata(cfg, f, &train, [&val, &test])?),
        None => None,
    };
    let lengths = train
        .iter()
        .map(|r| r.text.len() + r.text_pair.as_ref().map_or(0, String::len))
        .collect();
    let class_weights = class_weights(cfg, &train_targets, labels.len())?;
    check_problem_options(cfg, problem)?;
    Ok(PreparedData {
        problem,
        labels,
        train,
        train_targets,
        lengths,
        val,
        test,
        features,
        train_meta,
        class_weights,
    })
}

/// The problem type: as asked, else multi-label when the labels are sets (decided by the
/// first row: a later row of the other kind is then the error).
fn problem_type(cfg: &TrainConfig, train: &[Record]) -> ProblemType {
    cfg.problem_type.unwrap_or(
        if !cfg.label_columns.is_empty() || train.first().is_some_and(|r| r.labels.is_some()) {
            ProblemType::MultiLabelClassification
        } else {
            ProblemType::SingleLabelClassification
        },
    )
}

/// Options that need single-label data.
fn check_problem_options(cfg: &TrainConfig, problem: ProblemType) -> Result<()> {
    let single = problem == ProblemType::SingleLabelClassification;
    if cfg.metric_for_best_model == "r2" && problem != ProblemType::Regression {
        return Err(TrainError::Config(format!(
            "metric r2 (for --metric-for-best-model or tune --metric) needs regression, and this run is {}; choose accuracy, macro_f1, micro_f1 or loss",
            serde_json::to_value(problem)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        )));
    }
    if cfg.sampler == Sampler::Balanced && !single {
        return Err(TrainError::Config(
            "--sampler balanced needs single-label data".into(),
        ));
    }
    if cfg.loss == LossKind::Focal && !single {
        return Err(TrainError::Config(
            "--loss focal needs single-label data".into(),
        ));
    }
    Ok(())
}

/// Metadata of every split, encoded once: the training examples' are returned; the
/// validation and test cells are checked with their file rows, and unseen categories are
/// reported.
fn encode_metadata(
    cfg: &TrainConfig,
    f: &FittedFeatures,
    train: &[Record],
    splits: [&Option<Labelled>; 2],
) -> Result<EncodedFeatures> {
    let refs: Vec<&Record> = train.iter().collect();
    let train_meta = f.encode(&cfg.train, 1, &refs)?;
    for (path, split) in [&cfg.validation, &cfg.test].into_iter().zip(splits) {
        if let (Some(p), Some((recs, _))) = (path, split) {
            let refs: Vec<&Record> = recs.iter().collect();
            let enc = f.encode(p, 1, &refs)?;
            for (c, n) in f.categorical.iter().zip(&enc.unknown) {
                if *n > 0 {
                    eprintln!(
                        "note: {}: {n} value(s) of `{}` not in the training vocabulary (rare/unknown bucket)",
                        p.display(),
                        c.column
                    );
                }
            }
        }
    }
    Ok(train_meta)
}

/// Offline augmentation: `num_aug` variants of every training example, then (optionally)
/// variants of rare classes' examples until every class is as large as the largest. Done
/// after any validation hold-out, so validation data is never augmented. Returns the source
/// example of every training example.
fn augment_offline(
    a: &AugmentConfig,
    train: &mut Vec<Record>,
    targets: &Targets,
    k: usize,
    seeds: Seeds,
) -> Result<Vec<usize>> {
    let aug = sequin_augment::Augmenter::new();
    let mut rng = seeds.offline_augment();
    let n0 = train.len();
    let mut idx: Vec<usize> = (0..n0).collect();
    let mut add = |i: usize, recs: &mut Vec<Record>, idx: &mut Vec<usize>| {
        let mut v = recs[i].clone();
        v.text = aug.apply(&v.text, &a.pipeline, &mut rng).text;
        if !v.text.trim().is_empty() {
            recs.push(v);
            idx.push(i);
        }
    };
    if a.mode == AugmentMode::Offline && a.num_aug > 0 {
        for i in 0..n0 {
            for _ in 0..a.num_aug {
                add(i, train, &mut idx);
            }
        }
        eprintln!(
            "augmentation: {} training examples from {n0} ({} variants each)",
            train.len(),
            a.num_aug
        );
    }
    if a.oversample {
        let Targets::Classes(ids) = targets else {
            return Err(TrainError::Config(
                "augmentation oversampling needs single-label data".into(),
            ));
        };
        let mut members = vec![Vec::new(); k];
        for i in 0..n0 {
            members[ids[i]].push(i);
        }
        let mut count = vec![0usize; k];
        for &i in &idx {
            count[ids[i]] += 1;
        }
        let most = count.iter().copied().max().unwrap_or(0);
        let before = train.len();
        for (c, m) in members.iter().enumerate() {
            // Bounded tries: a text that augments to nothing is skipped.
            for j in 0..(most - count[c]) * 2 {
                if m.is_empty() || count[c] >= most {
                    break;
                }
                let n = train.len();
                add(m[j % m.len()], train, &mut idx);
                count[c] += train.len() - n;
            }
        }
        eprintln!(
            "augmentation: {} variants of rare classes' examples added (every class now {most})",
            train.len() - before
        );
    }
    Ok(idx)
}

/// Indices held out for validation: per class (first label for multi-label, one group for
/// regression) a seeded `fraction`, at least one when the class has two or more examples.
fn stratified_holdout(targets: &Targets, fraction: f64, mut rng: ChaCha8Rng) -> BTreeSet<usize> {
    use rand::seq::SliceRandom;
    let key: Vec<usize> = match targets {
        Targets::Classes(ids) => ids.clone(),
        Targets::MultiHot(rows) => rows
            .iter()
            .map(|r| r.iter().position(|&y| y >= 0.5).map_or(0, |j| j + 1))
            .collect(),
        Targets::Values(v) => vec![0; v.len()],
    };
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, k) in key.into_iter().enumerate() {
        groups.entry(k).or_default().push(i);
    }
    let mut out = BTreeSet::new();
    for (_, mut idx) in groups {
        idx.shuffle(&mut rng);
        let take = ((idx.len() as f64 * fraction).round() as usize)
            .max(usize::from(idx.len() >= 2))
            .min(idx.len().saturating_sub(1));
        out.extend(idx.into_iter().take(take));
    }
    out
}

/// Class weights for the loss: explicit, or `auto` (single-label `n / (k · count)`;
/// multi-label `negatives / positives` per label).
fn class_weights(cfg: &TrainConfig, targets: &Targets, k: usize) -> Result<Option<Vec<f64>>> {
    let Some(w) = &cfg.class_weights else {
        return Ok(None);
    };
    if matches!(targets, Targets::Values(_)) {
        return Err(TrainError::Config(
            "--class-weights does not apply to regression".into(),
        ));
    }
    Ok(Some(match w {
        ClassWeights::List(v) => {
            if v.len() != k {
                return Err(TrainError::Config(format!(
                    "--class-weights has {} values for {k} labels",
                    v.len()
                )));
            }
            v.clone()
        }
        ClassWeights::Auto(_) => match targets {
            Targets::Classes(ids) => {
                let mut count = vec![0usize; k];
                for &c in ids {
                    count[c] += 1;
                }
                let n = ids.len() as f64;
                count
                    .iter()
                    .map(|&c| {
                        if c == 0 {
                            0.0
                        } else {
                            n / (k as f64 * c as f64)
                        }
                    })
                    .collect()
            }
            Targets::MultiHot(rows) => (0..k)
                .map(|j| {
                    let pos = rows.iter().filter(|r| r[j] >= 0.5).count();
                    let neg = rows.len() - pos;
                    if pos == 0 {
                        1.0
                    } else {
                        neg as f64 / pos as f64
                    }
                })
                .collect(),
            Targets::Values(_) => unreachable!("checked above"),
        },
    }))
}
