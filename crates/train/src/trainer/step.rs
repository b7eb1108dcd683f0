//! Phase 3, `step`: one batch's loss and gradients.
//!
//! The loss is an [`Objective`] chosen once per run (problem type, loss kind, class weights)
//! and shared by both paths of a step:
//! - row shards ([`crate::shard`]): forward and backward in parallel, hard targets;
//! - mixup: pooled text vectors mixed across the whole batch (one shard), soft targets.

use std::borrow::Cow;
use std::ops::Range;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_distr::Distribution;
use sequin_data::{EncodedBatch, Record, Seeds, length_grouped_batches, shuffled_indices};
use sequin_heads::{ProblemType, loss};
use sequin_tokenize::EncodeOptions;

use super::Trainer;
use super::prepare::PreparedData;
use crate::classifier::{Model, Targets};
use crate::config::{AugmentMode, LossKind, Sampler};
use crate::inference::doc_logits;
use crate::{Result, TrainConfig};

/// What a batch's logits are scored against.
pub(crate) enum Truth {
    /// Class ids `[rows]` (single-label).
    ClassIds(Tensor<1, Int>),
    /// Float targets `[rows, k]`: one-hot or mixed class rows, multi-hot rows, or values.
    Rows(Tensor<2>),
}

/// The training loss of a run.
pub(crate) struct Objective {
    problem: ProblemType,
    kind: LossKind,
    focal_gamma: f64,
    /// Class weights (single-label) or BCE `pos_weight` (multi-label), as numbers.
    weights: Option<Vec<f64>>,
    /// The same on the autodiff device.
    weights_tensor: Option<Tensor<1>>,
}

impl Objective {
    pub(crate) fn new(cfg: &TrainConfig, data: &PreparedData, ad: &Device) -> Self {
        let weights_tensor = data.class_weights.as_ref().map(|w| {
            Tensor::<1>::from_data(
                TensorData::new(w.iter().map(|&x| x as f32).collect::<Vec<_>>(), [w.len()]),
                ad,
            )
        });
        Self {
            problem: data.problem,
            kind: cfg.loss,
            focal_gamma: cfg.focal_gamma,
            weights: data.class_weights.clone(),
            weights_tensor,
        }
    }

    /// The mean loss of a batch's logits `[rows, k]`.
    pub(crate) fn loss(&self, logits: Tensor<2>, truth: Truth) -> Tensor<1> {
        let w = self.weights_tensor.clone();
        match (self.problem, truth) {
            (ProblemType::SingleLabelClassification, Truth::ClassIds(ids)) => {
                match (self.kind, w) {
                    (LossKind::Focal, w) => loss::focal(logits, ids, self.focal_gamma, w),
                    (_, Some(w)) => loss::weighted_cross_entropy(logits, ids, w),
                    (_, None) => loss::cross_entropy(logits, ids),
                }
            }
            (ProblemType::SingleLabelClassification, Truth::Rows(y)) => {
                loss::soft_cross_entropy(logits, y, w)
            }
            (ProblemType::MultiLabelClassification, Truth::Rows(y)) => match w {
                Some(w) => loss::bce_with_logits_pos_weight(logits, y, w).mean(),
                None => loss::bce_with_logits(logits, y),
            },
            (ProblemType::Regression, Truth::Rows(y)) => loss::mse(logits, y),
            (_, Truth::ClassIds(_)) => unreachable!("class ids are single-label targets"),
        }
    }

    /// The hard truth of targets: class ids, or float rows.
    fn truth(targets: &Targets, class_ids: Option<Tensor<1, Int>>, ad: &Device) -> Truth {
        match (targets, class_ids) {
            (Targets::Classes(_), Some(ids)) => Truth::ClassIds(ids),
            (Targets::Classes(_), None) => unreachable!("class ids were given"),
            (Targets::MultiHot(rows), _) => Truth::Rows(EncodedBatch::float_targets(rows, ad)),
            (Targets::Values(v), _) => {
                let rows: Vec<Vec<f32>> = v.iter().map(|&x| vec![x]).collect();
                Truth::Rows(EncodedBatch::float_targets(&rows, ad))
            }
        }
    }

    /// The sum of the class weights of `rows` of a single-label batch, when the loss is
    /// weighted by class (it then divides by that sum).
    fn class_weight(&self, targets: &Targets, rows: Range<usize>) -> Option<f64> {
        match (targets, &self.weights) {
            (Targets::Classes(ids), Some(w)) => Some(ids[rows].iter().map(|&c| w[c]).sum()),
            _ => None,
        }
    }
}

/// One batch of an epoch.
pub(crate) struct Batch<'r> {
    /// Its examples' indices in the training set.
    pub chunk: &'r [usize],
    /// Its records (augmented variants under per-epoch augmentation).
    pub records: Vec<&'r Record>,
    /// Its targets.
    pub targets: Targets,
    /// The epoch (1-based).
    pub epoch: usize,
    /// Its index in the epoch.
    pub index: usize,
    /// Batches in its gradient-accumulation group: each loss is divided by it.
    pub group_len: usize,
}

impl Trainer<'_> {
    /// The batches of `epoch`: balanced draws, length-grouped or shuffled.
    pub(super) fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let cfg = self.cfg;
        let seeds = self.seeds;
        if let (Sampler::Balanced, Targets::Classes(ids)) = (cfg.sampler, &self.data.train_targets)
        {
            balanced_batches(ids, self.data.labels.len(), cfg.batch_size, seeds, epoch)
        } else if cfg.length_grouping() {
            length_grouped_batches(&self.data.lengths, cfg.batch_size, seeds.run(), epoch)
        } else {
            shuffled_indices(self.data.train.len(), seeds.run(), epoch)
                .chunks(cfg.batch_size)
                .map(<[usize]>::to_vec)
                .collect()
        }
    }

    /// The loss value (the batch mean) and the gradients of the batch's loss divided by its
    /// group length.
    pub(super) fn batch_grads(&self, model: &Model, b: &Batch) -> Result<(f32, GradientsParams)> {
        match self.cfg.mixup_alpha {
            Some(alpha) => self.mixup_grads(model, b, alpha),
            None => self.sharded_grads(model, b),
        }
    }

    fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            max_length: self.cfg.max_length,
            pad_to_multiple_of: self.cfg.pad_to_multiple_of,
        }
    }

    /// Row shards of the batch, forward and backward in parallel (see `shard`). Each shard's
    /// loss is weighted by its share of the batch's: its rows, or its class weights when a
    /// weighted loss divides by their sum.
    fn sharded_grads(&self, model: &Model, b: &Batch) -> Result<(f32, GradientsParams)> {
        // (The shards share these, not the trainer.)
        let (cfg, ad, rows, opts) = (self.cfg, &self.ad, b.chunk.len(), self.encode_options());
        let (tokenizer, objective) = (&self.base.tokenizer, &self.objective);
        let meta = self
            .data
            .features
            .as_ref()
            .zip(self.data.train_meta.as_ref());
        let total_weight = objective.class_weight(&b.targets, 0..rows);
        let (losses, grads) =
            crate::shard::sharded_step(model, rows, cfg.shards(), |m, range, _| {
                let idx: Vec<usize> = range.clone().collect();
                let targets = b.targets.select(&idx);
                let ids = match &targets {
                    Targets::Classes(ids) => Some(ids.as_slice()),
                    _ => None,
                };
                let recs = &b.records[range.clone()];
                let mut enc =
                    EncodedBatch::new_long(tokenizer, recs, ids, opts, cfg.long_text, ad)?;
                let class_ids = enc.labels.take();
                let meta = meta.map(|(f, e)| f.batch(e, &b.chunk[range.clone()], ad));
                let logits = doc_logits(m, enc, cfg.aggregate, meta);
                let loss = objective.loss(logits, Objective::truth(&targets, class_ids, ad));
                let share = match (
                    objective.class_weight(&b.targets, range.clone()),
                    total_weight,
                ) {
                    (Some(part), Some(total)) => part / total,
                    _ => range.len() as f64 / rows as f64,
                };
                Ok(loss.mul_scalar(share / b.group_len as f64))
            })?;
        let v = losses.iter().map(|&l| l as f64).sum::<f64>() * b.group_len as f64;
        Ok((v as f32, grads))
    }

    /// Mixup on the pooled text vectors, never on token ids: `λ·x + (1 − λ)·x[perm]` with the
    /// targets mixed alike. Mixup pairs rows across the whole batch: one shard.
    fn mixup_grads(&self, model: &Model, b: &Batch, alpha: f64) -> Result<(f32, GradientsParams)> {
        let ad = &self.ad;
        let ids = match &b.targets {
            Targets::Classes(ids) => Some(ids.as_slice()),
            _ => None,
        };
        let enc = EncodedBatch::new_long(
            &self.base.tokenizer,
            &b.records,
            ids,
            self.encode_options(),
            self.cfg.long_text,
            ad,
        )?;
        let (lambda, perm) = self.mixup_draw(alpha, b);
        let pooled = model
            .text
            .pooled(enc.input_ids, Some(enc.token_type_ids), Some(enc.pad_mask));
        let perm_i64: Vec<i64> = perm.iter().map(|&i| i as i64).collect();
        let perm_t = Tensor::<1, Int>::from_data(TensorData::from(perm_i64.as_slice()), ad);
        let mixed =
            pooled.clone().mul_scalar(lambda) + pooled.select(0, perm_t).mul_scalar(1.0 - lambda);
        let logits = model.text.classify(mixed);
        let y = EncodedBatch::float_targets(
            &mix_targets(&b.targets, self.data.labels.len(), lambda, &perm),
            ad,
        );
        let loss = self.objective.loss(logits, Truth::Rows(y));
        let v: f32 = loss.clone().into_scalar();
        let loss = loss.div_scalar(b.group_len as f64);
        Ok((v, GradientsParams::from_grads(loss.backward(), model)))
    }

    /// Mixup's draw for one batch: `λ ~ Beta(α, α)` and a permutation of the batch, from the
    /// batch's own stream (so a resumed run draws the same).
    fn mixup_draw(&self, alpha: f64, b: &Batch) -> (f64, Vec<usize>) {
        let mut rng = self.seeds.mixup(b.epoch, b.index);
        let lambda = rand_distr::Beta::new(alpha, alpha)
            .expect("alpha > 0 was validated")
            .sample(&mut rng);
        let mut perm: Vec<usize> = (0..b.chunk.len()).collect();
        perm.shuffle(&mut rng);
        (lambda, perm)
    }
}

/// The records of a batch: the training examples, or under per-epoch augmentation a fresh
/// variant of each, from an RNG seeded by the epoch and the example (made in parallel; the
/// result does not depend on the threads).
pub(super) fn batch_records<'d>(
    cfg: &TrainConfig,
    seeds: Seeds,
    augmenter: &sequin_augment::Augmenter<'_>,
    train: &'d [Record],
    chunk: &[usize],
    epoch: usize,
) -> Vec<Cow<'d, Record>> {
    let per_epoch = cfg
        .augment
        .as_ref()
        .filter(|a| a.mode == AugmentMode::PerEpoch);
    let Some(a) = per_epoch else {
        return chunk.iter().map(|&i| Cow::Borrowed(&train[i])).collect();
    };
    use rayon::prelude::*;
    chunk
        .par_iter()
        .map(|&i| {
            let mut rng = seeds.example_augment(epoch, i);
            let mut r = train[i].clone();
            let t = augmenter.apply(&r.text, &a.pipeline, &mut rng).text;
            if !t.trim().is_empty() {
                r.text = t;
            }
            Cow::Owned(r)
        })
        .collect()
}

/// A balanced epoch: as many draws as examples, with replacement, each class equally likely
/// (then uniform within the class); seeded by (seed, epoch), so a resumed run draws the same.
fn balanced_batches(
    ids: &[usize],
    k: usize,
    batch_size: usize,
    seeds: Seeds,
    epoch: usize,
) -> Vec<Vec<usize>> {
    use rand::Rng;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in ids.iter().enumerate() {
        by_class[c].push(i);
    }
    let present: Vec<&Vec<usize>> = by_class.iter().filter(|v| !v.is_empty()).collect();
    let mut rng = seeds.balanced(epoch);
    let draws: Vec<usize> = (0..ids.len())
        .map(|_| {
            let class = present[rng.random_range(0..present.len())];
            class[rng.random_range(0..class.len())]
        })
        .collect();
    draws
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Targets mixed as mixup mixes inputs: `λ·y + (1 − λ)·y[perm]`, as rows of floats (one-hot for
/// classes, multi-hot, or one value).
fn mix_targets(t: &Targets, k: usize, lambda: f64, perm: &[usize]) -> Vec<Vec<f32>> {
    let rows: Vec<Vec<f32>> = match t {
        Targets::Classes(ids) => ids
            .iter()
            .map(|&c| {
                let mut r = vec![0.0; k];
                r[c] = 1.0;
                r
            })
            .collect(),
        Targets::MultiHot(rows) => rows.clone(),
        Targets::Values(v) => v.iter().map(|&x| vec![x]).collect(),
    };
    let l = lambda as f32;
    rows.iter()
        .zip(perm)
        .map(|(a, &j)| {
            a.iter()
                .zip(&rows[j])
                .map(|(x, y)| l * x + (1.0 - l) * y)
                .collect()
        })
        .collect()
}
