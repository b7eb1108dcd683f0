//! The `sequin` command (library part, so that tests can drive it in-process): fine-tune, evaluate and run Hugging Face sequence classifiers.
//!
//! The backend is picked here and only here, by Cargo feature: `cpu` (burn's flex, the
//! default), `wgpu` or `cuda`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use sequin_data::Columns;
use sequin_fs::AtomicFile;
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, TrainConfig};
use serde_json::{Map, Value};

#[derive(Parser)]
#[command(
    name = "sequin",
    version,
    about = "Fine-tune a Hugging Face encoder into a sequence classifier, evaluate it, and predict with it.",
    long_about = "Fine-tune a Hugging Face encoder into a sequence classifier, evaluate it, and \
predict with it.\n\nModel folders are read and written in Hugging Face layout (config.json, \
model.safetensors, tokenizer.json), so transformers loads what sequin trains and sequin runs \
what transformers saved. Data files are Parquet, CSV/TSV or JSONL; columns are chosen by name.\n\n\
Backend of this build: see `sequin --version` and the Cargo features cpu | wgpu | cuda."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Fine-tune a model on labelled data and write a Hugging Face model folder.
    Train(TrainArgs),
    /// Evaluate a classifier folder on labelled data; prints one JSON object.
    Eval(EvalArgs),
    /// Predict labels for a data file; writes one JSON object per row, in input order.
    Predict(PredictArgs),
    /// Hyperparameter search: train one run per point of a grid (or a random sample of it)
    /// into OUTPUT/trial-NNN, and write OUTPUT/tune_results.md and .json sorted by the
    /// validation metric, the best marked.
    Tune(TuneArgs),
    /// Write an augmented copy of a data file: every row, plus N variants of it made by an
    /// augmentation pipeline (EDA by default), with provenance columns `source_row` and
    /// `augmentation` (the operations that fired, or `original`).
    Augment(AugmentArgs),
}

#[derive(Args)]
struct AugmentArgs {
    /// Data file to augment (.parquet, .csv, .tsv, .jsonl). Columns other than the text and
    /// label ones (metadata) are copied to every variant, as text.
    #[arg(long)]
    input: PathBuf,
    /// Output file (.parquet, .csv or .jsonl).
    #[arg(long)]
    output: PathBuf,
    /// Pipeline: `eda` (EDA with alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1), `noise`
    /// (keyboard typos, character swaps and deletions), `aeda` (punctuation insertion), or a
    /// JSON file holding a pipeline.
    #[arg(long, default_value = "eda")]
    spec: String,
    /// Variants per row.
    #[arg(long, default_value_t = 4)]
    num_aug: usize,
    /// Seed of the augmentation RNG.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Words never touched (comma-separated).
    #[arg(long, value_delimiter = ',')]
    protect: Vec<String>,
    #[command(flatten)]
    columns: ColumnArgs,
    /// Label column carried over to the variants (a list column stays a list).
    #[arg(long, default_value = "label")]
    label_column: String,
    /// The input has no label column.
    #[arg(long)]
    no_label: bool,
}

fn augment_spec(spec: &str) -> Result<sequin_augment::Pipeline> {
    use sequin_augment::{Op, Pipeline};
    let p = match spec {
        "eda" => Pipeline::eda(0.1, 0.1, 0.1, 0.1),
        "noise" => Pipeline::OneOf {
            steps: vec![
                Pipeline::Op(Op::KeyboardTypo { p: 0.1 }),
                Pipeline::Op(Op::CharSwap { p: 0.1 }),
                Pipeline::Op(Op::CharDeletion { p: 0.1 }),
            ],
        },
        "aeda" => Pipeline::Op(Op::Punctuation),
        path => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("--spec {path}: not `eda`, `noise` or `aeda`, and not a readable file")
            })?;
            serde_json::from_str(&text)
                .with_context(|| format!("{path}: not a valid augmentation pipeline"))?
        }
    };
    p.validate()?;
    Ok(p)
}

fn augment(a: AugmentArgs) -> Result<usize> {
    use rand::SeedableRng;
    let pipeline = augment_spec(&a.spec)?;
    let mut cols = Columns {
        text: a.columns.text_column.clone(),
        text_pair: a.columns.text_pair_column.clone(),
        label: (!a.no_label).then(|| a.label_column.clone()),
        label_columns: Vec::new(),
        features: Vec::new(),
    };
    // Every other column (metadata) is carried over to the variants, as text.
    cols.features = sequin_data::column_names(&a.input)?
        .into_iter()
        .filter(|c| {
            *c != cols.text
                && Some(c) != cols.text_pair.as_ref()
                && Some(c) != cols.label.as_ref()
                && c != "source_row"
                && c != "augmentation"
        })
        .collect();
    let records = sequin_data::read_records(&a.input, &cols)?;
    let aug = sequin_augment::Augmenter::new().with_protected(a.protect.clone());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let mut rows: Vec<(usize, String, sequin_data::Record)> = Vec::new();
    let pb = indicatif::ProgressBar::new(records.len() as u64);
    for (i, r) in records.iter().enumerate() {
        rows.push((i + 1, "original".into(), r.clone()));
        for _ in 0..a.num_aug {
            let out = aug.apply(&r.text, &pipeline, &mut rng);
            let mut v = r.clone();
            v.text = out.text;
            let ops = if out.ops.is_empty() {
                "unchanged".to_string()
            } else {
                out.ops.join("+")
            };
            rows.push((i + 1, ops, v));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    write_augmented(&a.output, &cols, &rows)?;
    Ok(rows.len())
}

/// Writes augmented rows as JSONL, CSV or Parquet (by extension), atomically.
fn write_augmented(
    path: &Path,
    cols: &Columns,
    rows: &[(usize, String, sequin_data::Record)],
) -> Result<()> {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringBuilder, UInt64Builder};
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let label = cols.label.as_deref();
    let pair = cols.text_pair.as_deref();
    let lists = rows.iter().any(|r| r.2.labels.is_some());
    let bytes: Vec<u8> = match ext.as_str() {
        "jsonl" | "json" => {
            let mut out = Vec::new();
            for (src, ops, r) in rows {
                let mut m = serde_json::Map::new();
                m.insert(cols.text.clone(), r.text.clone().into());
                if let Some(p) = pair {
                    m.insert(p.into(), r.text_pair.clone().into());
                }
                if let Some(l) = label {
                    let v = match &r.labels {
                        Some(ls) => serde_json::Value::from(ls.clone()),
                        None => r.label.clone().into(),
                    };
                    m.insert(l.into(), v);
                }
                for (c, v) in cols.features.iter().zip(&r.features) {
                    m.insert(c.clone(), v.clone().into());
                }
                m.insert("source_row".into(), (*src).into());
                m.insert("augmentation".into(), ops.clone().into());
                out.extend(serde_json::to_vec(&m)?);
                out.push(b'\n');
            }
            out
        }
        "csv" | "tsv" => {
            if lists {
                bail!(
                    "{}: list labels cannot be written as CSV; write .jsonl or .parquet",
                    path.display()
                );
            }
            let mut w = csv::WriterBuilder::new()
                .delimiter(if ext == "tsv" { b'\t' } else { b',' })
                .from_writer(Vec::new());
            let mut header = vec![cols.text.as_str()];
            header.extend(pair);
            header.extend(label);
            header.extend(cols.features.iter().map(String::as_str));
            header.extend(["source_row", "augmentation"]);
            w.write_record(&header)?;
            for (src, ops, r) in rows {
                let mut rec = vec![r.text.clone()];
                if pair.is_some() {
                    rec.push(r.text_pair.clone().unwrap_or_default());
                }
                if label.is_some() {
                    rec.push(r.label.clone().unwrap_or_default());
                }
                rec.extend(r.features.iter().map(|v| v.clone().unwrap_or_default()));
                rec.push(src.to_string());
                rec.push(ops.clone());
                w.write_record(&rec)?;
            }
            w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?
        }
        "parquet" => {
            let mut text = StringBuilder::new();
            let mut pairs = StringBuilder::new();
            let mut labels = StringBuilder::new();
            let mut label_lists = ListBuilder::new(StringBuilder::new());
            let mut src_col = UInt64Builder::new();
            let mut ops_col = StringBuilder::new();
            let mut extra: Vec<StringBuilder> =
                cols.features.iter().map(|_| StringBuilder::new()).collect();
            for (src, ops, r) in rows {
                for (b, v) in extra.iter_mut().zip(&r.features) {
                    b.append_option(v.as_deref());
                }
                text.append_value(&r.text);
                pairs.append_option(r.text_pair.as_deref());
                labels.append_option(r.label.as_deref());
                match &r.labels {
                    Some(ls) => {
                        for l in ls {
                            label_lists.values().append_value(l);
                        }
                        label_lists.append(true);
                    }
                    None => label_lists.append(false),
                }
                src_col.append_value(*src as u64);
                ops_col.append_value(ops);
            }
            let mut columns: Vec<(&str, ArrayRef)> =
                vec![(cols.text.as_str(), Arc::new(text.finish()))];
            if let Some(p) = pair {
                columns.push((p, Arc::new(pairs.finish())));
            }
            if let Some(l) = label {
                if lists {
                    columns.push((l, Arc::new(label_lists.finish())));
                } else {
                    columns.push((l, Arc::new(labels.finish())));
                }
            }
            for (c, mut b) in cols.features.iter().zip(extra) {
                columns.push((c.as_str(), Arc::new(b.finish())));
            }
            columns.push(("source_row", Arc::new(src_col.finish())));
            columns.push(("augmentation", Arc::new(ops_col.finish())));
            let batch = RecordBatch::try_from_iter(columns)?;
            let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None)?;
            w.write(&batch)?;
            w.into_inner()?
        }
        _ => bail!(
            "{}: unknown output format; expected .parquet, .csv, .tsv or .jsonl",
            path.display()
        ),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    sequin_hf::write_atomic(path, &bytes)?;
    Ok(())
}

#[derive(Args)]
struct TuneArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Try every combination of the values given.
    #[arg(long, conflicts_with = "random")]
    grid: bool,
    /// Try N combinations drawn at random (seeded by --seed) from the grid.
    #[arg(long)]
    random: Option<usize>,
    /// Learning rates to try (comma-separated).
    #[arg(long, value_delimiter = ',')]
    lr_values: Vec<f64>,
    /// Batch sizes to try.
    #[arg(long, value_delimiter = ',')]
    batch_size_values: Vec<usize>,
    /// Epoch counts to try.
    #[arg(long, value_delimiter = ',')]
    epochs_values: Vec<usize>,
    /// Warmup ratios to try.
    #[arg(long, value_delimiter = ',')]
    warmup_ratio_values: Vec<f64>,
    /// Weight decays to try.
    #[arg(long, value_delimiter = ',')]
    weight_decay_values: Vec<f64>,
    /// Validation metric that ranks the trials [default: --metric-for-best-model, else
    /// accuracy].
    #[arg(long, value_parser = ["accuracy", "macro_f1", "micro_f1", "loss", "r2"])]
    metric: Option<String>,
}

#[derive(Args)]
struct ColumnArgs {
    /// Column with the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column with the second text of a pair (rows where it is null are encoded alone).
    #[arg(long)]
    text_pair_column: Option<String>,
}

#[derive(Args)]
struct TrainArgs {
    /// Base model: a local folder (config.json, model.safetensors, tokenizer.json or vocab.txt)
    /// or a Hugging Face Hub id such as sentence-transformers/all-MiniLM-L6-v2.
    #[arg(long)]
    model: Option<String>,
    /// Training data (.parquet, .csv, .tsv, .jsonl). Its labels define the label set.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Validation data, evaluated after every epoch; the best epoch's weights are kept.
    #[arg(long)]
    validation: Option<PathBuf>,
    /// Test data, evaluated once at the end with the kept weights.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Output folder for the trained model (Hugging Face layout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Column with the text [default: text].
    #[arg(long)]
    text_column: Option<String>,
    /// Column with the second text of a pair.
    #[arg(long)]
    text_pair_column: Option<String>,
    /// Column with the label (strings or integers) [default: label].
    #[arg(long)]
    label_column: Option<String>,
    /// Number of epochs [default: 2].
    #[arg(long)]
    epochs: Option<usize>,
    /// Training batch size [default: 32].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate of AdamW [default: 5e-5].
    #[arg(long)]
    lr: Option<f64>,
    /// AdamW weight decay, not applied to biases and LayerNorm [default: 0.01].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Fraction of the steps spent warming the learning rate up linearly; it then decays
    /// linearly to zero [default: 0.1].
    #[arg(long)]
    warmup_ratio: Option<f64>,
    /// Maximum tokens per example, special tokens included; longer texts are truncated
    /// (pairs longest-first) [default: 128].
    #[arg(long)]
    max_length: Option<usize>,
    /// Seed for head initialisation, dropout and shuffling [default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many optimizer steps (smoke tests).
    #[arg(long)]
    max_steps: Option<usize>,
    #[command(flatten)]
    long: LongTextArgs,
    /// Batch training examples in random order instead of grouping similar lengths (grouping
    /// pads less and trains faster; the examples seen per epoch are the same). Grouping is
    /// off by default with --augment offline, whose variants would share batches.
    #[arg(long, conflicts_with = "group_by_length")]
    no_group_by_length: bool,
    /// Group training batches by length even with --augment offline.
    #[arg(long)]
    group_by_length: bool,
    /// Split each batch into this many row shards whose forward and backward passes run in
    /// parallel. On the CPU most element-wise work of a step is single-threaded, so shards keep
    /// every core busy (measured: +45% training throughput on 2 cores, README). The gradient is
    /// the batch's, up to float rounding; mixup runs as one shard. [default: 4 on the CPU
    /// backend, 1 on GPUs]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    shards: Option<u64>,
    /// Use only this many training examples (a seeded random subset).
    #[arg(long)]
    max_train_samples: Option<usize>,
    /// Sum the gradients of this many batches before each optimizer step (an effective batch
    /// of --batch-size × N) [default: 1].
    #[arg(long)]
    gradient_accumulation_steps: Option<usize>,
    /// Learning-rate schedule after warmup [default: linear].
    #[arg(long, value_parser = ["linear", "cosine", "constant"])]
    lr_scheduler: Option<String>,
    /// Layer-wise learning-rate decay in (0, 1]: the top encoder layer trains at --lr, each
    /// layer below at this factor times the one above, the embeddings lowest [default: off].
    #[arg(long)]
    layer_lr_decay: Option<f64>,
    /// Learning rate of the classification head (and pooler) [default: --lr].
    #[arg(long)]
    head_lr: Option<f64>,
    /// Evaluate on --validation and write a checkpoint every N optimizer steps
    /// [default: after every epoch].
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Validation metric that picks the kept model and drives early stopping: accuracy,
    /// macro_f1 (higher is better) or loss (lower is better) [default: accuracy].
    #[arg(long, value_parser = ["accuracy", "macro_f1", "loss"])]
    metric_for_best_model: Option<String>,
    /// Stop after N evaluations without improvement [default: never].
    #[arg(long)]
    early_stopping_patience: Option<usize>,
    /// The least change in the metric that counts as an improvement [default: 0].
    #[arg(long)]
    early_stopping_min_delta: Option<f64>,
    /// Checkpoints kept besides the last one (the best ones) [default: 1].
    #[arg(long)]
    save_total_limit: Option<usize>,
    /// HF problem type: single_label_classification, multi_label_classification (BCE; labels
    /// as a list column or --label-columns) or regression (MSE on a numeric label)
    /// [default: multi-label when the labels are lists, else single-label].
    #[arg(long, value_parser = ["single_label_classification", "multi_label_classification", "regression"])]
    problem_type: Option<String>,
    /// Multi-label data as 0/1 columns, one per label (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    label_columns: Vec<String>,
    /// Multi-label: choose each label's threshold on --validation for F1 (else 0.5); saved
    /// with the model and used by eval and predict.
    #[arg(long)]
    tune_thresholds: bool,
    /// Class weights in the loss: `auto` (inverse class frequency; multi-label: each label's
    /// negatives/positives as BCE's pos_weight) or comma-separated weights in label order.
    #[arg(long)]
    class_weights: Option<String>,
    /// Training loss: `auto` (HF's for the problem type) or `focal` (single-label).
    #[arg(long, value_parser = ["auto", "focal"])]
    loss: Option<String>,
    /// Focal loss γ [default: 2].
    #[arg(long)]
    focal_gamma: Option<f64>,
    /// `random` (each example once per epoch) or `balanced` (draws with replacement, each
    /// class equally likely; single-label) [default: random].
    #[arg(long, value_parser = ["random", "balanced"])]
    sampler: Option<String>,
    /// Without --validation: hold out this fraction of --train, stratified by label.
    #[arg(long)]
    validation_split: Option<f64>,
    /// Augment the training data (never validation or test): `offline` adds --num-aug
    /// variants of every example once; `per-epoch` replaces each example by a fresh variant
    /// every epoch.
    #[arg(long, value_parser = ["offline", "per-epoch"])]
    augment: Option<String>,
    /// The augmentation pipeline: `eda`, `noise`, `aeda` or a JSON file [default: eda].
    #[arg(long)]
    augment_spec: Option<String>,
    /// Offline augmentation: variants per example [default: 4].
    #[arg(long)]
    num_aug: Option<usize>,
    /// Single-label: add augmented variants (--augment-spec) of rare classes' examples until
    /// every class is as large as the largest. Alone, it adds nothing else.
    #[arg(long)]
    oversample: bool,
    /// Numeric metadata columns (comma-separated), fused with the text (see --fusion).
    #[arg(long, value_delimiter = ',', help_heading = "Metadata")]
    numeric_columns: Vec<String>,
    /// Categorical metadata columns: a vocabulary fitted on --train (values seen fewer than
    /// --min-category-count times, and unseen ones, share a rare/unknown bucket) and an
    /// embedding per column.
    #[arg(long, value_delimiter = ',', help_heading = "Metadata")]
    categorical_columns: Vec<String>,
    /// Date metadata columns (yyyy-mm-dd...): year, month, day of week and days since the
    /// earliest training date become numeric features.
    #[arg(long, value_delimiter = ',', help_heading = "Metadata")]
    date_columns: Vec<String>,
    /// Numeric transform, fitted on --train: standard, log1p+standard (counts, long tails)
    /// or quantile-normal [default: standard]. Nulls get the training mean plus a missing
    /// indicator; NaN is an error.
    #[arg(long, value_parser = ["standard", "log1p+standard", "quantile-normal"], help_heading = "Metadata")]
    numeric_transform: Option<String>,
    /// Least training count for a category to get its own id [default: 2].
    #[arg(long, help_heading = "Metadata")]
    min_category_count: Option<usize>,
    /// Embedding width of each categorical column [default: min(50, round(1.6·n^0.56))].
    #[arg(long, help_heading = "Metadata")]
    category_embedding_dim: Option<usize>,
    /// How metadata joins the pooled text vector: text-only (ignore it), concat (project to
    /// the hidden size and concatenate), mlp-concat, gating (Rahman et al. 2020), attention
    /// (the text attends over one token per feature) or weighted-sum [default: concat when
    /// metadata columns are given]. The text model stays in HF layout; the head and the
    /// fitted transforms are saved beside it (fusion.json, fusion.safetensors).
    #[arg(long, value_parser = ["text-only", "concat", "mlp-concat", "gating", "attention", "weighted-sum"], help_heading = "Metadata")]
    fusion: Option<String>,
    /// Embedding mixup: mix each batch's pooled text vectors and targets with a shuffled copy,
    /// λ ~ Beta(α, α), and train on the soft labels (0.2–0.4 is usual). Never on token ids.
    #[arg(long, value_name = "ALPHA")]
    mixup_alpha: Option<f64>,
    /// Continue the run in this folder from its last checkpoint (checkpoints/checkpoint-N),
    /// with its saved options. Other options may be repeated but must not differ; the data
    /// files must be unchanged.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// A JSON file with any of the options above (snake_case keys); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// How texts longer than --max-length are fitted.
#[derive(Args, Default)]
struct LongTextArgs {
    /// How to fit texts longer than --max-length: `truncate` (keep the start, the default),
    /// `head-tail` (keep the first --head-tokens and the last --tail-tokens), or `chunk`
    /// (overlapping windows whose logits are aggregated). `train` saves it with the model;
    /// `eval` and `predict` apply the saved one unless given here.
    #[arg(long, value_parser = ["truncate", "head-tail", "chunk"])]
    long_text: Option<String>,
    /// head-tail: tokens kept from the start [default: a quarter of the content tokens].
    #[arg(long)]
    head_tokens: Option<usize>,
    /// head-tail: tokens kept from the end [default: the rest of the content tokens].
    #[arg(long)]
    tail_tokens: Option<usize>,
    /// chunk: tokens shared by consecutive windows [default: a quarter of --max-length].
    #[arg(long)]
    chunk_stride: Option<usize>,
    /// chunk: the most windows per text [default: 8].
    #[arg(long)]
    max_chunks: Option<usize>,
    /// chunk: which windows a longer text keeps: `first` (its start) or `spread` (evenly from
    /// its first window to its last) [default: first].
    #[arg(long, value_parser = ["first", "spread"])]
    chunk_select: Option<String>,
    /// chunk: how window logits become the text's logits [default: mean].
    #[arg(long, value_parser = ["mean", "max"])]
    aggregate: Option<String>,
}

impl LongTextArgs {
    /// The policy these flags ask for, as the JSON of `LongText`, with defaults resolved for
    /// `max_length`. `None` when no policy is named (then the other flags are an error).
    fn policy(&self, max_length: usize) -> Result<Option<Value>> {
        let content = max_length.saturating_sub(2);
        let Some(policy) = self.long_text.as_deref() else {
            if self.head_tokens.is_some()
                || self.tail_tokens.is_some()
                || self.chunk_stride.is_some()
                || self.max_chunks.is_some()
                || self.chunk_select.is_some()
            {
                bail!(
                    "--head-tokens, --tail-tokens, --chunk-stride, --max-chunks and --chunk-select need --long-text head-tail or chunk"
                );
            }
            return Ok(None);
        };
        Ok(Some(match policy {
            "head-tail" => {
                let head = self.head_tokens.unwrap_or(content / 4);
                let tail = self.tail_tokens.unwrap_or(content.saturating_sub(head));
                serde_json::json!({"policy": "head-tail", "head": head, "tail": tail})
            }
            "chunk" => serde_json::json!({
                "policy": "chunk",
                "stride": self.chunk_stride.unwrap_or(max_length / 4),
                "max_chunks": self.max_chunks.unwrap_or(8),
                "select": self.chunk_select.as_deref().unwrap_or("first"),
            }),
            _ => serde_json::json!({"policy": "truncate"}),
        }))
    }

    /// Overrides a loaded classifier's saved policy with the flags given.
    fn apply(&self, c: &mut Classifier, max_length: usize) -> Result<()> {
        if let Some(v) = self.policy(max_length)? {
            c.policy.long_text = serde_json::from_value(v).context("--long-text")?;
        }
        if let Some(a) = &self.aggregate {
            c.policy.aggregate =
                serde_json::from_value(Value::from(a.as_str())).context("--aggregate")?;
        }
        Ok(())
    }
}

#[derive(Args)]
struct EvalArgs {
    /// Classifier folder (saved by sequin or by transformers).
    #[arg(long)]
    model: PathBuf,
    /// Labelled data file.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    columns: ColumnArgs,
    /// Column with the label.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Multi-label data as 0/1 columns, one per label (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    label_columns: Vec<String>,
    /// Maximum tokens per example [default: the folder's model_max_length, else 128].
    #[arg(long)]
    max_length: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Row shards per batch run in parallel (as `train --shards`). [default: 4 on the CPU
    /// backend, 1 on GPUs]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    shards: Option<u64>,
    #[command(flatten)]
    long: LongTextArgs,
}

#[derive(Args)]
struct PredictArgs {
    /// Classifier folder (saved by sequin or by transformers).
    #[arg(long)]
    model: PathBuf,
    /// Data file to classify.
    #[arg(long)]
    input: PathBuf,
    /// Output file, `.jsonl` ({"label", "score", "logits"} per input row, in input order) or
    /// `.parquet` (the same as columns). Written as the input is read, 4096 rows at a time.
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    columns: ColumnArgs,
    /// Maximum tokens per example [default: the folder's model_max_length, else 128].
    #[arg(long)]
    max_length: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Row shards per batch run in parallel (as `train --shards`). [default: 4 on the CPU
    /// backend, 1 on GPUs]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    shards: Option<u64>,
    /// Also write the best N classes per row with their scores (`all` for every class).
    #[arg(long, value_parser = parse_top_k)]
    top_k: Option<usize>,
    /// How logits become scores [default: as transformers' pipeline: softmax for single-label,
    /// sigmoid for multi-label; none (the value) for regression].
    #[arg(long, value_parser = ["softmax", "sigmoid", "none"])]
    function: Option<String>,
    #[command(flatten)]
    long: LongTextArgs,
}

fn parse_top_k(s: &str) -> std::result::Result<usize, String> {
    if s == "all" {
        return Ok(usize::MAX);
    }
    match s.parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("expected a positive number or `all`, got `{s}`")),
        Ok(n) => Ok(n),
    }
}

/// Keeps freed memory in the process instead of handing it back to the kernel.
///
/// A training step allocates and frees many large tensors; with glibc's defaults each of them
/// is a fresh `mmap`, and the kernel zeroes every page again (`clear_page_erms` was 14% of a
/// MiniLM step). Raising the mmap threshold and never trimming the heap (as
/// `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` would) made training about 30% faster
/// here; the heap then grows to the step's peak once and stays there. With row shards
/// (`--shards`) tensors are allocated on every rayon thread, and glibc's per-thread arenas grow
/// and drop heaps of their own (page zeroing again, and more memory): one arena, as
/// `MALLOC_ARENA_MAX=1`, measured 5% faster and 13% smaller. Binaries call this first; it does
/// nothing off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The one place where a backend is chosen (by Cargo feature).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        Device::wgpu(Default::default())
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        Device::flex()
    }
}

/// The backend this build runs on.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else if avx512() {
        "cpu (flex, AVX-512 gemm)"
    } else {
        "cpu (flex)"
    }
}

/// Row shards per batch when neither `--shards` nor a saved config says: 4 on the CPU (where
/// they keep both cores of a 2-core machine busy; 4 measured faster than 2), 1 on a GPU.
pub fn default_shards() -> usize {
    if cfg!(any(feature = "cuda", feature = "wgpu")) {
        1
    } else {
        4
    }
}

/// Whether this CPU has AVX-512F, which gemm (flex's matmul) then uses.
fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What `sequin train` was asked to do: a new run, or a resume (with the options given, to be
/// checked against the saved ones).
enum TrainJob {
    New(TrainConfig),
    Resume(PathBuf, Option<TrainConfig>),
}

fn train_job(a: TrainArgs) -> Result<TrainJob> {
    let Some(dir) = a.resume.clone() else {
        return Ok(TrainJob::New(train_config(a, None)?));
    };
    // Options given with --resume are completed from the saved config and must equal it.
    let (_, state) = sequin_train::latest_checkpoint(&dir)?;
    let saved = serde_json::to_value(&state.config)?;
    let given = train_config(a, Some(saved.as_object().expect("object").clone()))?;
    Ok(TrainJob::Resume(dir, Some(given)))
}

fn train_config(a: TrainArgs, base: Option<Map<String, Value>>) -> Result<TrainConfig> {
    let mut map: Map<String, Value> = base.unwrap_or_default();
    let file: Map<String, Value> = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON object", p.display()))?
        }
        None => Map::new(),
    };
    map.extend(file);
    fn set_in(map: &mut Map<String, Value>, k: &str, v: Option<Value>) {
        if let Some(v) = v {
            map.insert(k.into(), v);
        }
    }
    macro_rules! set {
        ($k:expr, $v:expr $(,)?) => {
            set_in(&mut map, $k, $v)
        };
    }
    let path = |p: Option<PathBuf>| p.map(|p| Value::from(p.to_string_lossy().into_owned()));
    set!("model", a.model.map(Value::from));
    set!("train", path(a.train));
    set!("validation", path(a.validation));
    set!("test", path(a.test));
    set!("output", path(a.output));
    set!("text_column", a.text_column.map(Value::from));
    set!("text_pair_column", a.text_pair_column.map(Value::from));
    set!("label_column", a.label_column.map(Value::from));
    set!("epochs", a.epochs.map(Value::from));
    set!("batch_size", a.batch_size.map(Value::from));
    set!("lr", a.lr.map(Value::from));
    set!("weight_decay", a.weight_decay.map(Value::from));
    set!("warmup_ratio", a.warmup_ratio.map(Value::from));
    set!("max_length", a.max_length.map(Value::from));
    set!("seed", a.seed.map(Value::from));
    set!("max_steps", a.max_steps.map(Value::from));
    set!("max_train_samples", a.max_train_samples.map(Value::from));
    set!(
        "group_by_length",
        match (a.group_by_length, a.no_group_by_length) {
            (true, _) => Some(Value::Bool(true)),
            (_, true) => Some(Value::Bool(false)),
            _ => None,
        },
    );
    set!("shards", a.shards.map(Value::from));
    if !map.contains_key("shards") {
        map.insert("shards".into(), Value::from(default_shards()));
    }
    set!(
        "gradient_accumulation_steps",
        a.gradient_accumulation_steps.map(Value::from)
    );
    set!("lr_scheduler", a.lr_scheduler.map(Value::from));
    set!("layer_lr_decay", a.layer_lr_decay.map(Value::from));
    set!("head_lr", a.head_lr.map(Value::from));
    set!("eval_steps", a.eval_steps.map(Value::from));
    set!(
        "metric_for_best_model",
        a.metric_for_best_model.map(Value::from)
    );
    set!(
        "early_stopping_patience",
        a.early_stopping_patience.map(Value::from)
    );
    set!(
        "early_stopping_min_delta",
        a.early_stopping_min_delta.map(Value::from)
    );
    set!("save_total_limit", a.save_total_limit.map(Value::from));
    set!("problem_type", a.problem_type.map(Value::from));
    set!(
        "label_columns",
        (!a.label_columns.is_empty()).then(|| Value::from(a.label_columns.clone()))
    );
    set!(
        "tune_thresholds",
        a.tune_thresholds.then_some(Value::Bool(true))
    );
    let weights = match a.class_weights.as_deref() {
        None => None,
        Some("auto") => Some(Value::from("auto")),
        Some(list) => Some(Value::from(
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
    };
    set!("class_weights", weights);
    set!("loss", a.loss.map(Value::from));
    set!("focal_gamma", a.focal_gamma.map(Value::from));
    set!("sampler", a.sampler.map(Value::from));
    set!("validation_split", a.validation_split.map(Value::from));
    if let Some(mode) = &a.augment {
        let pipeline = augment_spec(a.augment_spec.as_deref().unwrap_or("eda"))?;
        map.insert(
            "augment".into(),
            serde_json::json!({"mode": mode, "pipeline": pipeline,
                "num_aug": a.num_aug.unwrap_or(4), "oversample": a.oversample}),
        );
    } else if a.oversample {
        if a.num_aug.is_some() {
            bail!("--num-aug needs --augment offline");
        }
        let pipeline = augment_spec(a.augment_spec.as_deref().unwrap_or("eda"))?;
        map.insert(
            "augment".into(),
            serde_json::json!({"mode": "offline", "pipeline": pipeline, "num_aug": 0, "oversample": true}),
        );
    } else if a.augment_spec.is_some() || a.num_aug.is_some() {
        bail!("--augment-spec and --num-aug need --augment offline or per-epoch (or --oversample)");
    }
    set!("mixup_alpha", a.mixup_alpha.map(Value::from));
    set!("fusion", a.fusion.map(Value::from));
    {
        let mut f = Map::new();
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| Value::from(v.clone()));
        set_in(&mut f, "numeric", list(&a.numeric_columns));
        set_in(&mut f, "categorical", list(&a.categorical_columns));
        set_in(&mut f, "date", list(&a.date_columns));
        set_in(
            &mut f,
            "numeric_transform",
            a.numeric_transform.map(Value::from),
        );
        set_in(
            &mut f,
            "min_category_count",
            a.min_category_count.map(Value::from),
        );
        set_in(
            &mut f,
            "embedding_dim",
            a.category_embedding_dim.map(Value::from),
        );
        if !f.is_empty() {
            // Merged over a config file's `features`.
            let entry = map
                .entry("features")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.extend(f);
            }
        }
    }
    set!("aggregate", a.long.aggregate.clone().map(Value::from));
    // Defaults depend on max_length: resolve it as the run will.
    let max_length = map.get("max_length").and_then(Value::as_u64).unwrap_or(128) as usize;
    set!("long_text", a.long.policy(max_length)?);
    for required in ["model", "train", "output"] {
        if !map.contains_key(required) {
            bail!("--{required} is required (as a flag or in --config)");
        }
    }
    let src = a
        .config
        .as_deref()
        .map_or("the command line".to_string(), |p| p.display().to_string());
    serde_json::from_value(Value::Object(map)).with_context(|| format!("invalid options in {src}"))
}

fn encode_opts(c: &Classifier, max_length: Option<usize>) -> Result<EncodeOptions> {
    let max_length = max_length.unwrap_or(c.policy.max_length);
    if max_length > c.config.arch.max_length() {
        bail!(
            "--max-length {max_length} exceeds the {} positions the model's max_position_embeddings allows",
            c.config.arch.max_length()
        );
    }
    Ok(EncodeOptions {
        max_length,
        pad_to_multiple_of: None,
    })
}

fn run(cli: Cli) -> Result<()> {
    let device = device();
    match cli.cmd {
        Cmd::Train(a) => {
            eprintln!("sequin train on {}", backend_name());
            let (s, output) = match train_job(a)? {
                TrainJob::New(cfg) => (sequin_train::train(&cfg, &device)?, cfg.output),
                TrainJob::Resume(dir, expected) => {
                    let (s, c) = sequin_train::resume(&dir, expected.as_ref(), &device)?;
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
        }
        Cmd::Tune(a) => {
            if !a.grid && a.random.is_none() {
                bail!("tune needs --grid or --random N");
            }
            let base = train_config(a.train, None)?;
            let space = sequin_train::SearchSpace {
                lr: a.lr_values,
                batch_size: a.batch_size_values,
                epochs: a.epochs_values,
                warmup_ratio: a.warmup_ratio_values,
                weight_decay: a.weight_decay_values,
            };
            let metric = a
                .metric
                .unwrap_or_else(|| base.metric_for_best_model.clone());
            eprintln!("sequin tune on {}", backend_name());
            let trials = sequin_train::tune(&base, &space, a.random, &metric, &device)?;
            let best = trials.first().map(|t| t.output.clone());
            println!(
                "{}",
                serde_json::json!({"trials": trials.len(), "best": best, "metric": metric,
                    "results": base.output.join("tune_results.md")})
            );
        }
        Cmd::Augment(a) => {
            let out = a.output.clone();
            let n = augment(a)?;
            eprintln!("wrote {n} rows to {}", out.display());
        }
        Cmd::Eval(a) => {
            let mut c = Classifier::load(&a.model, &device)?;
            let opts = encode_opts(&c, a.max_length)?;
            c.shards = a.shards.map_or_else(default_shards, |n| n as usize);
            a.long.apply(&mut c, opts.max_length)?;
            let cols = Columns {
                text: a.columns.text_column,
                text_pair: a.columns.text_pair_column,
                label: Some(a.label_column),
                label_columns: a.label_columns,
                features: Vec::new(),
            };
            let recs = c.read(&a.data, &cols)?;
            warn_unknown(&a.data, &c.check_features(&a.data, 1, &recs)?);
            let m = c.evaluate(&recs, &a.data, opts, a.batch_size)?;
            println!("{}", serde_json::to_string(&m)?);
        }
        Cmd::Predict(a) => {
            // (the score function and thresholds follow the folder's problem type)
            let mut c = Classifier::load(&a.model, &device)?;
            let opts = encode_opts(&c, a.max_length)?;
            c.shards = a.shards.map_or_else(default_shards, |n| n as usize);
            a.long.apply(&mut c, opts.max_length)?;
            let cols = Columns {
                text: a.columns.text_column,
                text_pair: a.columns.text_pair_column,
                label: None,
                label_columns: Vec::new(),
                features: c.feature_columns(),
            };
            let function = match a.function.as_deref() {
                Some("sigmoid") => Some(sequin_train::ScoreFunction::Sigmoid),
                Some("none") => Some(sequin_train::ScoreFunction::None),
                Some(_) => Some(sequin_train::ScoreFunction::Softmax),
                None => None,
            };
            // The input is read and predicted a chunk at a time, and the output streamed to a
            // temp file renamed at the end: memory does not grow with the input.
            let mut out = PredictionWriter::create(&a.output)?;
            let mut row = 1usize;
            let mut unknown: Vec<(String, usize)> = Vec::new();
            sequin_data::for_each_chunk(&a.input, &cols, PREDICT_CHUNK_ROWS, |recs| {
                // Metadata cells checked with their file rows; unseen categories counted.
                let u = c.check_features(&a.input, row, recs).map_err(|e| match e {
                    sequin_train::TrainError::Data(d) => d,
                    other => sequin_data::DataError::Corrupt {
                        path: a.input.clone(),
                        format: "input for prediction",
                        message: other.to_string(),
                    },
                })?;
                row += recs.len();
                if unknown.is_empty() {
                    unknown = u;
                } else {
                    for (acc, (_, n)) in unknown.iter_mut().zip(u) {
                        acc.1 += n;
                    }
                }
                let preds = c
                    .predict_with(recs, opts, a.batch_size, function, a.top_k)
                    .map_err(|e| sequin_data::DataError::Corrupt {
                        path: a.input.clone(),
                        format: "input for prediction",
                        message: e.to_string(),
                    })?;
                out.write(&preds).map_err(|e| sequin_data::DataError::Io {
                    path: a.output.clone(),
                    source: std::io::Error::other(format!("{e:#}")),
                })
            })?;
            let n = out.finish()?;
            warn_unknown(&a.input, &unknown);
            eprintln!("wrote {n} predictions to {}", a.output.display());
        }
    }
    Ok(())
}

/// Warns about metadata categories the model never saw in training (they were scored with the
/// rare/unknown bucket).
fn warn_unknown(path: &Path, unknown: &[(String, usize)]) {
    for (col, n) in unknown.iter().filter(|(_, n)| *n > 0) {
        eprintln!(
            "warning: {}: {n} value(s) of `{col}` were not in the training vocabulary; they used the rare/unknown bucket",
            path.display()
        );
    }
}

/// Rows read and predicted at a time by `sequin predict`.
const PREDICT_CHUNK_ROWS: usize = 4096;

/// Writes predictions as they come, to `.jsonl` (one object per row) or `.parquet` (columns
/// `label`, `score`, `logits`, and `labels` / `top_k_labels` / `top_k_scores` when present),
/// through a temp file that is renamed into place by [`PredictionWriter::finish`].
struct PredictionWriter {
    path: PathBuf,
    kind: WriterKind,
    n: usize,
}

enum WriterKind {
    Jsonl(std::io::BufWriter<AtomicFile>),
    /// The file until the first batch gives the schema, then the writer.
    Parquet(
        Option<AtomicFile>,
        Option<Box<parquet::arrow::ArrowWriter<AtomicFile>>>,
    ),
}

impl PredictionWriter {
    fn create(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let file =
            AtomicFile::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let parquet = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
        let kind = if parquet {
            WriterKind::Parquet(Some(file), None)
        } else {
            WriterKind::Jsonl(std::io::BufWriter::new(file))
        };
        Ok(Self {
            path: path.to_path_buf(),
            kind,
            n: 0,
        })
    }

    fn write(&mut self, preds: &[sequin_train::Prediction]) -> Result<()> {
        use std::io::Write as _;
        use std::sync::Arc;

        use arrow::array::{ArrayRef, Float32Builder, ListBuilder, RecordBatch, StringBuilder};
        self.n += preds.len();
        match &mut self.kind {
            WriterKind::Jsonl(w) => {
                for p in preds {
                    serde_json::to_writer(&mut *w, p)?;
                    w.write_all(b"\n")?;
                }
            }
            WriterKind::Parquet(file, writer) => {
                let mut label = StringBuilder::new();
                let mut score = Float32Builder::new();
                let mut logits = ListBuilder::new(Float32Builder::new());
                let mut labels = ListBuilder::new(StringBuilder::new());
                let mut top_l = ListBuilder::new(StringBuilder::new());
                let mut top_s = ListBuilder::new(Float32Builder::new());
                for p in preds {
                    label.append_value(&p.label);
                    score.append_value(p.score);
                    logits.values().append_slice(&p.logits);
                    logits.append(true);
                    match &p.labels {
                        Some(ls) => {
                            for l in ls {
                                labels.values().append_value(l);
                            }
                            labels.append(true);
                        }
                        None => labels.append(false),
                    }
                    match &p.top_k {
                        Some(t) => {
                            for x in t {
                                top_l.values().append_value(&x.label);
                                top_s.values().append_value(x.score);
                            }
                            top_l.append(true);
                            top_s.append(true);
                        }
                        None => {
                            top_l.append(false);
                            top_s.append(false);
                        }
                    }
                }
                let mut cols: Vec<(&str, ArrayRef)> = vec![
                    ("label", Arc::new(label.finish())),
                    ("score", Arc::new(score.finish())),
                    ("logits", Arc::new(logits.finish())),
                ];
                if preds.iter().any(|p| p.labels.is_some()) {
                    cols.push(("labels", Arc::new(labels.finish())));
                }
                if preds.iter().any(|p| p.top_k.is_some()) {
                    cols.push(("top_k_labels", Arc::new(top_l.finish())));
                    cols.push(("top_k_scores", Arc::new(top_s.finish())));
                }
                let batch = RecordBatch::try_from_iter(cols)?;
                if let Some(file) = file.take() {
                    *writer = Some(Box::new(parquet::arrow::ArrowWriter::try_new(
                        file,
                        batch.schema(),
                        None,
                    )?));
                }
                writer.as_mut().expect("created").write(&batch)?;
            }
        }
        Ok(())
    }

    /// Renames the finished file into place. (Dropped unfinished, the temp file is removed.)
    fn finish(self) -> Result<usize> {
        let file = match self.kind {
            WriterKind::Jsonl(w) => w.into_inner().map_err(|e| e.into_error())?,
            WriterKind::Parquet(_, Some(w)) => w.into_inner()?,
            WriterKind::Parquet(_, None) => bail!("no predictions to write"),
        };
        file.commit()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(self.n)
    }
}

/// Parses `args` (the first is the program name) and runs the command.
pub fn run_args<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return Ok(());
        }
        Err(e) => bail!("{}", e.to_string().trim_end()),
    };
    run(cli)
}

/// The binary's entry point: runs the process arguments, prints any error with its causes,
/// and returns a non-zero exit code on failure.
pub fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
