//! The command line: clap's structs, and nothing else. What each command does is in
//! `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sequin_heads::Aggregate;
use sequin_tokenize::{ChunkSelect, LongTextKind, LongTextRequest};

#[derive(Parser)]
#[command(
    name = "sequin",
    version,
    about = "Fine-tune a Hugging Face encoder into a sequence classifier, evaluate it, and predict with it.",
    long_about = "Fine-tune a Hugging Face encoder into a sequence classifier, evaluate it, and \
predict with it.\n\nModel folders are read and written in Hugging Face layout (config.json, \
model.safetensors, tokenizer.json), so transformers loads what sequin trains and sequin runs \
what transformers saved. Data files are Parquet, CSV/TSV or JSONL; columns are chosen by name.\n\n\
Backend of this build: see `sequin --version` and the Cargo features cpu | wgpu | cuda.",
    after_help = "Exit status: 0 on success; 1 when the work failed (bad data, a bad model, a file \
that cannot be read or written); 2 when the command line cannot be parsed (an unknown flag, a \
missing or malformed value). Every error is one line on stderr, and no partial output is left."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Cmd {
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
    /// Serve a classifier over HTTP: TEI-compatible `POST /predict`, sequin's `POST /classify`
    /// (named fields, metadata, top_k), `GET /health`, `/info`, `/metrics` (Prometheus) and a
    /// playground page at `/`. Requests are batched by a token budget and run on a pool
    /// sized to the cores. Binds to 127.0.0.1 unless --host says otherwise; SIGTERM drains
    /// the requests in flight and exits 0.
    Serve(ServeArgs),
    /// Fit the score calibration of an existing single-label model folder on labelled data
    /// (one temperature, minimum NLL; predictions unchanged), save it in its sequin.json and
    /// plot the reliability diagram in its plots/; prints ECE, Brier and NLL before and after.
    Calibrate(CalibrateArgs),
    /// Few-shot training with SetFit: fine-tune a sentence-transformer body contrastively on
    /// pairs built from a handful of labelled examples (same label: cosine similarity 1,
    /// different: 0), then fit a logistic-regression head on its embeddings. Writes a model
    /// folder that eval, predict and serve load, and that sentence-transformers loads as the
    /// body. Use it with about 8-64 examples per class; with hundreds, `train` does better.
    Setfit(SetFitArgs),
    /// Merge a PEFT LoRA adapter folder into its base model and write a plain Hugging Face
    /// folder (W + (alpha/r)·B·A, the adapter's saved head), which transformers loads with the
    /// same logits.
    Merge(MergeArgs),
}

#[derive(Args)]
pub(crate) struct SetFitArgs {
    /// The body: a model folder or hub id, ideally a sentence-transformer (its modules.json
    /// pooling is used; a plain encoder gets mean pooling).
    #[arg(long, default_value = "sentence-transformers/all-MiniLM-L6-v2")]
    pub(crate) model: String,
    /// Labelled training examples (.parquet, .csv, .tsv, .jsonl): a few per class, at least 2.
    #[arg(long)]
    pub(crate) train: PathBuf,
    /// Labelled data evaluated after training.
    #[arg(long)]
    pub(crate) validation: Option<PathBuf>,
    /// Labelled data evaluated after training (the report's test figures).
    #[arg(long)]
    pub(crate) test: Option<PathBuf>,
    /// The model folder to write.
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// Column with the text.
    #[arg(long, default_value = "text")]
    pub(crate) text_column: String,
    /// Column with the second text of a pair (pair tasks: both texts are embedded together).
    #[arg(long)]
    pub(crate) text_pair_column: Option<String>,
    /// Column with the label (a list column for multi-label data).
    #[arg(long, default_value = "label")]
    pub(crate) label_column: String,
    /// Contrastive pairs of each kind (positive, negative) per training example; when the
    /// data has fewer distinct pairs, they are reused in turn (and the run says so).
    #[arg(long, default_value_t = 20, value_parser = at_least_one)]
    pub(crate) num_iterations: usize,
    /// Pairs per body step.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub(crate) batch_size: usize,
    /// Passes over the pairs.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub(crate) epochs: usize,
    /// The body's peak learning rate (linear warmup, then linear decay).
    #[arg(long, default_value_t = 2e-5)]
    pub(crate) lr: f64,
    /// AdamW weight decay of the body.
    #[arg(long, default_value_t = 0.01)]
    pub(crate) weight_decay: f64,
    /// Fraction of body steps of warmup.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) warmup_ratio: f64,
    /// Tokens per text (pairs: both texts together), special tokens included.
    #[arg(long, default_value_t = 128)]
    pub(crate) max_length: usize,
    /// Seed of the pairs, their order, dropout and initialisation.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// The head's inverse L2 strength (scikit-learn's C).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) head_c: f64,
}

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// The adapter folder (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Its base model, a folder or a hub id [default: the adapter's base_model_name_or_path].
    #[arg(long)]
    pub(crate) base: Option<String>,
    /// The folder to write.
    #[arg(long)]
    pub(crate) output: PathBuf,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) run: InferenceArgs,
    /// Address to bind (loopback by default; 0.0.0.0 exposes the server to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Port to bind (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub(crate) port: u16,
    /// The most tokens in one batch of requests (as TEI's --max-batch-tokens).
    #[arg(long, default_value_t = 16384, value_parser = at_least_one)]
    pub(crate) max_batch_tokens: usize,
    /// The most requests in one batch [default: no limit but the token budget].
    #[arg(long, value_parser = at_least_one)]
    pub(crate) max_batch_requests: Option<usize>,
    /// Requests accepted at once; one more gets 429 (as TEI's --max-concurrent-requests).
    #[arg(long, default_value_t = 512, value_parser = at_least_one)]
    pub(crate) max_concurrent_requests: usize,
    /// The most inputs in one request; more get 413 (as TEI's --max-client-batch-size).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    pub(crate) max_client_batch_size: usize,
    /// The largest request body in bytes; larger gets 413 (as TEI's --payload-limit).
    #[arg(long, default_value_t = 2_000_000, value_parser = at_least_one)]
    pub(crate) payload_limit: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health (401 without it).
    #[arg(long, env = "SEQUIN_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
}

#[derive(Args)]
pub(crate) struct CalibrateArgs {
    /// The model folder (sequin.json in it is updated).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// Labelled held-out data (a validation split, not the test split).
    #[arg(long)]
    pub(crate) data: PathBuf,
    #[command(flatten)]
    pub(crate) columns: InputColumnArgs,
    /// Column with the label [default: the model's label column, else label].
    #[arg(long)]
    pub(crate) label_column: Option<String>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub(crate) batch_size: usize,
}

#[derive(Args)]
pub(crate) struct AugmentArgs {
    /// Data file to augment (.parquet, .csv, .tsv, .jsonl). Columns other than the text and
    /// label ones (metadata) are copied to every variant, as text.
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Output file (.parquet, .csv or .jsonl).
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// Pipeline: `eda` (EDA with alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1), `noise`
    /// (keyboard typos, character swaps and deletions), `aeda` (punctuation insertion), or a
    /// JSON file holding a pipeline.
    #[arg(long, default_value = "eda")]
    pub(crate) spec: String,
    /// Variants per row.
    #[arg(long, default_value_t = 4)]
    pub(crate) num_aug: usize,
    /// Seed of the augmentation RNG.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Words never touched (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) protect: Vec<String>,
    #[command(flatten)]
    pub(crate) columns: ColumnArgs,
    /// Label column carried over to the variants (a list column stays a list).
    #[arg(long, default_value = "label")]
    pub(crate) label_column: String,
    /// The input has no label column.
    #[arg(long)]
    pub(crate) no_label: bool,
}

#[derive(Args)]
pub(crate) struct TuneArgs {
    #[command(flatten)]
    pub(crate) train: TrainArgs,
    /// Try every combination of the values given.
    #[arg(long, conflicts_with = "random")]
    pub(crate) grid: bool,
    /// Try N combinations drawn at random (seeded by --seed) from the grid.
    #[arg(long)]
    pub(crate) random: Option<usize>,
    /// Learning rates to try (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) lr_values: Vec<f64>,
    /// Batch sizes to try.
    #[arg(long, value_delimiter = ',')]
    pub(crate) batch_size_values: Vec<usize>,
    /// Epoch counts to try.
    #[arg(long, value_delimiter = ',')]
    pub(crate) epochs_values: Vec<usize>,
    /// Warmup ratios to try.
    #[arg(long, value_delimiter = ',')]
    pub(crate) warmup_ratio_values: Vec<f64>,
    /// Weight decays to try.
    #[arg(long, value_delimiter = ',')]
    pub(crate) weight_decay_values: Vec<f64>,
    /// LoRA ranks to try (each trial writes a PEFT adapter).
    #[arg(long, value_delimiter = ',')]
    pub(crate) lora_rank_values: Vec<usize>,
    /// LoRA alphas to try.
    #[arg(long, value_delimiter = ',')]
    pub(crate) lora_alpha_values: Vec<f64>,
    /// Validation metric that ranks the trials [default: --metric-for-best-model, else
    /// accuracy].
    #[arg(long, value_parser = ["accuracy", "macro_f1", "micro_f1", "loss", "r2"])]
    pub(crate) metric: Option<String>,
    /// Keep every trial's checkpoints (optimizer state included); by default a trial keeps
    /// only its model folder.
    #[arg(long)]
    pub(crate) keep_checkpoints: bool,
}

#[derive(Args)]
pub(crate) struct ColumnArgs {
    /// Column with the text.
    #[arg(long, default_value = "text")]
    pub(crate) text_column: String,
    /// Column with the second text of a pair (rows where it is null are encoded alone).
    #[arg(long)]
    pub(crate) text_pair_column: Option<String>,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// Base model: a local folder (config.json, model.safetensors, tokenizer.json or vocab.txt)
    /// or a Hugging Face Hub id such as sentence-transformers/all-MiniLM-L6-v2.
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Training data (.parquet, .csv, .tsv, .jsonl). Its labels define the label set.
    #[arg(long)]
    pub(crate) train: Option<PathBuf>,
    /// Validation data, evaluated after every epoch; the best epoch's weights are kept.
    #[arg(long)]
    pub(crate) validation: Option<PathBuf>,
    /// Test data, evaluated once at the end with the kept weights.
    #[arg(long)]
    pub(crate) test: Option<PathBuf>,
    /// Output folder for the trained model (Hugging Face layout).
    #[arg(long)]
    pub(crate) output: Option<PathBuf>,
    /// Column with the text [default: text].
    #[arg(long)]
    pub(crate) text_column: Option<String>,
    /// Column with the second text of a pair.
    #[arg(long)]
    pub(crate) text_pair_column: Option<String>,
    /// Column with the label (strings or integers) [default: label].
    #[arg(long)]
    pub(crate) label_column: Option<String>,
    /// Number of epochs [default: 2].
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Training batch size [default: 32].
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Peak learning rate of AdamW [default: 5e-5].
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) lr: Option<f64>,
    /// AdamW weight decay, not applied to biases and LayerNorm [default: 0.01].
    #[arg(long)]
    pub(crate) weight_decay: Option<f64>,
    /// Fraction of the steps spent warming the learning rate up linearly; it then decays
    /// linearly to zero [default: 0.1].
    #[arg(long)]
    pub(crate) warmup_ratio: Option<f64>,
    /// Maximum tokens per example, special tokens included; longer texts are truncated
    /// (pairs longest-first) [default: 128].
    #[arg(long)]
    pub(crate) max_length: Option<usize>,
    /// Seed for head initialisation, dropout and shuffling [default: 42].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Stop after this many optimizer steps (smoke tests).
    #[arg(long)]
    pub(crate) max_steps: Option<usize>,
    #[command(flatten)]
    pub(crate) long: LongTextArgs,
    /// Batch training examples in random order instead of grouping similar lengths (grouping
    /// pads less and trains faster; the examples seen per epoch are the same). Grouping is
    /// off by default with --augment offline, whose variants would share batches.
    #[arg(long, conflicts_with = "group_by_length")]
    pub(crate) no_group_by_length: bool,
    /// Group training batches by length even with --augment offline.
    #[arg(long)]
    pub(crate) group_by_length: bool,
    /// Split each batch into this many row shards whose forward and backward passes run in
    /// parallel. On the CPU most element-wise work of a step is single-threaded, so shards keep
    /// every core busy (measured: +45% training throughput on 2 cores, README). The gradient is
    /// the batch's, up to float rounding; mixup runs as one shard. [default: 4 on the CPU
    /// backend, 1 on GPUs]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) shards: Option<u64>,
    /// Use only this many training examples (a seeded random subset).
    #[arg(long)]
    pub(crate) max_train_samples: Option<usize>,
    /// Sum the gradients of this many batches before each optimizer step (an effective batch
    /// of --batch-size × N) [default: 1].
    #[arg(long)]
    pub(crate) gradient_accumulation_steps: Option<usize>,
    /// Learning-rate schedule after warmup [default: linear].
    #[arg(long, value_parser = ["linear", "cosine", "constant"])]
    pub(crate) lr_scheduler: Option<String>,
    /// Layer-wise learning-rate decay in (0, 1]: the top encoder layer trains at --lr, each
    /// layer below at this factor times the one above, the embeddings lowest [default: off].
    #[arg(long)]
    pub(crate) layer_lr_decay: Option<f64>,
    /// Learning rate of the classification head (and pooler) [default: --lr].
    #[arg(long)]
    pub(crate) head_lr: Option<f64>,
    /// Evaluate on --validation and write a checkpoint every N optimizer steps
    /// [default: after every epoch].
    #[arg(long)]
    pub(crate) eval_steps: Option<usize>,
    /// Validation metric that picks the kept model and drives early stopping: accuracy,
    /// macro_f1, micro_f1, r2 (higher is better) or loss (lower is better) [default: accuracy;
    /// loss for regression].
    #[arg(long, value_parser = ["accuracy", "macro_f1", "micro_f1", "loss", "r2"])]
    pub(crate) metric_for_best_model: Option<String>,
    /// Stop after N evaluations without improvement [default: never].
    #[arg(long)]
    pub(crate) early_stopping_patience: Option<usize>,
    /// The least change in the metric that counts as an improvement [default: 0].
    #[arg(long)]
    pub(crate) early_stopping_min_delta: Option<f64>,
    /// Checkpoints kept besides the last one (the best ones) [default: 1].
    #[arg(long)]
    pub(crate) save_total_limit: Option<usize>,
    /// HF problem type: single_label_classification, multi_label_classification (BCE; labels
    /// as a list column or --label-columns) or regression (MSE on a numeric label)
    /// [default: multi-label when the labels are lists, else single-label].
    #[arg(long, value_parser = ["single_label_classification", "multi_label_classification", "regression"])]
    pub(crate) problem_type: Option<String>,
    /// Multi-label data as 0/1 columns, one per label (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub(crate) label_columns: Vec<String>,
    /// Multi-label: choose each label's threshold on --validation for F1 (else 0.5); saved
    /// with the model and used by eval and predict.
    #[arg(long)]
    pub(crate) tune_thresholds: bool,
    /// Single-label: after training, fit one temperature on --validation that makes the scores
    /// calibrated (Guo et al. 2017: minimum NLL; every prediction unchanged), save it in
    /// sequin.json, and plot the reliability diagram; eval, predict and serve apply it.
    #[arg(long, value_parser = ["temperature"])]
    pub(crate) calibrate: Option<String>,
    /// Train only the classification head (with the pooler and any fusion head) on the frozen
    /// backbone: a linear probe. The head is always trained and saved.
    #[arg(long, conflicts_with = "freeze_layers")]
    pub(crate) freeze_backbone: bool,
    /// Freeze the embeddings and the first N encoder layers; the layers above and the head
    /// train.
    #[arg(long, value_name = "N")]
    pub(crate) freeze_layers: Option<usize>,
    /// LoRA: train rank-R factors of the target modules and the head, not every weight; the
    /// output is a PEFT adapter folder (adapter_config.json, adapter_model.safetensors) that
    /// peft.PeftModel loads, and eval/predict/serve read.
    #[arg(long, value_name = "R", help_heading = "LoRA")]
    pub(crate) lora_rank: Option<usize>,
    /// LoRA's alpha (the factors are scaled by alpha / R) [default: 8, as PEFT].
    #[arg(long, help_heading = "LoRA")]
    pub(crate) lora_alpha: Option<f64>,
    /// LoRA dropout (only 0: burn's LoRA composes the weight).
    #[arg(long, help_heading = "LoRA")]
    pub(crate) lora_dropout: Option<f64>,
    /// LoRA target modules by PEFT's names, comma-separated, or all-linear [default: the
    /// family's: query,value for BERT, RoBERTa and Longformer; q_lin,v_lin for DistilBERT; Wqkv
    /// for ModernBERT].
    #[arg(long, value_delimiter = ',', help_heading = "LoRA")]
    pub(crate) lora_targets: Vec<String>,
    /// Train on rows whose text is empty or blank (encoded as `[CLS] [SEP]`, as transformers
    /// does) instead of stopping at the first one with an error naming its row.
    #[arg(long)]
    pub(crate) allow_empty_text: bool,
    /// Class weights in the loss: `auto` (inverse class frequency; multi-label: each label's
    /// negatives/positives as BCE's pos_weight) or comma-separated weights in label order.
    #[arg(long)]
    pub(crate) class_weights: Option<String>,
    /// Training loss: `auto` (HF's for the problem type) or `focal` (single-label).
    #[arg(long, value_parser = ["auto", "focal"])]
    pub(crate) loss: Option<String>,
    /// Focal loss γ [default: 2].
    #[arg(long)]
    pub(crate) focal_gamma: Option<f64>,
    /// `random` (each example once per epoch) or `balanced` (draws with replacement, each
    /// class equally likely; single-label) [default: random].
    #[arg(long, value_parser = ["random", "balanced"])]
    pub(crate) sampler: Option<String>,
    /// Without --validation: hold out this fraction of --train, stratified by label.
    #[arg(long)]
    pub(crate) validation_split: Option<f64>,
    /// Augment the training data (never validation or test): `offline` adds --num-aug
    /// variants of every example once; `per-epoch` replaces each example by a fresh variant
    /// every epoch.
    #[arg(long, value_parser = ["offline", "per-epoch"])]
    pub(crate) augment: Option<String>,
    /// The augmentation pipeline: `eda`, `noise`, `aeda` or a JSON file [default: eda].
    #[arg(long)]
    pub(crate) augment_spec: Option<String>,
    /// Offline augmentation: variants per example [default: 4].
    #[arg(long)]
    pub(crate) num_aug: Option<usize>,
    /// Single-label: add augmented variants (--augment-spec) of rare classes' examples until
    /// every class is as large as the largest. Alone, it adds nothing else.
    #[arg(long)]
    pub(crate) oversample: bool,
    /// Numeric metadata columns (comma-separated), fused with the text (see --fusion).
    #[arg(long, value_delimiter = ',', help_heading = "Metadata")]
    pub(crate) numeric_columns: Vec<String>,
    /// Categorical metadata columns: a vocabulary fitted on --train (values seen fewer than
    /// --min-category-count times, and unseen ones, share a rare/unknown bucket) and an
    /// embedding per column.
    #[arg(long, value_delimiter = ',', help_heading = "Metadata")]
    pub(crate) categorical_columns: Vec<String>,
    /// Date metadata columns (yyyy-mm-dd...): year, month, day of week and days since the
    /// earliest training date become numeric features.
    #[arg(long, value_delimiter = ',', help_heading = "Metadata")]
    pub(crate) date_columns: Vec<String>,
    /// Numeric transform, fitted on --train: standard, log1p+standard (counts, long tails)
    /// or quantile-normal [default: standard]. Nulls get the training mean plus a missing
    /// indicator; NaN is an error.
    #[arg(long, value_parser = ["standard", "log1p+standard", "quantile-normal"], help_heading = "Metadata")]
    pub(crate) numeric_transform: Option<String>,
    /// Least training count for a category to get its own id [default: 2].
    #[arg(long, help_heading = "Metadata")]
    pub(crate) min_category_count: Option<usize>,
    /// Embedding width of each categorical column [default: min(50, round(1.6·n^0.56))].
    #[arg(long, help_heading = "Metadata")]
    pub(crate) category_embedding_dim: Option<usize>,
    /// How metadata joins the pooled text vector: text-only (ignore it), concat (project to
    /// the hidden size and concatenate), mlp-concat, gating (Rahman et al. 2020), attention
    /// (the text attends over one token per feature) or weighted-sum [default: concat when
    /// metadata columns are given]. The text model stays in HF layout; the head and the
    /// fitted transforms are saved beside it (fusion.json, fusion.safetensors).
    #[arg(long, value_parser = ["text-only", "concat", "mlp-concat", "gating", "attention", "weighted-sum"], help_heading = "Metadata")]
    pub(crate) fusion: Option<String>,
    /// Embedding mixup: mix each batch's pooled text vectors and targets with a shuffled copy,
    /// λ ~ Beta(α, α), and train on the soft labels (0.2–0.4 is usual). Never on token ids.
    #[arg(long, value_name = "ALPHA")]
    pub(crate) mixup_alpha: Option<f64>,
    /// Continue the run in this folder from its last checkpoint (checkpoints/checkpoint-N),
    /// with its saved options. Other options may be repeated but must not differ; the data
    /// files must be unchanged.
    #[arg(long)]
    pub(crate) resume: Option<PathBuf>,
    /// A JSON file with any of the options above (snake_case keys); flags override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

/// How texts longer than --max-length are fitted.
#[derive(Args, Default, Clone)]
pub(crate) struct LongTextArgs {
    /// How to fit texts longer than --max-length: `truncate` (keep the start, the default),
    /// `head-tail` (keep the first --head-tokens and the last --tail-tokens), or `chunk`
    /// (overlapping windows whose logits are aggregated). `train` saves it with the model;
    /// `eval` and `predict` apply the saved one unless given here.
    #[arg(long, value_parser = ["truncate", "head-tail", "chunk"])]
    pub(crate) long_text: Option<String>,
    /// head-tail: tokens kept from the start [default: a quarter of the content tokens].
    #[arg(long)]
    pub(crate) head_tokens: Option<usize>,
    /// head-tail: tokens kept from the end [default: the rest of the content tokens].
    #[arg(long)]
    pub(crate) tail_tokens: Option<usize>,
    /// chunk: tokens shared by consecutive windows [default: a quarter of --max-length].
    #[arg(long)]
    pub(crate) chunk_stride: Option<usize>,
    /// chunk: the most windows per text [default: 8].
    #[arg(long)]
    pub(crate) max_chunks: Option<usize>,
    /// chunk: which windows a longer text keeps: `first` (its start) or `spread` (evenly from
    /// its first window to its last) [default: first].
    #[arg(long, value_parser = ["first", "spread"])]
    pub(crate) chunk_select: Option<String>,
    /// chunk: how window logits become the text's logits [default: mean].
    #[arg(long, value_parser = ["mean", "max"])]
    pub(crate) aggregate: Option<String>,
}

impl LongTextArgs {
    /// The policy these flags ask for, in the library's terms.
    pub(crate) fn request(&self) -> LongTextRequest {
        let kind = self.long_text.as_deref().map(|k| match k {
            "head-tail" => LongTextKind::HeadTail,
            "chunk" => LongTextKind::Chunk,
            _ => LongTextKind::Truncate,
        });
        LongTextRequest {
            kind,
            head: self.head_tokens,
            tail: self.tail_tokens,
            stride: self.chunk_stride,
            max_chunks: self.max_chunks,
            select: self.chunk_select.as_deref().map(|s| match s {
                "spread" => ChunkSelect::Spread,
                _ => ChunkSelect::First,
            }),
        }
    }

    /// The aggregation these flags ask for.
    pub(crate) fn aggregate(&self) -> Option<Aggregate> {
        self.aggregate.as_deref().map(|a| match a {
            "max" => Aggregate::Max,
            _ => Aggregate::Mean,
        })
    }
}

/// The flags `eval` and `predict` share: the model and how it runs.
#[derive(Args, Clone)]
pub(crate) struct InferenceArgs {
    /// Classifier: a folder saved by sequin or by transformers, or a Hugging Face Hub id
    /// (fetched through the hub cache; HF_HUB_OFFLINE=1 uses only the cache).
    #[arg(long)]
    pub(crate) model: String,
    /// For a PEFT adapter folder (adapter_config.json): its base model, a folder or a hub id
    /// [default: the adapter's base_model_name_or_path].
    #[arg(long)]
    pub(crate) base: Option<String>,
    /// Maximum tokens per example [default: the folder's model_max_length, else 128].
    #[arg(long)]
    pub(crate) max_length: Option<usize>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    pub(crate) batch_size: usize,
    /// Row shards per batch run in parallel (as `train --shards`). [default: 4 on the CPU
    /// backend, 1 on GPUs]
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) shards: Option<u64>,
    /// Arithmetic of the encoder's linear layers: fp32; int8 (dynamic quantization, as
    /// torch's quantize_dynamic and ONNX Runtime's: int8 weights per output channel, inputs
    /// quantized per row at run time, AVX-512 VNNI where the CPU has it); or bf16 (weights and
    /// inputs rounded to bfloat16, f32 accumulation, AVX512-BF16 where the CPU has it). CPU
    /// backend only. `sequin --version` names the kernels this CPU runs.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub(crate) precision: PrecisionArg,
    /// Ignore the folder's score calibration (sequin.json's temperature): raw softmax scores.
    #[arg(long)]
    pub(crate) no_calibration: bool,
    #[command(flatten)]
    pub(crate) long: LongTextArgs,
}

/// `--precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PrecisionArg {
    Fp32,
    Int8,
    Bf16,
}

impl From<PrecisionArg> for sequin_train::Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Self::Fp32,
            PrecisionArg::Int8 => Self::Int8,
            PrecisionArg::Bf16 => Self::Bf16,
        }
    }
}

/// The input columns of eval and predict. Each defaults to what the model was trained on (its
/// `sequin.json` schema), so they are needed only to read differently named columns.
#[derive(Args)]
pub(crate) struct InputColumnArgs {
    /// Column with the text [default: the model's text column, else text].
    #[arg(long)]
    pub(crate) text_column: Option<String>,
    /// Column with the second text of a pair [default: the model's pair column, if any].
    #[arg(long)]
    pub(crate) text_pair_column: Option<String>,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) run: InferenceArgs,
    /// Labelled data file.
    #[arg(long)]
    pub(crate) data: PathBuf,
    #[command(flatten)]
    pub(crate) columns: InputColumnArgs,
    /// Column with the label [default: the model's label column, else label].
    #[arg(long)]
    pub(crate) label_column: Option<String>,
    /// Multi-label data as 0/1 columns, one per label (comma-separated names) [default: the
    /// model's label columns, if it was trained on them].
    #[arg(long, value_delimiter = ',')]
    pub(crate) label_columns: Vec<String>,
}

#[derive(Args)]
pub(crate) struct PredictArgs {
    #[command(flatten)]
    pub(crate) run: InferenceArgs,
    /// Data file to classify.
    #[arg(long)]
    pub(crate) input: PathBuf,
    /// Output file, `.jsonl` ({"label", "score", "logits"} per input row, in input order) or
    /// `.parquet` (the same as columns). Written as the input is read, 4096 rows at a time.
    #[arg(long)]
    pub(crate) output: PathBuf,
    #[command(flatten)]
    pub(crate) columns: InputColumnArgs,
    /// Also write the best N classes per row with their scores (`all` for every class).
    #[arg(long, value_parser = parse_top_k)]
    pub(crate) top_k: Option<usize>,
    /// How logits become scores [default: as transformers' pipeline: softmax for single-label,
    /// sigmoid for multi-label; none (the value) for regression].
    #[arg(long, value_parser = ["softmax", "sigmoid", "none"])]
    pub(crate) function: Option<String>,
    /// Input columns to copy into every output row, as text (comma-separated; `all` for every
    /// column but the text and the pair), such as an id to join the predictions back on.
    #[arg(long, value_delimiter = ',')]
    pub(crate) keep_columns: Vec<String>,
}

/// A count that must be at least 1.
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
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
