//! A trained classifier folder, loaded for evaluation and prediction.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use sequin_data::{Columns, EmptyText, FittedFeatures, LabelMap, Record, read_records_with};
use sequin_heads::ProblemType;
use sequin_hf::{HfConfig, LoadReport};

pub use sequin_encoders::Precision;
/// The model: an HF sequence classifier, with a fusion head when it takes metadata.
pub use sequin_heads::Model;
use sequin_tokenize::{EncodeOptions, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::folder::{InputPolicy, load_adapted_model, read_policy};
use crate::inference::Inference;
use crate::metrics::Report;
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
    /// Whether scores use the folder's fitted temperature (on when loaded; see
    /// [`Self::temperature`]).
    pub calibrated: bool,
    device: Device,
    /// The encoder's linear layers in int8 or bf16 while this lives (see
    /// [`Self::set_precision`]).
    low_precision: Option<sequin_encoders::LowPrecisionLinears>,
}

/// What [`Classifier::from_parts`] wraps: an in-memory model and what it was trained with.
pub struct ClassifierParts {
    /// The model (any mode; it is switched to inference).
    pub model: Model,
    /// The fitted metadata transforms, when the model takes metadata.
    pub features: Option<FittedFeatures>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Class names in id order.
    pub labels: LabelMap,
    /// Its `config.json`.
    pub config: HfConfig,
    /// The folder it was saved to.
    pub dir: PathBuf,
    /// How inputs are fitted.
    pub policy: InputPolicy,
}

impl Classifier {
    /// Loads a sequence-classification folder (as sequin or transformers saved it).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_with_base(dir, None, device)
    }

    /// Loads a classifier folder, or a PEFT LoRA adapter folder (`adapter_config.json`) merged
    /// into its base model: `base` if given (a folder or a hub id), else the adapter's
    /// `base_model_name_or_path`. The tokenizer and `sequin.json` are the adapter folder's when
    /// it has them, else the base's.
    pub fn load_with_base(dir: &Path, base: Option<&str>, device: &Device) -> Result<Self> {
        let (model_dir, adapter) = match sequin_hf::is_adapter(dir) {
            true => {
                let cfg = sequin_hf::read_adapter_config(dir)?;
                (sequin_hf::resolve(&cfg.base(dir, base)?)?, Some(dir))
            }
            false => (dir.to_path_buf(), None),
        };
        let (model, config, report, fusion) =
            load_adapted_model(&model_dir, adapter, None, device)?;
        let own = |file: &str| dir.join(file).is_file();
        let tok_dir = match own("tokenizer.json") || own("vocab.txt") {
            true => dir,
            false => model_dir.as_path(),
        };
        let tokenizer = Tokenizer::from_dir(tok_dir)?;
        crate::check_vocab(&tokenizer, &config)?;
        let n = model.num_labels();
        let names = match &config.labels {
            Some(l) if l.len() == n => l.clone(),
            _ => (0..n).map(|i| format!("LABEL_{i}")).collect(),
        };
        let policy = match own(crate::folder::POLICY_FILE) {
            true => read_policy(dir, &config)?,
            false => read_policy(tok_dir, &config)?,
        };
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
            calibrated: true,
            device: device.clone(),
            low_precision: None,
        })
    }

    /// Sentence embeddings of `records`, one per record in order: a SetFit model's (the
    /// pooling and normalisation its head reads), else the mean of the real tokens of the
    /// body's last hidden state. Texts are truncated to `opts.max_length`.
    pub fn embeddings(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let embedding = self
            .model
            .sentence
            .as_ref()
            .map_or_else(Default::default, |s| s.embedding);
        crate::setfit::embed_all(
            &self.model.text,
            &self.tokenizer,
            records,
            embedding,
            opts,
            batch_size,
            &self.device,
        )
    }

    /// Writes this classifier as a plain Hugging Face folder (`config.json`,
    /// `model.safetensors`, the tokenizer, `sequin.json`, and a metadata model's fusion
    /// files), every file atomically: how an adapter loaded with [`Self::load_with_base`] is
    /// merged into a standalone model.
    pub fn save(&self, dir: &Path) -> Result<()> {
        // A fusion head's shape and fitted features are the loaded folder's `fusion.json`.
        let fusion = match self.model.fusion {
            Some(_) => Some(crate::folder::read_fusion_file(&self.dir)?.ok_or_else(|| {
                TrainError::Config(format!(
                    "{}: a metadata model without its {}",
                    self.dir.display(),
                    crate::folder::FUSION_FILE
                ))
            })?),
            None => None,
        };
        let writer = crate::folder::FolderWriter {
            base_config: &self.config,
            labels: self.labels.names(),
            problem: self.problem_type(),
            tokenizer: &self.tokenizer,
            max_length: self.policy.max_length,
            fusion: fusion.as_ref().map(|f| (&f.fusion, &f.features)),
            lora: None,
        };
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        writer.write(dir, &self.model, &self.policy)
    }

    /// Wraps an in-memory model.
    pub fn from_parts(parts: ClassifierParts, device: &Device) -> Self {
        Self {
            model: parts.model.valid(),
            features: parts.features,
            tokenizer: parts.tokenizer,
            labels: parts.labels,
            config: parts.config,
            report: LoadReport::default(),
            dir: parts.dir,
            policy: parts.policy,
            shards: 1,
            calibrated: true,
            device: device.clone(),
            low_precision: None,
        }
    }

    /// Runs the encoder's linear layers at `precision` from now on: `Int8` quantizes their
    /// weights per output channel (once, at first use) and their inputs per row, as
    /// `torch.ao.quantization.quantize_dynamic` does; `Bf16` rounds weights and inputs to
    /// bfloat16 and accumulates in `f32`. The embeddings, LayerNorms, softmax and head stay
    /// `f32`. These kernels run on the CPU backend only: on another device the layers stay
    /// `f32` whatever this says (the CLI refuses `--precision int8|bf16` there).
    pub fn set_precision(&mut self, precision: Precision) {
        self.low_precision = (precision != Precision::Fp32)
            .then(|| sequin_encoders::LowPrecisionLinears::mark(&self.model, precision));
    }

    /// The precision set by [`Self::set_precision`].
    pub fn precision(&self) -> Precision {
        self.low_precision
            .as_ref()
            .map_or(Precision::Fp32, |l| l.precision())
    }

    /// Encoding options from the policy, with an optional `max_length` override (not
    /// checked: see [`Self::checked_options`]; inference checks it when it runs).
    pub fn encode_options(&self, max_length: Option<usize>) -> EncodeOptions {
        EncodeOptions {
            max_length: max_length.unwrap_or(self.policy.max_length),
            pad_to_multiple_of: None,
        }
    }

    /// As [`Self::encode_options`], failing when `max_length` exceeds the model's position
    /// table.
    pub fn checked_options(&self, max_length: Option<usize>) -> Result<EncodeOptions> {
        let opts = self.encode_options(max_length);
        self.check_max_length(opts.max_length)?;
        Ok(opts)
    }

    fn check_max_length(&self, max_length: usize) -> Result<()> {
        let limit = self.config.arch.max_length();
        if max_length > limit {
            return Err(TrainError::Config(format!(
                "--max-length {max_length} exceeds the {limit} positions the model's max_position_embeddings allows"
            )));
        }
        Ok(())
    }

    /// Logits `[n, num_labels]` for records, in the order given; batches are formed by length.
    pub fn logits(
        &self,
        records: &[Record],
        opts: EncodeOptions,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        let policy = self.policy_for(opts)?;
        self.inference(&policy, batch_size)
            .logits(records, "predict")
    }

    /// The saved policy with `opts`' `max_length` (checked against the model).
    pub fn policy_for(&self, opts: EncodeOptions) -> Result<InputPolicy> {
        self.check_max_length(opts.max_length)?;
        Ok(InputPolicy {
            max_length: opts.max_length,
            ..self.policy.clone()
        })
    }

    /// This classifier's inference context under `policy`, `batch_size` rows at a time.
    pub fn inference<'a>(&'a self, policy: &'a InputPolicy, batch_size: usize) -> Inference<'a> {
        Inference {
            model: &self.model,
            tokenizer: &self.tokenizer,
            features: self.features.as_ref(),
            policy,
            batch_size,
            shards: self.shards,
            device: &self.device,
            temperature: self.temperature(),
        }
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
        let logits = self.logits(records, opts, batch_size)?;
        Ok(self.predictions(logits, function, top_k))
    }

    /// The temperature the scores are divided by: the folder's fitted one (`sequin.json`'s
    /// `calibration`) for a single-label model unless [`Self::calibrated`] is off, else 1.
    pub fn temperature(&self) -> f32 {
        match (
            &self.policy.calibration,
            self.calibrated,
            self.problem_type(),
        ) {
            (Some(c), true, ProblemType::SingleLabelClassification) => c.temperature,
            _ => 1.0,
        }
    }

    /// Predictions from logits (one row per record): the score function (default: the
    /// folder's problem type), applied to the logits divided by [`Self::temperature`] for
    /// softmax; the best `top_k` classes; and, for a multi-label model, the labels whose
    /// sigmoid probability reaches its saved threshold. `logits` stay raw.
    pub fn predictions(
        &self,
        logits: Vec<Vec<f32>>,
        function: Option<ScoreFunction>,
        top_k: Option<usize>,
    ) -> Vec<Prediction> {
        let function = function.unwrap_or_else(|| self.default_function());
        let t = match function {
            ScoreFunction::Softmax => self.temperature(),
            _ => 1.0,
        };
        logits
            .into_iter()
            .map(|l| self.prediction(l, function, t, top_k))
            .collect()
    }

    /// One row of [`Self::predictions`].
    fn prediction(
        &self,
        l: Vec<f32>,
        function: ScoreFunction,
        temperature: f32,
        top_k: Option<usize>,
    ) -> Prediction {
        let names = self.labels.names();
        let scores = if temperature == 1.0 {
            function.apply(&l)
        } else {
            let scaled: Vec<f32> = l.iter().map(|x| x / temperature).collect();
            function.apply(&scaled)
        };
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let best = order[0];
        let multi = self.problem_type() == ProblemType::MultiLabelClassification;
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
                (0..probs.len())
                    .filter(|&j| probs[j] >= self.threshold(j))
                    .map(|j| names[j].clone())
                    .collect()
            }),
            logits: l,
        }
    }

    /// The decision threshold of label `j` of a multi-label model (0.5 when none was saved).
    pub fn threshold(&self, j: usize) -> f32 {
        self.policy
            .thresholds
            .as_ref()
            .and_then(|t| t.get(j).copied())
            .unwrap_or(0.5)
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
        let policy = self.policy_for(opts)?;
        self.inference(&policy, batch_size)
            .evaluate(records, &targets, self.labels.names())
    }

    /// The columns to read for inference: each one given, else the one the model was trained
    /// on (its saved schema), else the default (`text`, `label`). `labelled`: whether to read
    /// labels (eval) or not (predict). The metadata columns are always the model's.
    pub fn columns(&self, given: ColumnChoice, labelled: bool) -> Columns {
        let schema = self.policy.schema.as_ref();
        let text = given
            .text
            .or_else(|| schema.map(|s| s.text_column.clone()))
            .unwrap_or_else(|| "text".into());
        let text_pair = given
            .text_pair
            .or_else(|| schema.and_then(|s| s.text_pair_column.clone()));
        let (label, label_columns) = match (labelled, given.label, given.label_columns) {
            (false, _, _) => (None, Vec::new()),
            (true, _, cols) if !cols.is_empty() => (None, cols),
            (true, Some(l), _) => (Some(l), Vec::new()),
            (true, None, _) => match schema {
                Some(s) if !s.label_columns.is_empty() => (None, s.label_columns.clone()),
                Some(s) => (
                    Some(s.label_column.clone().unwrap_or_else(|| "label".into())),
                    Vec::new(),
                ),
                None => (Some("label".into()), Vec::new()),
            },
        };
        Columns {
            text,
            text_pair,
            label,
            label_columns,
            features: self.feature_columns(),
        }
    }

    /// Reads a data file with these columns (and the model's metadata columns), checking the
    /// metadata cells.
    pub fn read(&self, path: &Path, cols: &Columns) -> Result<Vec<Record>> {
        let cols = Columns {
            features: self.feature_columns(),
            ..cols.clone()
        };
        let records = read_records_with(path, &cols, EmptyText::Keep)?;
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

/// Columns named on the command line (or by a caller) for inference; `None` or empty where
/// the model's saved schema should decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnChoice {
    /// The text column.
    pub text: Option<String>,
    /// The second text of a pair.
    pub text_pair: Option<String>,
    /// The label column.
    pub label: Option<String>,
    /// Multi-label 0/1 columns.
    pub label_columns: Vec<String>,
}
