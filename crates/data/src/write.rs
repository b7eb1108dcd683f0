//! Writing records: the counterpart of the readers, for files sequin makes from data
//! (`sequin augment`).

use std::path::Path;

use crate::{Columns, DataError, Record, Result};

/// A record with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvenanceRow {
    /// The 1-based row of the source file it derives from.
    pub source_row: usize,
    /// What made it (`original`, or the augmentation operations).
    pub augmentation: String,
    /// The record.
    pub record: Record,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn unwritable(path: &Path, message: &str) -> DataError {
    DataError::Write {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn csv_err(path: &Path) -> impl Fn(csv::Error) -> DataError + '_ {
    move |e| unwritable(path, &e.to_string())
}

/// Writes records as JSONL, CSV/TSV or Parquet (by extension), atomically: the columns of
/// `cols` (text, pair, label or label list, features) and each row's provenance (`source_row`,
/// 1-based, and `augmentation`: what made the row).
pub fn write_records(path: &Path, cols: &Columns, rows: &[ProvenanceRow]) -> Result<()> {
    let bytes = encode_records(path, cols, rows)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    sequin_fs::write(path, &bytes).map_err(io(path))
}

fn encode_records(path: &Path, cols: &Columns, rows: &[ProvenanceRow]) -> Result<Vec<u8>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let label = cols.label.as_deref();
    let pair = cols.text_pair.as_deref();
    let lists = rows.iter().any(|r| r.record.labels.is_some());
    let bytes: Vec<u8> = match ext.as_str() {
        "jsonl" | "json" => {
            let mut out = Vec::new();
            for ProvenanceRow {
                source_row: src,
                augmentation: ops,
                record: r,
            } in rows
            {
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
                out.extend(serde_json::to_vec(&m).expect("a JSON map serialises"));
                out.push(b'\n');
            }
            out
        }
        "csv" | "tsv" => {
            if lists {
                return Err(unwritable(
                    path,
                    "list labels cannot be written as CSV; write .jsonl or .parquet",
                ));
            }
            let mut w = csv::WriterBuilder::new()
                .delimiter(if ext == "tsv" { b'\t' } else { b',' })
                .from_writer(Vec::new());
            let mut header = vec![cols.text.as_str()];
            header.extend(pair);
            header.extend(label);
            header.extend(cols.features.iter().map(String::as_str));
            header.extend(["source_row", "augmentation"]);
            w.write_record(&header).map_err(csv_err(path))?;
            for ProvenanceRow {
                source_row: src,
                augmentation: ops,
                record: r,
            } in rows
            {
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
                w.write_record(&rec).map_err(csv_err(path))?;
            }
            w.into_inner()
                .map_err(|e| unwritable(path, &e.to_string()))?
        }
        "parquet" => encode_parquet(path, cols, rows)?,
        _ => {
            return Err(unwritable(
                path,
                "unknown output format; expected .parquet, .csv, .tsv or .jsonl",
            ));
        }
    };
    Ok(bytes)
}

/// Parquet bytes of the rows.
fn encode_parquet(path: &Path, cols: &Columns, rows: &[ProvenanceRow]) -> Result<Vec<u8>> {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder, UInt64Builder};
    use arrow_array::{ArrayRef, RecordBatch};
    let label = cols.label.as_deref();
    let pair = cols.text_pair.as_deref();
    let lists = rows.iter().any(|r| r.record.labels.is_some());
    let mut text = StringBuilder::new();
    let mut pairs = StringBuilder::new();
    let mut labels = StringBuilder::new();
    let mut label_lists = ListBuilder::new(StringBuilder::new());
    let mut src_col = UInt64Builder::new();
    let mut ops_col = StringBuilder::new();
    let mut extra: Vec<StringBuilder> =
        cols.features.iter().map(|_| StringBuilder::new()).collect();
    for ProvenanceRow {
        source_row: src,
        augmentation: ops,
        record: r,
    } in rows
    {
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
    let mut columns: Vec<(&str, ArrayRef)> = vec![(cols.text.as_str(), Arc::new(text.finish()))];
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
    let fail = |e: &dyn std::fmt::Display| unwritable(path, &e.to_string());
    let batch = RecordBatch::try_from_iter(columns).map_err(|e| fail(&e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None)
        .map_err(|e| fail(&e))?;
    w.write(&batch).map_err(|e| fail(&e))?;
    w.into_inner().map_err(|e| fail(&e))
}
