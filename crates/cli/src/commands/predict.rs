//! `sequin predict`: predictions for a data file, streamed to JSONL or Parquet.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use sequin_fs::Output;
use sequin_train::ColumnChoice;

use crate::args::PredictArgs;
use crate::commands::eval::{count_empty, load, note_empty, warn_unknown};

/// `sequin predict`: one output row per input row, in input order. The score function and
/// thresholds follow the folder's problem type unless `--function` says otherwise.
pub(crate) fn predict(a: PredictArgs, device: &Device) -> Result<()> {
    refuse_same_file(&a.input, &a.output)?;
    let format = OutputFormat::of(&a.output)?;
    let (c, opts) = load(&a.run, device)?;
    let given = ColumnChoice {
        text: a.columns.text_column,
        text_pair: a.columns.text_pair_column,
        ..ColumnChoice::default()
    };
    let cols = c.columns(given, false);
    let function = match a.function.as_deref() {
        Some("sigmoid") => Some(sequin_train::ScoreFunction::Sigmoid),
        Some("none") => Some(sequin_train::ScoreFunction::None),
        Some(_) => Some(sequin_train::ScoreFunction::Softmax),
        None => None,
    };
    // The input is read and predicted a chunk at a time, and the output streamed to a
    // temp file renamed at the end: memory does not grow with the input.
    let mut out = PredictionWriter::create(&a.output, format)?;
    let mut row = 1usize;
    let mut unknown: Vec<(String, usize)> = Vec::new();
    let mut empty = 0usize;
    let keep = sequin_data::EmptyText::Keep;
    sequin_data::for_each_chunk_with(&a.input, &cols, PREDICT_CHUNK_ROWS, keep, |recs| {
        empty += count_empty(recs);
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
            .predict_with(recs, opts, a.run.batch_size, function, a.top_k)
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
    note_empty(&a.input, empty);
    match a.output.as_os_str() == "-" {
        true => eprintln!("wrote {n} predictions to standard output"),
        false => eprintln!("wrote {n} predictions to {}", a.output.display()),
    }
    Ok(())
}

/// Refuses an output path that is the input file, directly or through a link: the input
/// would be destroyed.
pub(crate) fn refuse_same_file(input: &Path, output: &Path) -> Result<()> {
    if sequin_fs::same_file(input, output) {
        bail!(
            "--output {} is the input file {}; writing it would destroy the input (choose another output path)",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// The format of the predictions, from the output path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutputFormat {
    Jsonl,
    Parquet,
}

impl OutputFormat {
    /// `.jsonl` (or `.json`, `.ndjson`) and `.parquet` (or `.pq`) by extension; JSONL for `-`
    /// (standard output) and for a FIFO or device without an extension. Any other extension is
    /// refused rather than filled with another format.
    fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let special = path.as_os_str() == "-"
            || std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
        match ext.as_deref() {
            Some("jsonl" | "json" | "ndjson") => Ok(Self::Jsonl),
            Some("parquet" | "pq") => Ok(Self::Parquet),
            None if special => Ok(Self::Jsonl),
            other => bail!(
                "--output {}: predictions are written as .jsonl or .parquet (or as JSONL to `-`, standard output), not as {}",
                path.display(),
                other.map_or("a file without an extension".to_string(), |e| format!(
                    ".{e}"
                ))
            ),
        }
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
    Jsonl(std::io::BufWriter<Output>),
    /// The file until the first batch gives the schema, then the writer.
    Parquet(
        Option<Output>,
        Option<Box<parquet::arrow::ArrowWriter<Output>>>,
    ),
}

impl PredictionWriter {
    fn create(path: &Path, format: OutputFormat) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let file =
            Output::create(path).with_context(|| format!("cannot write {}", path.display()))?;
        let kind = match format {
            OutputFormat::Parquet => WriterKind::Parquet(Some(file), None),
            OutputFormat::Jsonl => WriterKind::Jsonl(std::io::BufWriter::new(file)),
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
