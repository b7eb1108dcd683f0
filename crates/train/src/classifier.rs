//! A trained classifier folder, loaded for evaluation and prediction.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use sequin_data::{Columns, EncodedBatch, FittedFeatures, LabelMap, Record, read_records};
use sequin_heads::{Aggregate, FusionConfig, ProblemType, aggregate_chunks};
use sequin_hf::{HfConfig, LoadReport, load_classifier, load_fusion_weights};

/// The model: an HF sequence classifier, with a fusion head when it takes metadata.
pub use sequin_heads::Classifier as Model;
use sequin_tokenize::{EncodeOptions, LongText, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::metrics::{
    Confusion, MultiLabelAccumulator, RegressionAccumulator, Report, RocAccumulator,
};
use crate::{Result, TrainError};

/// One prediction, as `sequin predict` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The `id2label` name of the top class.
    pub label: String,
    /// Score of that class (softmax probability by default).
    pub score: f32,
    /// Raw logits.
    pub logits: Vec<f32>,
    /// The best `k` classes with their scores, when asked for (`--top-k`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<Vec<LabelScore>>,
    /// Multi-label: every label whose probability reaches its threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

/// The targets of labelled records, by problem type.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class ids (single-label).
    Classes(Vec<usize>),
    /// Multi-hot rows (multi-label).
    MultiHot(Vec<Vec<f32>>),
    /// One value per record (regression).
    Values(Vec<f32>),
}

impl Targets {
    /// The targets of the records at `idx`.
    pub fn select(&self, idx: &[usize]) -> Targets {
        match self {
            Self::Classes(v) => Self::Classes(idx.iter().map(|&i| v[i]).collect()),
            Self::MultiHot(v) => Self::MultiHot(idx.iter().map(|&i| v[i].clone()).collect()),
            Self::Values(v) => Self::Values(idx.iter().map(|&i| v[i]).collect()),
        }
    }

    /// Encodes labelled records for a problem type with a label map.
    pub fn encode(
        problem: ProblemType,
        labels: &LabelMap,
        records: &[Record],
        path: &Path,
    ) -> Result<Self> {
        Ok(match problem {
            ProblemType::SingleLabelClassification => Self::Classes(labels.encode(records, path)?),
            ProblemType::MultiLabelClassification => {
                Self::MultiHot(labels.encode_sets(records, path)?)
            }
            ProblemType::Regression => Self::Values(LabelMap::encode_values(records, path)?),
        })
    }
}

/// A class and its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// Class name.
    pub label: String,
    /// Its score.
    pub score: f32,
}

/// How logits become scores, as the `function_to_apply` of transformers' text-classification
/// pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFunction {
    /// Probabilities over the classes (the default for single-label models).
    #[default]
    Softmax,
    /// Independent probabilities per class (multi-label).
    Sigmoid,
    /// The raw logits.
    None,
}

impl ScoreFunction {
    /// Scores of one row of logits.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Self::Softmax => {
                let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                e.into_iter().map(|x| x / z).collect()
            }
            Self::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            Self::None => logits.to_vec(),
        }
    }
}

/// sequin's own settings saved beside an HF model folder (`sequin.json`): how inputs are fitted,
/// so that eval and predict do what training did, and multi-label decision thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputPolicy {
    /// Tokens per row, special tokens included.
    pub max_length: usize,
    /// Long-text policy.
    #[serde(default)]
    pub long_text: LongText,
    /// Aggregation of chunk logits.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Multi-label: each label's threshold on its sigmoid probability (0.5 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Vec<f32>>,
}

/// The file name of [`InputPolicy`] in a model folder.
pub const POLICY_FILE: &str = "sequin.json";

/// Logits per document of a batch: chunk rows are aggregated.
pub(crate) fn doc_logits(
    model: &Model,
    b: EncodedBatch,
    aggregate: Aggregate,
    meta: Option<sequin_data::FeatureBatch>,
) -> Tensor<2> {
    let (numeric, categorical) = meta.map_or((None, None), |m| (m.numeric, m.categorical));
    let logits = model.forward(
        b.input_ids,
        Some(b.token_type_ids),
        Some(b.pad_mask),
        numeric,
        categorical,
    );
    match &b.chunks {
        Some(chunks) => aggregate_chunks(logits, chunks, aggregate),
        None => logits,
    }
}

/// Inference logits per document, with bounded memory however long the documents are: every
/// document becomes its rows under `policy` (one, or its windows), the rows go through the
/// model at most `batch_size` at a time, and each document's window logits are aggregated.
#[allow(clippy::too_many_arguments)]
pub(crate) fn infer_docs(
    model: &Model,
    tokenizer: &Tokenizer,
    records: &[&Record],
    opts: EncodeOptions,
    policy: &InputPolicy,
    batch_size: usize,
    shards: usize,
    device: &Device,
    features: Option<&FittedFeatures>,
) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::with_capacity(records.len());
    let mut counts = Vec::with_capacity(records.len());
    // The document of every row (its windows share its metadata).
    let mut row_doc = Vec::with_capacity(records.len());
    for (d, r) in records.iter().enumerate() {
        let e = tokenizer
            .encode_long(&r.text, r.text_pair.as_deref(), opts, policy.long_text)
            .map_err(sequin_data::DataError::from)?;
        counts.push(e.len());
        row_doc.extend(std::iter::repeat_n(d, e.len()));
        rows.extend(e);
    }
    let meta = match (features, &model.fusion) {
        (Some(f), Some(_)) => Some((f, f.encode(Path::new("input"), 1, records)?)),
        _ => None,
    };
    let mut row_logits: Vec<Vec<f32>> = Vec::with_capacity(rows.len());
    for (part, docs) in rows
        .chunks(batch_size.max(1))
        .zip(row_doc.chunks(batch_size.max(1)))
    {
        // Row shards of the batch in parallel, each padded to its own longest row.
        let shards = crate::shard::sharded_map(part.len(), shards, |r| {
            let refs: Vec<_> = part[r.clone()].iter().collect();
            let b = EncodedBatch::from_rows(tokenizer, &refs, opts.pad_to_multiple_of, device);
            // (Rows, not documents: nothing to aggregate here.)
            let meta = meta.as_ref().map(|(f, enc)| f.batch(enc, &docs[r], device));
            let logits = doc_logits(model, b, Aggregate::Mean, meta);
            let k = logits.dims()[1];
            let flat: Vec<f32> = logits.into_data().try_into_vec_as().expect("f32 logits");
            flat.chunks(k).map(<[f32]>::to_vec).collect::<Vec<_>>()
        });
        row_logits.extend(shards.into_iter().flatten());
    }
    let mut out = Vec::with_capacity(records.len());
    let mut start = 0;
    for n in counts {
        let doc = &row_logits[start..start + n];
        start += n;
        let k = doc[0].len();
        out.push(match policy.aggregate {
            _ if n == 1 => doc[0].clone(),
            Aggregate::Mean => (0..k)
                .map(|j| doc.iter().map(|r| r[j]).sum::<f32>() / n as f32)
                .collect(),
            Aggregate::Max => (0..k)
                .map(|j| doc.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max))
                .collect(),
        });
    }
    Ok(out)
}

/// A sequence classifier with its tokenizer and label names, ready for inference.
pub struct Classifier {
    /// The model (inference mode: dropout off, no autodiff).
    pub model: Model,
    /// The fitted metadata transforms, when the model takes metadata.
    pub features: Option<FittedFeatures>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Class names in id order.
    pub labels: LabelMap,
    /// Its `config.json`.
    pub config: HfConfig,
    /// What loading did.
    pub report: LoadReport,
    /// The folder.
    pub dir: PathBuf,
    /// How inputs are fitted (from `sequin.json`, else truncation at the tokenizer's
    /// `model_max_length`).
    pub policy: InputPolicy,
    /// Row shards per batch run in parallel (see `shard`); 1 when loaded.
    pub shards: usize,
    device: Device,
}

/// Order of indices by decreasing text length, so that batches pad little.
pub(crate) fn length_order(records: &[Record]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..records.len()).collect();
    idx.sort_by_key(|&i| {
        std::cmp::Reverse(
            records[i].text.len() + records[i].text_pair.as_ref().map_or(0, |p| p.len()),
        )
    });
    idx
}

impl Classifier {
    /// Loads a sequence-classification folder (as sequin or transformers saved it).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (model, config, report, fusion) = load_model(dir, None, device)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        crate::check_vocab(&tokenizer, &config)?;
        let n = model.num_labels();
        let names = match &config.labels {
            Some(l) if l.len() == n => l.clone(),
            _ => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        };
        let policy = read_policy(dir, &config)?;
        Ok(Self {
            model: model.valid(),
            features: fusion.map(|f| f.features),
            tokenizer,
            labels: LabelMap::new(names),
            config,
            report,
            dir: dir.to_path_buf(),
            policy,
            shards: 1,
            device: device.clone(),
        })
    }

    /// Wraps an in-memory model.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        model: Model,
        features: Option<FittedFeatures>,
        tokenizer: Tokenizer,
        labels: LabelMap,
        config: HfConfig,
        dir: PathBuf,
        policy: InputPolicy,
        device: &Device,
    ) -> Self {
        Self {
            model: model.valid(),
            features,
            tokenizer,
            labels,
            config,
            report: LoadReport::default(),
            dir,
            policy,
            shards: 1,
            device: device.clone(),
        }
    }

    /// Encoding options from the policy, with an optional `max_length` override.
    pub fn encode_options(&self, max_length: Option<usize>) -> EncodeOptions {
        EncodeOptions {
            max_length: max_length.unwrap_or(self.policy.max_length),
            pad_to_multiple_of: None,
        }
    }

    /// Logits `[n, num_labels]` for records, in the order given; batches are formed by length.
    pub fn logits(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); records.len()];
        let order = length_order(records);
        let chunks = order.chunks(batch_size.max(1));
        let pb = crate::progress::bar(chunks.len() as u64, "predict");
        let policy = InputPolicy {
            max_length: opts.max_length,
            ..self.policy.clone()
        };
        for chunk in chunks {
            pb.inc(1);
            let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
            let logits = infer_docs(
                &self.model,
                &self.tokenizer,
                &recs,
                opts,
                &policy,
                batch_size,
                self.shards,
                &self.device,
                self.features.as_ref(),
            )?;
            for (l, &i) in logits.into_iter().zip(chunk) {
                out[i] = l;
            }
        }
        pb.finish_and_clear();
        Ok(out)
    }

    /// Predictions for records, in input order.
    pub fn predict(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        self.predict_with(records, opts, batch_size, None, None)
    }

    /// The folder's HF `problem_type` (single-label when unset, regression for one output).
    pub fn problem_type(&self) -> ProblemType {
        self.config
            .problem_type
            .unwrap_or(if self.model.num_labels() == 1 {
                ProblemType::Regression
            } else {
                ProblemType::SingleLabelClassification
            })
    }

    /// The score function transformers' pipeline applies by default: sigmoid for multi-label,
    /// none for regression (sequin reports the value), softmax otherwise.
    pub fn default_function(&self) -> ScoreFunction {
        match self.problem_type() {
            ProblemType::MultiLabelClassification => ScoreFunction::Sigmoid,
            ProblemType::Regression => ScoreFunction::None,
            ProblemType::SingleLabelClassification => ScoreFunction::Softmax,
        }
    }

    /// Predictions with a score function and, optionally, the best `top_k` classes per row
    /// (`usize::MAX` for all), as transformers' text-classification pipeline reports them.
    pub fn predict_with(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
        function: Option<ScoreFunction>,
        top_k: Option<usize>,
    ) -> Result<Vec<Prediction>> {
        let names = self.labels.names();
        let function = function.unwrap_or_else(|| self.default_function());
        let multi = self.problem_type() == ProblemType::MultiLabelClassification;
        let thresholds = self.policy.thresholds.clone();
        let logits = self.logits(records, opts, batch_size)?;
        Ok(logits
            .into_iter()
            .map(|l| {
                let scores = function.apply(&l);
                let mut order: Vec<usize> = (0..scores.len()).collect();
                order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
                let best = order[0];
                Prediction {
                    label: names[best].clone(),
                    score: scores[best],
                    top_k: top_k.map(|k| {
                        order
                            .iter()
                            .take(k)
                            .map(|&i| LabelScore {
                                label: names[i].clone(),
                                score: scores[i],
                            })
                            .collect()
                    }),
                    labels: multi.then(|| {
                        let probs = ScoreFunction::Sigmoid.apply(&l);
                        probs
                            .iter()
                            .enumerate()
                            .filter(|(j, p)| {
                                **p >= thresholds
                                    .as_ref()
                                    .and_then(|t| t.get(*j).copied())
                                    .unwrap_or(0.5)
                            })
                            .map(|(j, _)| names[j].clone())
                            .collect()
                    }),
                    logits: l,
                }
            })
            .collect())
    }

    /// Every metric on labelled records: accuracy, macro-F1, mean cross-entropy, micro and
    /// weighted F1, MCC, AUROC, the confusion matrix and per-class figures.
    pub fn evaluate(
        &self,
        records: &[Record],
        path: &Path,
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Report> {
        let targets = Targets::encode(self.problem_type(), &self.labels, records, path)?;
        let policy = InputPolicy {
            max_length: opts.max_length,
            ..self.policy.clone()
        };
        evaluate_model(
            &self.model,
            &self.tokenizer,
            records,
            &targets,
            self.labels.names(),
            &policy,
            batch_size,
            self.shards,
            &self.device,
            self.features.as_ref(),
        )
    }

    /// Reads a data file with these columns (and the model's metadata columns), checking the
    /// metadata cells.
    pub fn read(&self, path: &Path, cols: &Columns) -> Result<Vec<Record>> {
        let cols = Columns {
            features: self.feature_columns(),
            ..cols.clone()
        };
        let records = read_records(path, &cols)?;
        self.check_features(path, 1, &records)?;
        Ok(records)
    }

    /// The metadata columns the model reads (empty for a text-only model).
    pub fn feature_columns(&self) -> Vec<String> {
        self.features
            .as_ref()
            .map(FittedFeatures::columns)
            .unwrap_or_default()
    }

    /// Checks the metadata cells of records read from `path` (`first_row`: the 1-based row of
    /// `records[0]`), failing on a bad cell, and reports categories the model never saw: they
    /// go to the rare/unknown bucket. Returns the count of unknown values per column.
    pub fn check_features(
        &self,
        path: &Path,
        first_row: usize,
        records: &[Record],
    ) -> Result<Vec<(String, usize)>> {
        let Some(f) = &self.features else {
            return Ok(Vec::new());
        };
        let refs: Vec<&Record> = records.iter().collect();
        let enc = f.encode(path, first_row, &refs)?;
        Ok(f.categorical
            .iter()
            .zip(enc.unknown)
            .map(|(c, n)| (c.column.clone(), n))
            .collect())
    }
}

/// `fusion.json` in a model folder: the fusion head's shape and the fitted metadata transforms.
/// The head's weights are in `fusion.safetensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionFile {
    /// Format version (1).
    pub version: u32,
    /// The head.
    pub fusion: FusionConfig,
    /// The transforms, fitted on the training data.
    pub features: FittedFeatures,
}

/// The file name of [`FusionFile`].
pub const FUSION_FILE: &str = "fusion.json";
/// The file name of the fusion head's weights.
pub const FUSION_WEIGHTS: &str = "fusion.safetensors";

/// Loads a model folder: the HF classifier, and the fusion head when `fusion.json` is there.
pub fn load_model(
    dir: &Path,
    num_labels: Option<usize>,
    device: &Device,
) -> Result<(Model, HfConfig, LoadReport, Option<FusionFile>)> {
    let (text, config, report) = load_classifier(dir, num_labels, device)?;
    let path = dir.join(FUSION_FILE);
    let file: Option<FusionFile> = match std::fs::read_to_string(&path) {
        Ok(s) => Some(serde_json::from_str(&s).map_err(|e| {
            TrainError::Config(format!("{}: invalid fusion settings: {e}", path.display()))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(TrainError::Config(format!("{}: {e}", path.display())));
        }
    };
    let fusion = match &file {
        Some(f) => {
            let bad = |m: String| TrainError::Config(format!("{}: {m}", path.display()));
            if f.fusion.text_size != text.pooled_size() {
                return Err(bad(format!(
                    "the fusion head reads a {}-wide text vector, but the model's is {}",
                    f.fusion.text_size,
                    text.pooled_size()
                )));
            }
            if f.fusion.numeric_width != f.features.numeric_width()
                || f.fusion.categorical != f.features.categorical_dims()
            {
                return Err(bad(
                    "the fusion head's input widths do not match its fitted features".into(),
                ));
            }
            let head = f.fusion.init(device);
            Some(load_fusion_weights(&dir.join(FUSION_WEIGHTS), head)?)
        }
        None => None,
    };
    Ok((Model { text, fusion }, config, report, file))
}

fn read_policy(dir: &Path, config: &HfConfig) -> Result<InputPolicy> {
    let path = dir.join(POLICY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            TrainError::Config(format!("{}: invalid sequin settings: {e}", path.display()))
        }),
        // A folder transformers wrote: truncate at the tokenizer's model_max_length.
        Err(_) => {
            let from_tok = std::fs::read_to_string(dir.join("tokenizer_config.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .and_then(|v| v.get("model_max_length").and_then(|m| m.as_u64()))
                .map(|m| m as usize);
            Ok(InputPolicy {
                max_length: from_tok.unwrap_or(128).min(config.arch.max_length()),
                long_text: LongText::Truncate,
                aggregate: Aggregate::Mean,
                thresholds: None,
            })
        }
    }
}

/// Evaluates an inference-mode model on labelled records, streaming: a confusion matrix (or
/// per-label counts, or regression sums) and a loss sum are kept, not the predictions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_model(
    model: &Model,
    tokenizer: &Tokenizer,
    records: &[Record],
    targets: &Targets,
    labels: &[String],
    policy: &InputPolicy,
    batch_size: usize,
    shards: usize,
    device: &Device,
    features: Option<&FittedFeatures>,
) -> Result<Report> {
    let opts = EncodeOptions {
        max_length: policy.max_length,
        pad_to_multiple_of: None,
    };
    let k = labels.len();
    let mut conf = Confusion::new(k);
    let mut roc = RocAccumulator::new(k);
    let mut multi = MultiLabelAccumulator::new(
        policy
            .thresholds
            .clone()
            .filter(|t| t.len() == k)
            .unwrap_or_else(|| vec![0.5; k]),
    );
    let mut reg = RegressionAccumulator::default();
    let order = length_order(records);
    let chunks = order.chunks(batch_size.max(1));
    let pb = crate::progress::bar(chunks.len() as u64, "evaluate");
    for chunk in chunks {
        pb.inc(1);
        let recs: Vec<&Record> = chunk.iter().map(|&i| &records[i]).collect();
        let logits = infer_docs(
            model, tokenizer, &recs, opts, policy, batch_size, shards, device, features,
        )?;
        match targets.select(chunk) {
            Targets::Classes(ids) => {
                let mut probs = Vec::with_capacity(logits.len() * k);
                for (l, &t) in logits.iter().zip(&ids) {
                    // Cross-entropy from log-softmax, in f64.
                    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    let sum: f64 = l.iter().map(|&x| (x as f64 - max).exp()).sum();
                    conf.add_loss(sum.ln() + max - l[t] as f64);
                    probs.extend(l.iter().map(|&x| ((x as f64 - max).exp() / sum) as f32));
                }
                for (row, &t) in probs.chunks(k).zip(&ids) {
                    let pred = row
                        .iter()
                        .enumerate()
                        .fold(0, |best, (i, &p)| if p > row[best] { i } else { best });
                    conf.add(t, pred);
                    roc.add(t, row);
                }
            }
            Targets::MultiHot(rows) => {
                for (l, y) in logits.iter().zip(&rows) {
                    multi.add(l, y);
                }
            }
            Targets::Values(values) => {
                for (l, &y) in logits.iter().zip(&values) {
                    reg.add(l[0], y);
                }
            }
        }
    }
    pb.finish_and_clear();
    Ok(match targets {
        Targets::Classes(_) => conf.report(labels, Some(&roc)),
        Targets::MultiHot(_) => multi.report(labels),
        Targets::Values(_) => Report {
            summary: reg.metrics(),
            micro_f1: 0.0,
            weighted_f1: 0.0,
            macro_precision: 0.0,
            macro_recall: 0.0,
            mcc: 0.0,
            auroc: None,
            confusion: Vec::new(),
            per_class: Vec::new(),
        },
    })
}

/// Sigmoid probabilities `[n][k]` of records, in order (for threshold tuning).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sigmoid_probs(
    model: &Model,
    tokenizer: &Tokenizer,
    records: &[Record],
    policy: &InputPolicy,
    batch_size: usize,
    shards: usize,
    device: &Device,
    features: Option<&FittedFeatures>,
) -> Result<Vec<Vec<f32>>> {
    let opts = EncodeOptions {
        max_length: policy.max_length,
        pad_to_multiple_of: None,
    };
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(batch_size.max(1)) {
        let recs: Vec<&Record> = chunk.iter().collect();
        for l in infer_docs(
            model, tokenizer, &recs, opts, policy, batch_size, shards, device, features,
        )? {
            out.push(ScoreFunction::Sigmoid.apply(&l));
        }
    }
    Ok(out)
}
