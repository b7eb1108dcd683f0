//! SetFit (Tunstall et al. 2022, the `setfit` library): few-shot classification with a
//! sentence-transformer body, in two stages.
//!
//! 1. **Body.** Contrastive pairs from the training labels ([`pairs`]): same label → target
//!    cosine similarity 1, different → 0. The body is fine-tuned on them with the
//!    cosine-similarity loss (`MSE(cos(u, v), target)`) on its sentence embeddings: the pooling
//!    of the model folder's sentence-transformers config (`modules.json`,
//!    `1_Pooling/config.json`, a `Normalize` module), else the mean of the real tokens.
//! 2. **Head.** A logistic regression on the frozen embeddings of the training examples
//!    ([`head`]): scikit-learn's `LogisticRegression()` as the library fits it.
//!
//! The saved folder is a sequin model folder (eval, predict and serve load it with no extra
//! flag) and a sentence-transformers folder: the body in HF layout with `modules.json` and
//! its pooling config, and the head in `model_head.safetensors` (torch layout, the label map
//! in its metadata), described by `setfit.json`.

pub mod head;
pub mod pairs;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use sequin_data::{Columns, EmptyText, EncodedBatch, LabelMap, Record, read_records_with};
use sequin_encoders::common::{DropoutStream, materialize, with_dropout_stream, with_param_init};
use sequin_heads::{ProblemType, SentenceEmbedding, SentenceHead, SentencePooling};
use sequin_hf::{HfConfig, resolve, write_atomic};
use sequin_tokenize::{EncodeOptions, LongText, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::classifier::{Classifier, Model, Targets};
use crate::config::LrSchedule;
use crate::folder::{FolderWriter, InputPolicy, InputSchema, load_model, write_json};
use crate::metrics::Report;
use crate::optim::{adamw, clip_global_norm, module_scheduler};
use crate::{Result, TrainError};

pub use pairs::{Pair, PairPlan, contrastive_pairs};

/// The file that marks a SetFit folder and says how its embeddings are made.
pub const SETFIT_FILE: &str = "setfit.json";
/// The head's weights.
pub const HEAD_WEIGHTS: &str = "model_head.safetensors";

/// A SetFit run's options; the defaults are the `setfit` library's (1.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetFitConfig {
    /// The body: a local folder or a hub id (a sentence-transformer, ideally).
    pub model: String,
    /// Labelled training examples (a handful per class).
    pub train: PathBuf,
    /// Evaluated after training, when given.
    pub validation: Option<PathBuf>,
    /// Evaluated after training, when given.
    pub test: Option<PathBuf>,
    /// The model folder written.
    pub output: PathBuf,
    /// The text column.
    pub text_column: String,
    /// The second text of a pair, when the task has pairs.
    pub text_pair_column: Option<String>,
    /// The label column (a list column for multi-label data).
    pub label_column: String,
    /// Pairs of each kind per training example (`num_iterations`, 20).
    pub num_iterations: usize,
    /// Pairs per body step (16).
    pub batch_size: usize,
    /// Passes over the pairs (1).
    pub epochs: usize,
    /// The body's peak learning rate (2e-5), linear warmup then decay.
    pub lr: f64,
    /// AdamW weight decay (the library's `l2_weight`, 0.01).
    pub weight_decay: f64,
    /// Fraction of body steps of warmup (0.1).
    pub warmup_ratio: f64,
    /// Tokens per text.
    pub max_length: usize,
    /// The seed of the pairs, the pair order, dropout and initialisation.
    pub seed: u64,
    /// The head's inverse regularisation strength (scikit-learn's `C`, 1.0).
    pub head_c: f64,
    /// Texts per forward pass when embedding and evaluating.
    pub eval_batch_size: usize,
    /// Shards of a step's pairs whose forward and backward passes run in parallel (see
    /// [`crate::shard`]); the CLI picks 4 on the CPU backend, 1 on a GPU.
    pub shards: usize,
}

impl SetFitConfig {
    /// The library's defaults for a body, training data and output folder.
    pub fn new(model: impl Into<String>, train: PathBuf, output: PathBuf) -> Self {
        Self {
            model: model.into(),
            train,
            validation: None,
            test: None,
            output,
            text_column: "text".into(),
            text_pair_column: None,
            label_column: "label".into(),
            num_iterations: 20,
            batch_size: 16,
            epochs: 1,
            lr: 2e-5,
            weight_decay: 0.01,
            warmup_ratio: 0.1,
            max_length: 128,
            seed: 42,
            head_c: 1.0,
            eval_batch_size: 64,
            shards: 1,
        }
    }

    /// The columns read.
    pub fn columns(&self) -> Columns {
        Columns {
            text: self.text_column.clone(),
            text_pair: self.text_pair_column.clone(),
            label: Some(self.label_column.clone()),
            label_columns: Vec::new(),
            features: Vec::new(),
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.num_iterations == 0 || self.batch_size == 0 || self.epochs == 0 {
            return bad("--num-iterations, --batch-size and --epochs must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr must be positive, got {}", self.lr));
        }
        if !(self.head_c > 0.0 && self.head_c.is_finite()) {
            return bad(format!("--head-c must be positive, got {}", self.head_c));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "--warmup-ratio must be in [0, 1), got {}",
                self.warmup_ratio
            ));
        }
        if self.max_length < 2 {
            return bad(format!(
                "--max-length must be at least 2, got {}",
                self.max_length
            ));
        }
        Ok(())
    }

    fn opts(&self) -> EncodeOptions {
        EncodeOptions {
            max_length: self.max_length,
            pad_to_multiple_of: None,
        }
    }
}

/// What a SetFit run did.
#[derive(Debug, Clone, Serialize)]
pub struct SetFitSummary {
    /// The folder written.
    pub output: PathBuf,
    /// Training examples.
    pub examples: usize,
    /// Contrastive pairs trained on (both kinds).
    pub pairs: usize,
    /// Distinct positive and negative pairs the data has.
    pub unique_pairs: (usize, usize),
    /// Body optimizer steps.
    pub body_steps: usize,
    /// Mean pair loss of the first and the last tenth of the body steps.
    pub body_loss: (f64, f64),
    /// Seconds in stage 1 (the body).
    pub body_seconds: f64,
    /// Seconds in stage 2 (embedding the examples and fitting the head).
    pub head_seconds: f64,
    /// Seconds from start to the saved folder.
    pub train_seconds: f64,
    /// The validation report, when asked for.
    pub validation: Option<Report>,
    /// The test report, when asked for.
    pub test: Option<Report>,
}

/// Single-label data: two classes at least (a negative pair joins two) and two examples of
/// every class (a positive pair of distinct examples). Multi-label data: every label absent
/// from some example (its one-vs-rest regression needs both kinds), and two examples with no
/// label in common (a negative pair). `sets`: each example's class ids.
pub fn check_classes(
    sets: &[Vec<usize>],
    labels: &LabelMap,
    multi: bool,
    path: &Path,
) -> Result<()> {
    let mut counts = vec![0usize; labels.len()];
    for s in sets {
        for &c in s {
            counts[c] += 1;
        }
    }
    let refuse = |m: String| Err(TrainError::Config(format!("{}: {m}", path.display())));
    if multi {
        if let Some(c) = counts.iter().position(|&n| n == sets.len()) {
            return refuse(format!(
                "label `{}` is on every example; SetFit's head needs examples without it too",
                labels.names()[c]
            ));
        }
        let disjoint = (0..sets.len())
            .any(|a| (a + 1..sets.len()).any(|b| !sets[a].iter().any(|l| sets[b].contains(l))));
        if !disjoint {
            return refuse(
                "no two examples have disjoint label sets, so SetFit has no negative pair".into(),
            );
        }
        return Ok(());
    }
    let present = counts.iter().filter(|&&n| n > 0).count();
    if present < 2 {
        return refuse(format!(
            "SetFit needs at least two classes (a negative pair joins two), and the data has only {}",
            labels.names().join(", ")
        ));
    }
    if let Some((c, n)) = counts.iter().enumerate().find(|(_, n)| **n < 2) {
        return refuse(format!(
            "class `{}` has {n} example{}; SetFit needs at least 2 per class (no positive pair of distinct examples can be built from fewer)",
            labels.names()[c],
            if *n == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

/// The sentence embedding of a sentence-transformers folder: its `Pooling` module's mode and
/// whether a `Normalize` module follows; a plain HF folder gets the mean of the real tokens.
pub fn read_embedding(dir: &Path) -> Result<SentenceEmbedding> {
    let modules = dir.join("modules.json");
    let Ok(text) = std::fs::read_to_string(&modules) else {
        return Ok(SentenceEmbedding::default());
    };
    let bad = |m: String| TrainError::Config(format!("{}: {m}", modules.display()));
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let kind = |m: &serde_json::Value| m["type"].as_str().unwrap_or("").to_string();
    let normalize = list.iter().any(|m| kind(m).ends_with(".Normalize"));
    let Some(pool) = list.iter().find(|m| kind(m).ends_with(".Pooling")) else {
        return Ok(SentenceEmbedding {
            pooling: SentencePooling::Mean,
            normalize,
        });
    };
    let path = dir
        .join(pool["path"].as_str().unwrap_or("1_Pooling"))
        .join("config.json");
    let cfg: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or_else(|| {
            bad(format!(
                "its Pooling module's {} cannot be read",
                path.display()
            ))
        })?;
    let on = |k: &str| cfg[k].as_bool().unwrap_or(false);
    let pooling = match (
        on("pooling_mode_mean_tokens"),
        on("pooling_mode_cls_token"),
        on("pooling_mode_max_tokens"),
    ) {
        (true, false, false) => SentencePooling::Mean,
        (false, true, false) => SentencePooling::Cls,
        (false, false, true) => SentencePooling::Max,
        _ => {
            return Err(bad(format!(
                "{}: one of mean, CLS or max pooling is supported, not this combination",
                path.display()
            )));
        }
    };
    Ok(SentenceEmbedding { pooling, normalize })
}

/// The example label sets of the training data, its label map and problem type.
fn label_sets(records: &[Record], path: &Path) -> Result<(LabelMap, ProblemType, Vec<Vec<usize>>)> {
    if records.first().is_some_and(|r| r.labels.is_some()) {
        let labels = LabelMap::from_train_sets(records, path)?;
        let hot = labels.encode_sets(records, path)?;
        let sets = hot
            .iter()
            .map(|r| (0..r.len()).filter(|&l| r[l] > 0.5).collect())
            .collect();
        return Ok((labels, ProblemType::MultiLabelClassification, sets));
    }
    let labels = LabelMap::from_train(records, path)?;
    let ids = labels.encode(records, path)?;
    let sets = ids.into_iter().map(|c| vec![c]).collect();
    Ok((labels, ProblemType::SingleLabelClassification, sets))
}

/// Trains a SetFit model, writes its folder, and evaluates it on the validation and test
/// files when given. Returns the summary and the saved model as loaded back.
pub fn train(cfg: &SetFitConfig, device: &Device) -> Result<(SetFitSummary, Classifier)> {
    cfg.check()?;
    let t0 = Instant::now();
    let records = read_records_with(&cfg.train, &cfg.columns(), EmptyText::Refuse)?;
    let (labels, problem, sets) = label_sets(&records, &cfg.train)?;
    let multi = problem == ProblemType::MultiLabelClassification;
    check_classes(&sets, &labels, multi, &cfg.train)?;
    let dir = resolve(&cfg.model)?;
    let tokenizer = Tokenizer::from_dir(&dir)?;
    let embedding = read_embedding(&dir)?;
    let plan = contrastive_pairs(&sets, cfg.num_iterations, cfg.seed);
    if let Some(note) = plan.reuse_note() {
        eprintln!("setfit: {note}");
    }
    let ad = device.clone().autodiff();
    let (model, config) = with_param_init(|| {
        ad.seed(cfg.seed);
        let (model, config, report, _) = load_model(&dir, Some(labels.len()), &ad)?;
        eprintln!("model {}: {report}", dir.display());
        materialize(&model);
        Ok::<_, TrainError>((model, config))
    })?;
    crate::check_vocab(&tokenizer, &config)?;
    eprintln!(
        "setfit: {} examples, {} classes; {} pairs ({} distinct positive, {} distinct negative), {} body steps of {}",
        records.len(),
        labels.len(),
        plan.pairs.len(),
        plan.unique_positive,
        plan.unique_negative,
        steps(cfg, &plan),
        cfg.batch_size
    );
    let body = Body {
        cfg,
        tokenizer: &tokenizer,
        records: &records,
        embedding,
        device: &ad,
    };
    let (model, losses) = body.train(model, &plan)?;
    let body_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let text = model.valid().text;
    let x = embed_all(
        &text,
        &tokenizer,
        &records,
        embedding,
        cfg.opts(),
        cfg.eval_batch_size,
        device,
    )?;
    let o = head::RegressionOptions {
        c: cfg.head_c,
        max_iterations: 100,
    };
    let fit = match problem {
        ProblemType::MultiLabelClassification => {
            let hot: Vec<Vec<f32>> = match Targets::encode(problem, &labels, &records, &cfg.train)?
            {
                Targets::MultiHot(v) => v,
                _ => unreachable!("multi-label targets"),
            };
            head::fit_multi_label(&x, &hot, labels.len(), o)?
        }
        _ => head::fit_single_label(&x, &labels.encode(&records, &cfg.train)?, labels.len(), o)?,
    };
    let head = sentence_head(&fit, embedding, x[0].len(), labels.len(), device);
    let head_seconds = t1.elapsed().as_secs_f64();
    let model = Model {
        text,
        fusion: None,
        sentence: Some(head),
    };
    let saved = Saved {
        cfg,
        config: &config,
        labels: &labels,
        problem,
        tokenizer: &tokenizer,
        records: &records,
    };
    saved.write(&model, &losses)?;
    let classifier = Classifier::load(&cfg.output, device)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let tenth = (losses.len() / 10).max(1);
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64;
    let mut summary = SetFitSummary {
        output: cfg.output.clone(),
        examples: records.len(),
        pairs: plan.pairs.len(),
        unique_pairs: (plan.unique_positive, plan.unique_negative),
        body_steps: losses.len(),
        body_loss: (
            mean(&losses[..tenth.min(losses.len())]),
            mean(&losses[losses.len().saturating_sub(tenth)..]),
        ),
        body_seconds,
        head_seconds,
        train_seconds,
        validation: None,
        test: None,
    };
    summary.validation = evaluate(&classifier, cfg, cfg.validation.as_deref())?;
    summary.test = evaluate(&classifier, cfg, cfg.test.as_deref())?;
    write_json(
        &cfg.output.join("run.json"),
        &serde_json::json!({
            "method": "setfit",
            "config": cfg,
            "summary": summary,
            "body_loss_per_step": losses,
        }),
    )?;
    Ok((summary, classifier))
}

fn steps(cfg: &SetFitConfig, plan: &PairPlan) -> usize {
    plan.pairs.len().div_ceil(cfg.batch_size) * cfg.epochs
}

fn evaluate(c: &Classifier, cfg: &SetFitConfig, path: Option<&Path>) -> Result<Option<Report>> {
    let Some(path) = path else { return Ok(None) };
    let records = c.read(path, &cfg.columns())?;
    Ok(Some(c.evaluate(
        &records,
        path,
        cfg.opts(),
        cfg.eval_batch_size,
    )?))
}

/// Stage 1: what the body's training reads.
struct Body<'a> {
    cfg: &'a SetFitConfig,
    tokenizer: &'a Tokenizer,
    records: &'a [Record],
    embedding: SentenceEmbedding,
    /// The autodiff device.
    device: &'a Device,
}

impl Body<'_> {
    /// Fine-tunes the body on the pairs; returns it with the loss of every step.
    fn train(&self, mut model: Model, plan: &PairPlan) -> Result<(Model, Vec<f32>)> {
        let cfg = self.cfg;
        let total = steps(cfg, plan);
        let warmup = (total as f64 * cfg.warmup_ratio).ceil() as usize;
        let mut optim = adamw(&model, cfg.weight_decay);
        let mut sched = module_scheduler(LrSchedule::Linear, cfg.lr, &[], warmup, total, 0);
        let mut dropout = DropoutStream::new(cfg.seed);
        let pb = crate::progress::bar(total as u64, "setfit body");
        let mut losses = Vec::with_capacity(total);
        let started = Instant::now();
        for epoch in 0..cfg.epochs {
            let order = sequin_data::shuffled_indices(plan.pairs.len(), cfg.seed, epoch);
            for chunk in order.chunks(cfg.batch_size) {
                let pairs: Vec<Pair> = chunk.iter().map(|&i| plan.pairs[i]).collect();
                let (losses_of_shards, grads) = with_dropout_stream(&mut dropout, || {
                    crate::shard::sharded_step(&model, pairs.len(), cfg.shards, |m, rows, _| {
                        self.pair_loss(
                            m,
                            &pairs[rows.clone()],
                            rows.len() as f32 / pairs.len() as f32,
                        )
                    })
                })?;
                let loss: f32 = losses_of_shards.iter().sum();
                if !loss.is_finite() {
                    return Err(TrainError::Diverged {
                        step: losses.len(),
                        loss,
                    });
                }
                let mut grads = grads;
                clip_global_norm(&model, &mut grads, 1.0);
                model = optim.step(sched.step(), model, grads);
                losses.push(loss);
                pb.inc(1);
                let rate = (losses.len() * cfg.batch_size * 2) as f64
                    / started.elapsed().as_secs_f64().max(1e-9);
                let status = format!("loss {loss:.4} | {rate:.1} texts/s");
                if pb.is_hidden() && losses.len().is_multiple_of((total / 10).max(1)) {
                    eprintln!("setfit body step {}/{total}: {status}", losses.len());
                }
                pb.set_prefix(status);
            }
        }
        pb.finish_and_clear();
        Ok((model, losses))
    }

    /// Pairs of a step (or a shard of it): `MSE(cos(u, v), target)` times `weight` (the
    /// shard's share of the step's pairs). Both sides of every pair go through the body in one
    /// forward pass.
    fn pair_loss(&self, model: &Model, pairs: &[Pair], weight: f32) -> Result<Tensor<1>> {
        let n = pairs.len();
        let texts: Vec<&Record> = pairs
            .iter()
            .map(|p| &self.records[p.a])
            .chain(pairs.iter().map(|p| &self.records[p.b]))
            .collect();
        let b = EncodedBatch::new(self.tokenizer, &texts, None, self.cfg.opts(), self.device)?;
        let hidden = model.text.hidden(
            b.input_ids,
            Some(b.token_type_ids),
            Some(b.pad_mask.clone()),
        );
        let e = self.embedding.embed(hidden, Some(b.pad_mask));
        let d = e.dims()[1];
        let (u, v) = (e.clone().slice([0..n, 0..d]), e.slice([n..2 * n, 0..d]));
        // torch.cosine_similarity: u·v / max(‖u‖·‖v‖, 1e-8).
        let norm = |t: Tensor<2>| (t.clone() * t).sum_dim(1).sqrt();
        let cos = (u.clone() * v.clone()).sum_dim(1) / (norm(u) * norm(v)).clamp_min(1e-8);
        let targets: Vec<f32> = pairs.iter().map(|p| p.target).collect();
        let y = Tensor::<2>::from_data(TensorData::new(targets, [n, 1]), self.device);
        let diff = cos - y;
        Ok((diff.clone() * diff).mean() * weight)
    }
}

/// The sentence embeddings of `records` (inference mode), in record order.
pub(crate) fn embed_all(
    text: &sequin_heads::SequenceClassifier,
    tokenizer: &Tokenizer,
    records: &[Record],
    embedding: SentenceEmbedding,
    opts: EncodeOptions,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); records.len()];
    let order = crate::inference::length_order(records);
    for chunk in order.chunks(batch_size.max(1)) {
        let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
        let b = EncodedBatch::new(tokenizer, &recs, None, opts, device)?;
        let hidden = text.hidden(
            b.input_ids,
            Some(b.token_type_ids),
            Some(b.pad_mask.clone()),
        );
        let e = embedding.embed(hidden, Some(b.pad_mask));
        let d = e.dims()[1];
        let v = e
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 embeddings");
        for (k, &i) in chunk.iter().enumerate() {
            out[i] = v[k * d..(k + 1) * d].to_vec();
        }
    }
    Ok(out)
}

/// The head's linear layer from a fit in torch layout (`weight [labels, dim]`).
fn sentence_head(
    fit: &head::LinearFit,
    embedding: SentenceEmbedding,
    dim: usize,
    labels: usize,
    device: &Device,
) -> SentenceHead {
    let (_, burn_layout) = crate::lora::transpose(&[labels, dim], &fit.weight);
    let mut head = SentenceHead::init(embedding, dim, labels, device);
    head.linear = Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(burn_layout, [dim, labels]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(fit.bias.clone(), [labels]),
            device,
        ))),
    };
    head
}

/// What the saved folder holds beside the model.
struct Saved<'a> {
    cfg: &'a SetFitConfig,
    config: &'a HfConfig,
    labels: &'a LabelMap,
    problem: ProblemType,
    tokenizer: &'a Tokenizer,
    records: &'a [Record],
}

impl Saved<'_> {
    /// Writes the folder: the HF body and config, the tokenizer, `sequin.json`, the head and
    /// the sentence-transformers files ([`write_head_files`] through the folder writer), and
    /// the body's loss curve.
    fn write(&self, model: &Model, losses: &[f32]) -> Result<()> {
        let cfg = self.cfg;
        std::fs::create_dir_all(&cfg.output).map_err(|source| TrainError::Io {
            path: cfg.output.clone(),
            source,
        })?;
        let policy = InputPolicy {
            max_length: cfg.max_length,
            long_text: LongText::Truncate,
            aggregate: Default::default(),
            thresholds: None,
            schema: Some(InputSchema::new(&cfg.columns(), self.labels.names())),
            calibration: None,
            examples: examples(self.records),
        };
        FolderWriter {
            base_config: self.config,
            labels: self.labels.names(),
            problem: self.problem,
            tokenizer: self.tokenizer,
            max_length: cfg.max_length,
            fusion: None,
            lora: None,
        }
        .write(&cfg.output, model, &policy)?;
        let points = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| ((i + 1) as f64, l as f64))
            .collect();
        crate::plots::write_lines(
            &cfg.output.join("plots"),
            "body_loss",
            &crate::plots::LineChart {
                title: "SetFit body: cosine-similarity loss per step".into(),
                x_label: "step".into(),
                y_label: "loss".into(),
                series: vec![crate::plots::Series {
                    label: "pair loss".into(),
                    points,
                }],
            },
        )?;
        Ok(())
    }
}

/// Up to three training texts of distinct labels, cut to 400 characters (the playground's
/// examples).
fn examples(records: &[Record]) -> Vec<String> {
    let mut seen: Vec<&Option<String>> = Vec::new();
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.text_pair.is_none()) {
        if seen.contains(&&r.label) {
            continue;
        }
        seen.push(&r.label);
        out.push(r.text.chars().take(400).collect());
        if out.len() == 3 {
            break;
        }
    }
    out
}

/// `setfit.json`: a SetFit folder's embedding and head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetFitFile {
    /// The format's version (1).
    pub version: u32,
    /// How the body's hidden state becomes the embedding the head reads.
    pub embedding: SentenceEmbedding,
    /// The head's kind (`logistic-regression`).
    pub head: String,
}

/// Writes a SetFit model's head files into a model folder: `model_head.safetensors`
/// (`weight [labels, dim]`, `bias [labels]`, torch layout; the label names in its metadata),
/// `setfit.json`, and sentence-transformers' `modules.json`, pooling config and
/// `sentence_bert_config.json`, so that sentence-transformers loads the body with the same
/// embeddings.
pub(crate) fn write_head_files(
    dir: &Path,
    head: &SentenceHead,
    labels: &[String],
    max_length: usize,
) -> Result<()> {
    let w = head.linear.weight.val();
    let [dim, k] = w.dims();
    let wv: Vec<f32> = w
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    let (_, torch) = crate::lora::transpose(&[dim, k], &wv);
    let bias: Vec<f32> = match &head.linear.bias {
        Some(b) => b
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32"),
        None => vec![0.0; k],
    };
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (wb, bb) = (bytes(&torch), bytes(&bias));
    let path = dir.join(HEAD_WEIGHTS);
    let views = [("weight", vec![k, dim], &wb), ("bias", vec![k], &bb)]
        .into_iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s, b).map(|v| (n, v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let meta = std::collections::HashMap::from([
        ("format".to_string(), "sequin-setfit-head".to_string()),
        (
            "labels".to_string(),
            serde_json::to_string(labels).expect("json"),
        ),
    ]);
    let data = safetensors::serialize(views, Some(meta))
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    write_atomic(&path, &data)?;
    let e = head.embedding;
    write_json(
        &dir.join(SETFIT_FILE),
        &SetFitFile {
            version: 1,
            embedding: e,
            head: "logistic-regression".into(),
        },
    )?;
    write_sentence_transformers(dir, e, dim, max_length)
}

/// sentence-transformers' files: Transformer → Pooling (→ Normalize).
fn write_sentence_transformers(
    dir: &Path,
    e: SentenceEmbedding,
    dim: usize,
    max_length: usize,
) -> Result<()> {
    let mut modules = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if e.normalize {
        modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        let norm = dir.join("2_Normalize");
        std::fs::create_dir_all(&norm).map_err(|source| TrainError::Io { path: norm, source })?;
    }
    write_json(&dir.join("modules.json"), &modules)?;
    let pool = dir.join("1_Pooling");
    std::fs::create_dir_all(&pool).map_err(|source| TrainError::Io {
        path: pool.clone(),
        source,
    })?;
    write_json(
        &pool.join("config.json"),
        &serde_json::json!({
            "word_embedding_dimension": dim,
            "pooling_mode_cls_token": e.pooling == SentencePooling::Cls,
            "pooling_mode_mean_tokens": e.pooling == SentencePooling::Mean,
            "pooling_mode_max_tokens": e.pooling == SentencePooling::Max,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }),
    )?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &serde_json::json!({"max_seq_length": max_length, "do_lower_case": false}),
    )
}

/// The SetFit head of a model folder (`None` when it has no `setfit.json`), checked against
/// the body's width and the label count. Fails closed, naming the file and tensor.
pub(crate) fn read_head(
    dir: &Path,
    dim: usize,
    labels: usize,
    device: &Device,
) -> Result<Option<SentenceHead>> {
    let file = dir.join(SETFIT_FILE);
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(None);
    };
    let bad = |p: &Path, m: String| TrainError::Config(format!("{}: {m}", p.display()));
    let f: SetFitFile = serde_json::from_str(&text).map_err(|e| bad(&file, e.to_string()))?;
    if f.version != 1 || f.head != "logistic-regression" {
        return Err(bad(
            &file,
            format!(
                "version {} head `{}`: this sequin reads version 1, logistic-regression",
                f.version, f.head
            ),
        ));
    }
    let path = dir.join(HEAD_WEIGHTS);
    let bytes = std::fs::read(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(&path, e.to_string()))?;
    let tensor = |name: &str, shape: Vec<usize>| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(&path, format!("tensor `{name}` is missing")))?;
        if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape.as_slice() {
            return Err(bad(
                &path,
                format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    let fit = head::LinearFit {
        weight: tensor("weight", vec![labels, dim])?,
        bias: tensor("bias", vec![labels])?,
    };
    Ok(Some(sentence_head(&fit, f.embedding, dim, labels, device)))
}
