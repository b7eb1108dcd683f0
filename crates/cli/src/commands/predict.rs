//! `sequin predict`: predictions for a data file, streamed to JSONL or Parquet.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use sequin_fs::Output;
use sequin_train::ColumnChoice;

use crate::args::PredictArgs;
use crate::commands::eval::{count_empty, load, note_empty, spinner, warn_unknown};

/// `sequin predict`: one output row per input row, in input order. The score function and
/// thresholds follow the folder's problem type unless `--function` says otherwise.
pub(crate) fn predict(a: PredictArgs, device: &Device) -> Result<()> {
    crate::commands::refuse_same_file(&a.input, &a.output)?;
    let format = OutputFormat::of(&a.output)?;
    let (c, opts) = load(&a.run, device)?;
    let given = ColumnChoice {
        text: a.columns.text_column,
        text_pair: a.columns.text_pair_column,
        ..ColumnChoice::default()
    };
    let mut cols = c.columns(given, false);
    let keep = kept_columns(&a.keep_columns, &a.input, &cols)?;
    // Kept columns are read as metadata cells, after the model's own.
    let keep_at: Vec<usize> = keep
        .iter()
        .map(|k| match cols.features.iter().position(|f| f == k) {
            Some(i) => i,
            None => {
                cols.features.push(k.clone());
                cols.features.len() - 1
            }
        })
        .collect();
    let function = match a.function.as_deref() {
        Some("sigmoid") => Some(sequin_train::ScoreFunction::Sigmoid),
        Some("none") => Some(sequin_train::ScoreFunction::None),
        Some(_) => Some(sequin_train::ScoreFunction::Softmax),
        None => None,
    };
    // The input is read and predicted a chunk at a time, and the output streamed to a
    // temp file renamed at the end: memory does not grow with the input.
    let mut out = PredictionWriter::create(&a.output, format, keep)?;
    let mut row = 1usize;
    let mut unknown: Vec<(String, usize)> = Vec::new();
    let mut empty = 0usize;
    let bar = spinner("predicting");
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
        bar.set_message(format!("{} rows", row - 1));
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
        let kept: Vec<Vec<Option<String>>> = recs
            .iter()
            .map(|r| keep_at.iter().map(|&i| r.features[i].clone()).collect())
            .collect();
        out.write(&preds, &kept)
            .map_err(|e| sequin_data::DataError::Io {
                path: a.output.clone(),
                source: std::io::Error::other(format!("{e:#}")),
            })
    })?;
    bar.finish_and_clear();
    let n = out.finish()?;
    warn_unknown(&a.input, &unknown);
    note_empty(&a.input, empty);
    match a.output.as_os_str() == "-" {
        true => eprintln!("wrote {n} predictions to standard output"),
        false => eprintln!("wrote {n} predictions to {}", a.output.display()),
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

/// Output fields a kept input column may not replace.
const OUTPUT_FIELDS: &[&str] = &[
    "label",
    "score",
    "logits",
    "labels",
    "top_k",
    "top_k_labels",
    "top_k_scores",
];

/// The input columns `--keep-columns` names (`all`: every column but the text and the pair),
/// checked against the file and against the output's own fields.
fn kept_columns(
    asked: &[String],
    input: &Path,
    cols: &sequin_data::Columns,
) -> Result<Vec<String>> {
    if asked.is_empty() {
        return Ok(Vec::new());
    }
    let available = sequin_data::column_names(input)?;
    let keep: Vec<String> = if asked.iter().any(|k| k == "all") {
        available
            .iter()
            .filter(|c| **c != cols.text && Some(*c) != cols.text_pair.as_ref())
            .cloned()
            .collect()
    } else {
        asked.to_vec()
    };
    for k in &keep {
        if !available.contains(k) {
            bail!(
                "--keep-columns: {} has no column `{k}`; its columns are: {}",
                input.display(),
                available.join(", ")
            );
        }
        if OUTPUT_FIELDS.contains(&k.as_str()) {
            bail!(
                "--keep-columns: `{k}` is also an output field of the predictions; rename the input column"
            );
        }
    }
    Ok(keep)
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
    /// Input columns copied into every row.
    keep: Vec<String>,
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
    fn create(path: &Path, format: OutputFormat, keep: Vec<String>) -> Result<Self> {
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
            keep,
        })
    }

    /// Writes predictions, each with its kept input cells (`kept[i]`, in `self.keep` order).
    fn write(
        &mut self,
        preds: &[sequin_train::Prediction],
        kept: &[Vec<Option<String>>],
    ) -> Result<()> {
        use std::io::Write as _;
        use std::sync::Arc;

        use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
        use arrow_array::{ArrayRef, RecordBatch};
        self.n += preds.len();
        match &mut self.kind {
            WriterKind::Jsonl(w) => {
                for (p, cells) in preds.iter().zip(kept) {
                    let mut row = serde_json::to_value(p)?;
                    if let serde_json::Value::Object(o) = &mut row {
                        for (k, v) in self.keep.iter().zip(cells) {
                            o.insert(
                                k.clone(),
                                v.clone().map_or(serde_json::Value::Null, Into::into),
                            );
                        }
                    }
                    serde_json::to_writer(&mut *w, &row)?;
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
                for (i, name) in self.keep.iter().enumerate() {
                    let cells: arrow_array::StringArray =
                        kept.iter().map(|row| row[i].as_deref()).collect();
                    cols.push((name.as_str(), Arc::new(cells)));
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
