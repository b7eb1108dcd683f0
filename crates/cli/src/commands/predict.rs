//! `sequin predict`: predictions for a data file, streamed to JSONL or Parquet.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use sequin_data::Columns;
use sequin_fs::AtomicFile;

use crate::args::PredictArgs;
use crate::commands::eval::{load, warn_unknown};

/// `sequin predict`: one output row per input row, in input order. The score function and
/// thresholds follow the folder's problem type unless `--function` says otherwise.
pub(crate) fn predict(a: PredictArgs, device: &Device) -> Result<()> {
    let (c, opts) = load(&a.run, device)?;
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
    eprintln!("wrote {n} predictions to {}", a.output.display());
    Ok(())
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
