//! Reading records from Parquet, CSV/TSV and JSONL, choosing columns by name.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::{Array, ArrayRef, cast::AsArray};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::{DataError, Result};

/// Which columns hold the text, the optional second text and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The text column.
    pub text: String,
    /// The optional text-pair column.
    pub text_pair: Option<String>,
    /// The label column; `None` when reading data to predict on. A list column (Parquet
    /// `list<string>`, a JSON array) gives each row a set of labels (multi-label).
    pub label: Option<String>,
    /// Multi-label data as one 0/1 column per label, named after the label; used instead of
    /// `label` when not empty.
    pub label_columns: Vec<String>,
    /// Metadata (feature) columns, read as text (numbers in decimal, dates as written) into
    /// [`Record::features`] in this order; [`crate::FeatureSpec`] parses them.
    pub features: Vec<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            text: "text".into(),
            text_pair: None,
            label: Some("label".into()),
            label_columns: Vec::new(),
            features: Vec::new(),
        }
    }
}

/// One example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The text.
    pub text: String,
    /// The second text of a pair; `None` (null or absent) encodes the row as a single text.
    pub text_pair: Option<String>,
    /// The label as a string (numbers are written in decimal); `None` when no label column
    /// was asked for, the cell is null, or the labels are a set (`labels`).
    pub label: Option<String>,
    /// A set of labels (multi-label data: a list column, or 0/1 label columns).
    pub labels: Option<Vec<String>>,
    /// The cells of [`Columns::features`], in order, as text; `None` = null or empty.
    pub features: Vec<Option<String>>,
}

impl Record {
    /// A record with a text only.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            text_pair: None,
            label: None,
            labels: None,
            features: Vec::new(),
        }
    }
}

enum Format {
    Parquet,
    Csv(u8),
    Jsonl,
}

fn format_of(path: &Path) -> Result<Format> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match ext.as_deref() {
        Some("parquet" | "pq") => Format::Parquet,
        Some("csv") => Format::Csv(b','),
        Some("tsv") => Format::Csv(b'\t'),
        Some("jsonl" | "json" | "ndjson") => Format::Jsonl,
        _ => {
            return Err(DataError::Format {
                path: path.to_path_buf(),
            });
        }
    })
}

/// What an empty, blank or null text is when reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmptyText {
    /// An error naming the row (training data).
    #[default]
    Refuse,
    /// A record with the text `""` (data to predict: every input row gets its output row, as
    /// transformers predicts an empty text from `[CLS] [SEP]`).
    Keep,
}

/// Reads every record of a data file, chosen by its extension (`.parquet`, `.csv`, `.tsv`,
/// `.jsonl`). Every row is checked: an empty text, a missing label or a column of the wrong
/// type is an error that names the file, the row or column, and the problem.
pub fn read_records(path: &Path, cols: &Columns) -> Result<Vec<Record>> {
    read_records_with(path, cols, EmptyText::Refuse)
}

/// [`read_records`], with empty texts refused or kept.
pub fn read_records_with(path: &Path, cols: &Columns, empty: EmptyText) -> Result<Vec<Record>> {
    let mut all = Vec::new();
    for_each_chunk_with(path, cols, usize::MAX, empty, |chunk| {
        all.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(all)
}

/// Streams the records of a data file in chunks of at most `rows` (Parquet is read record
/// batch by record batch; CSV and JSONL line by line), checked as [`read_records`] checks
/// them, so that memory stays bounded whatever the file size. `f` sees every chunk in order.
pub fn for_each_chunk(
    path: &Path,
    cols: &Columns,
    rows: usize,
    f: impl FnMut(&[Record]) -> Result<()>,
) -> Result<()> {
    for_each_chunk_with(path, cols, rows, EmptyText::Refuse, f)
}

/// [`for_each_chunk`], with empty texts refused or kept.
pub fn for_each_chunk_with(
    path: &Path,
    cols: &Columns,
    rows: usize,
    empty: EmptyText,
    mut f: impl FnMut(&[Record]) -> Result<()>,
) -> Result<()> {
    let rows = rows.max(1);
    let mut buf: Vec<Record> = Vec::new();
    let mut seen = 0usize;
    {
        let mut push = |r: Record| -> Result<()> {
            seen += 1;
            check_record(path, cols, seen, &r, empty)?;
            buf.push(r);
            if buf.len() >= rows {
                f(&buf)?;
                buf.clear();
            }
            Ok(())
        };
        match format_of(path)? {
            Format::Parquet => guard(path, "Parquet", || read_parquet(path, cols, &mut push))?,
            Format::Csv(delim) => read_csv(path, cols, delim, &mut push)?,
            Format::Jsonl => read_jsonl(path, cols, &mut push)?,
        }
    }
    if seen == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !buf.is_empty() {
        f(&buf)?;
    }
    Ok(())
}

/// The column names of a data file: the Parquet schema, the CSV/TSV header, or the keys of the
/// first JSONL object.
pub fn column_names(path: &Path) -> Result<Vec<String>> {
    match format_of(path)? {
        Format::Parquet => guard(path, "Parquet", || {
            let b = ParquetRecordBatchReaderBuilder::try_new(open(path)?)
                .map_err(|e| corrupt(path, "Parquet")(e.to_string()))?;
            Ok(b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect())
        }),
        Format::Csv(delim) => {
            let mut rdr = csv::ReaderBuilder::new()
                .delimiter(delim)
                .from_reader(open(path)?);
            Ok(rdr
                .headers()
                .map_err(|e| corrupt(path, "CSV")(e.to_string()))?
                .iter()
                .map(String::from)
                .collect())
        }
        Format::Jsonl => {
            let reader = BufReader::new(open(path)?);
            for line in reader.lines() {
                let line = line.map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                return match serde_json::from_str::<Value>(&line) {
                    Ok(Value::Object(o)) => Ok(o.keys().cloned().collect()),
                    _ => Err(corrupt(path, "JSONL")(
                        "the first line is not a JSON object".into(),
                    )),
                };
            }
            Err(DataError::Empty {
                path: path.to_path_buf(),
            })
        }
    }
}

fn check_record(
    path: &Path,
    cols: &Columns,
    row: usize,
    r: &Record,
    empty: EmptyText,
) -> Result<()> {
    if empty == EmptyText::Refuse && r.text.trim().is_empty() {
        return Err(DataError::BadRow {
            path: path.to_path_buf(),
            row,
            problem: format!("the text (column `{}`) is empty or null", cols.text),
        });
    }
    if cols.label_columns.is_empty()
        && cols.label.is_some()
        && r.label.is_none()
        && r.labels.is_none()
    {
        return Err(DataError::BadRow {
            path: path.to_path_buf(),
            row,
            problem: format!(
                "the label (column `{}`) is missing",
                cols.label.as_deref().unwrap_or_default()
            ),
        });
    }
    Ok(())
}

/// Runs a third-party reader, turning a panic into a typed error: the `parquet` crate (60.1)
/// panics on some corrupt footers ("column start and length should not be negative") instead
/// of returning an error.
fn guard<T>(path: &Path, format: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(corrupt(path, format)(format!(
                "the file is corrupt (the {format} reader failed: {why})"
            )))
        }
    }
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn corrupt<'a>(path: &'a Path, format: &'static str) -> impl Fn(String) -> DataError + 'a {
    move |message| DataError::Corrupt {
        path: path.to_path_buf(),
        format,
        message,
    }
}

fn missing(path: &Path, column: &str, role: &'static str, available: Vec<String>) -> DataError {
    DataError::MissingColumn {
        path: path.to_path_buf(),
        column: column.into(),
        role,
        available,
    }
}

/// Converts an arrow column into optional strings: text types as they are, integers in decimal.
fn strings(
    path: &Path,
    name: &str,
    arr: &ArrayRef,
    allow_int: bool,
) -> Result<Vec<Option<String>>> {
    let expected = if allow_int {
        "a string or number column"
    } else {
        "a string column"
    };
    let ok = matches!(
        arr.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) || (allow_int && (arr.data_type().is_integer() || arr.data_type().is_floating()));
    if !ok {
        return Err(DataError::ColumnType {
            path: path.to_path_buf(),
            column: name.into(),
            found: arr.data_type().to_string(),
            expected,
        });
    }
    let as_str = arrow_cast::cast(arr, &DataType::Utf8).map_err(|e| DataError::ColumnType {
        path: path.to_path_buf(),
        column: name.into(),
        found: format!("{} ({e})", arr.data_type()),
        expected,
    })?;
    let s = as_str.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
        .collect())
}

/// A feature column's cells as text: strings as they are, numbers in decimal (NaN as `NaN`),
/// booleans as `true`/`false`, dates and timestamps in ISO 8601; null = `None`.
fn feature_cells(path: &Path, name: &str, arr: &ArrayRef) -> Result<Vec<Option<String>>> {
    let ok = matches!(
        arr.data_type(),
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..)
    ) || arr.data_type().is_numeric()
        || matches!(arr.data_type(), DataType::Dictionary(..));
    let bad = |found: String| DataError::ColumnType {
        path: path.to_path_buf(),
        column: name.into(),
        found,
        expected: "a string, number, boolean or date column (a feature)",
    };
    if !ok {
        return Err(bad(arr.data_type().to_string()));
    }
    let as_str = arrow_cast::cast(arr, &DataType::Utf8)
        .map_err(|e| bad(format!("{} ({e})", arr.data_type())))?;
    let s = as_str.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| {
            s.is_valid(i)
                .then(|| s.value(i).to_string())
                .filter(|v| !v.is_empty())
        })
        .collect())
}

/// Where the columns a [`Columns`] names are in a file.
struct ColumnIndices {
    text: usize,
    pair: Option<usize>,
    /// The label column, unless 0/1 label columns are used.
    label: Option<usize>,
    /// The 0/1 label columns.
    flags: Vec<usize>,
    /// The feature columns.
    features: Vec<usize>,
}

impl ColumnIndices {
    /// `idx(name, role)` finds one column or fails naming it.
    fn resolve(cols: &Columns, idx: impl Fn(&str, &'static str) -> Result<usize>) -> Result<Self> {
        Ok(Self {
            text: idx(&cols.text, "text")?,
            pair: cols
                .text_pair
                .as_deref()
                .map(|c| idx(c, "text pair"))
                .transpose()?,
            label: match cols.label_columns.is_empty() {
                true => cols.label.as_deref().map(|c| idx(c, "label")).transpose()?,
                false => None,
            },
            flags: cols
                .label_columns
                .iter()
                .map(|c| idx(c, "label"))
                .collect::<Result<_>>()?,
            features: cols
                .features
                .iter()
                .map(|c| idx(c, "feature"))
                .collect::<Result<_>>()?,
        })
    }
}

/// A list-of-strings column as label sets.
fn string_lists(path: &Path, name: &str, arr: &ArrayRef) -> Result<Vec<Option<Vec<String>>>> {
    let bad = || DataError::ColumnType {
        path: path.to_path_buf(),
        column: name.into(),
        found: arr.data_type().to_string(),
        expected: "a string, number or list-of-strings column",
    };
    let (offsets, values): (Vec<usize>, ArrayRef) = match arr.data_type() {
        DataType::List(_) => {
            let l = arr.as_list::<i32>();
            (
                l.value_offsets().iter().map(|&o| o as usize).collect(),
                l.values().clone(),
            )
        }
        DataType::LargeList(_) => {
            let l = arr.as_list::<i64>();
            (
                l.value_offsets().iter().map(|&o| o as usize).collect(),
                l.values().clone(),
            )
        }
        _ => return Err(bad()),
    };
    let values = strings(path, name, &values, true).map_err(|_| bad())?;
    Ok((0..arr.len())
        .map(|i| {
            arr.is_valid(i).then(|| {
                values[offsets[i]..offsets[i + 1]]
                    .iter()
                    .flatten()
                    .cloned()
                    .collect()
            })
        })
        .collect())
}

/// One cell of a 0/1 label column: whether the row carries the label.
fn flag(path: &Path, row: usize, name: &str, value: Option<&str>) -> Result<bool> {
    match value {
        Some("1" | "1.0" | "true") => Ok(true),
        Some("0" | "0.0" | "false") => Ok(false),
        other => Err(DataError::BadRow {
            path: path.to_path_buf(),
            row,
            problem: format!(
                "label column `{name}` holds {}; expected 0 or 1",
                other.map_or("null".to_string(), |o| format!("`{o}`"))
            ),
        }),
    }
}

/// One 0/1 (or boolean) column per label: the names of the columns set in each row.
fn flag_columns(
    path: &Path,
    names: &[String],
    arrays: &[ArrayRef],
    row_offset: usize,
) -> Result<Vec<Vec<String>>> {
    let n = arrays.first().map_or(0, |a| a.len());
    let mut out = vec![Vec::new(); n];
    for (name, arr) in names.iter().zip(arrays) {
        let as_str = strings(path, name, arr, true).or_else(|_| {
            arrow_cast::cast(arr, &DataType::Utf8)
                .ok()
                .filter(|_| matches!(arr.data_type(), DataType::Boolean))
                .map(|a| {
                    let s = a.as_string::<i32>();
                    (0..s.len())
                        .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
                        .collect()
                })
                .ok_or_else(|| DataError::ColumnType {
                    path: path.to_path_buf(),
                    column: name.clone(),
                    found: arr.data_type().to_string(),
                    expected: "a 0/1 or boolean label column",
                })
        })?;
        for (i, v) in as_str.iter().enumerate() {
            if flag(path, row_offset + i + 1, name, v.as_deref())? {
                out[i].push(name.clone());
            }
        }
    }
    Ok(out)
}

type Emit<'a> = dyn FnMut(Record) -> Result<()> + 'a;

fn read_parquet(path: &Path, cols: &Columns, emit: &mut Emit<'_>) -> Result<()> {
    let err = corrupt(path, "Parquet");
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(open(path)?).map_err(|e| err(e.to_string()))?;
    let schema = builder.schema().clone();
    let available: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let idx = |name: &str, role| {
        schema
            .index_of(name)
            .map_err(|_| missing(path, name, role, available.clone()))
    };
    let ColumnIndices {
        text: text_i,
        pair: pair_i,
        label: label_i,
        flags: flag_is,
        features: feat_is,
    } = ColumnIndices::resolve(cols, idx)?;
    let mut wanted: Vec<usize> = [Some(text_i), pair_i, label_i]
        .into_iter()
        .flatten()
        .chain(flag_is.iter().copied())
        .chain(feat_is.iter().copied())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.clone());
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| err(e.to_string()))?;
    // After projection, columns keep their relative order.
    let mut order = wanted.clone();
    order.sort_unstable();
    let pos = |i: usize| order.iter().position(|&o| o == i).expect("projected");
    let mut n = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let texts = strings(path, &cols.text, batch.column(pos(text_i)), false)?;
        let pairs = match (pair_i, &cols.text_pair) {
            (Some(i), Some(name)) => Some(strings(path, name, batch.column(pos(i)), false)?),
            _ => None,
        };
        let (labels, sets) = match (label_i, &cols.label) {
            (Some(i), Some(name)) => {
                let col = batch.column(pos(i));
                if matches!(col.data_type(), DataType::List(_) | DataType::LargeList(_)) {
                    (None, Some(string_lists(path, name, col)?))
                } else {
                    (Some(strings(path, name, col, true)?), None)
                }
            }
            _ => (None, None),
        };
        let flags = if flag_is.is_empty() {
            None
        } else {
            let arrays: Vec<ArrayRef> = flag_is
                .iter()
                .map(|&i| batch.column(pos(i)).clone())
                .collect();
            Some(flag_columns(path, &cols.label_columns, &arrays, n)?)
        };
        let feats: Vec<Vec<Option<String>>> = feat_is
            .iter()
            .zip(&cols.features)
            .map(|(&i, name)| feature_cells(path, name, batch.column(pos(i))))
            .collect::<Result<_>>()?;
        for (r, text) in texts.into_iter().enumerate() {
            n += 1;
            emit(Record {
                // Null is empty: refused or kept by `check_record`.
                text: text.unwrap_or_default(),
                text_pair: pairs.as_ref().and_then(|p| p[r].clone()),
                label: labels.as_ref().and_then(|l| l[r].clone()),
                labels: match (&sets, &flags) {
                    (Some(s), _) => s[r].clone(),
                    (_, Some(f)) => Some(f[r].clone()),
                    _ => None,
                },
                features: feats.iter().map(|c| c[r].clone()).collect(),
            })?;
        }
    }
    Ok(())
}

fn read_csv(path: &Path, cols: &Columns, delim: u8, emit: &mut Emit<'_>) -> Result<()> {
    let err = corrupt(path, "CSV");
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .from_reader(open(path)?);
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| err(e.to_string()))?
        .iter()
        .map(String::from)
        .collect();
    let idx = |name: &str, role| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| missing(path, name, role, headers.clone()))
    };
    let at = ColumnIndices::resolve(cols, idx)?;
    for (row, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| DataError::BadRow {
            path: path.to_path_buf(),
            row: row + 1,
            problem: format!("cannot parse CSV: {e}"),
        })?;
        let get = |i: usize| rec.get(i).filter(|s| !s.is_empty()).map(String::from);
        let labels = if at.flags.is_empty() {
            None
        } else {
            let mut set = Vec::new();
            for (name, &i) in cols.label_columns.iter().zip(&at.flags) {
                if flag(path, row + 1, name, rec.get(i).map(str::trim))? {
                    set.push(name.clone());
                }
            }
            Some(set)
        };
        emit(Record {
            text: rec.get(at.text).unwrap_or_default().to_string(),
            text_pair: at.pair.and_then(get),
            label: at.label.and_then(get),
            labels,
            features: at.features.iter().map(|&i| get(i)).collect(),
        })?;
    }
    Ok(())
}

fn json_field(
    path: &Path,
    row: usize,
    obj: &serde_json::Map<String, Value>,
    name: &str,
    allow_int: bool,
) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if allow_int => Ok(Some(n.to_string())),
        Some(other) => Err(DataError::BadRow {
            path: path.to_path_buf(),
            row,
            problem: format!(
                "field `{name}` is {other}; expected {}",
                if allow_int {
                    "a string or an integer"
                } else {
                    "a string"
                }
            ),
        }),
    }
}

fn read_jsonl(path: &Path, cols: &Columns, emit: &mut Emit<'_>) -> Result<()> {
    let reader = BufReader::new(open(path)?);
    for (line_no, line) in reader.lines().enumerate() {
        let row = line_no + 1;
        let line = line.map_err(|e| DataError::BadRow {
            path: path.to_path_buf(),
            row,
            problem: format!("cannot read line: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| DataError::BadRow {
            path: path.to_path_buf(),
            row,
            problem: format!("invalid JSON: {e}"),
        })?;
        let Value::Object(obj) = v else {
            return Err(DataError::BadRow {
                path: path.to_path_buf(),
                row,
                problem: "expected a JSON object per line".into(),
            });
        };
        let text = json_field(path, row, &obj, &cols.text, false)?;
        if !obj.contains_key(&cols.text) {
            return Err(missing(
                path,
                &cols.text,
                "text",
                obj.keys().cloned().collect(),
            ));
        }
        let label_col = cols
            .label
            .as_ref()
            .filter(|_| cols.label_columns.is_empty());
        for l in label_col.into_iter().chain(&cols.label_columns) {
            if !obj.contains_key(l) {
                return Err(missing(path, l, "label", obj.keys().cloned().collect()));
            }
        }
        let (label, labels) = match label_col.and_then(|c| obj.get(c).map(|v| (c, v))) {
            Some((c, Value::Array(items))) => {
                let mut set = Vec::with_capacity(items.len());
                for v in items {
                    match v {
                        Value::String(s) => set.push(s.clone()),
                        Value::Number(n) => set.push(n.to_string()),
                        other => {
                            return Err(DataError::BadRow {
                                path: path.to_path_buf(),
                                row,
                                problem: format!(
                                    "field `{c}` holds {other}; expected strings in the label list"
                                ),
                            });
                        }
                    }
                }
                (None, Some(set))
            }
            Some((c, _)) => (json_field(path, row, &obj, c, true)?, None),
            None => (None, None),
        };
        let labels = if cols.label_columns.is_empty() {
            labels
        } else {
            let mut set = Vec::new();
            for name in &cols.label_columns {
                match obj.get(name) {
                    Some(Value::Bool(true)) => set.push(name.clone()),
                    Some(Value::Bool(false)) => {}
                    Some(Value::Number(n)) if n.as_f64() == Some(1.0) => set.push(name.clone()),
                    Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {}
                    other => {
                        return Err(DataError::BadRow {
                            path: path.to_path_buf(),
                            row,
                            problem: format!(
                                "label field `{name}` holds {}; expected 0 or 1",
                                other.map_or("nothing".to_string(), |v| v.to_string())
                            ),
                        });
                    }
                }
            }
            Some(set)
        };
        emit(Record {
            text: text.unwrap_or_default(),
            text_pair: match &cols.text_pair {
                Some(c) => json_field(path, row, &obj, c, false)?,
                None => None,
            },
            label,
            labels,
            features: cols
                .features
                .iter()
                .map(|c| match obj.get(c) {
                    Some(Value::Bool(b)) => Ok(Some(b.to_string())),
                    _ => json_field(path, row, &obj, c, true),
                })
                .collect::<Result<_>>()?,
        })?;
    }
    Ok(())
}
