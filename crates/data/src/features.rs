//! Metadata features: numeric, categorical and date columns, with transforms fitted on the
//! training data only and saved as JSON beside the model (`features.json`), so that eval and
//! predict apply exactly what training applied.
//!
//! - Numeric: `standard` (z-score), `log1p+standard`, or `quantile-normal` (the empirical CDF
//!   mapped through the inverse normal CDF, as scikit-learn's `QuantileTransformer` with
//!   `output_distribution="normal"`). A column with nulls in training gets its nulls filled
//!   with the training mean and an extra missing-indicator feature.
//! - Date (`yyyy-mm-dd`, optionally followed by a time): year, month, day of the week and days
//!   since the earliest training date, each standardised, plus a missing indicator as above.
//! - Categorical: a vocabulary of the values seen at least `min_category_count` times in
//!   training; id 0 is the bucket for rare, unseen and (when null was rare) null values.
//!
//! A null, an empty cell and NaN (pandas' missing float) are all missing values. A missing
//! value in a column that had none in training is rejected at eval/predict time, naming the
//! row and column: the model has no missing indicator for it. ±inf is always rejected.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::{DataError, Record, Result};

/// How a numeric column is transformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NumericTransform {
    /// `(x − mean) / sd`.
    #[default]
    #[serde(rename = "standard")]
    Standard,
    /// `log1p(x)`, then standardised (for counts and other heavy right tails; `x > −1`).
    #[serde(rename = "log1p+standard")]
    Log1pStandard,
    /// Rank-based: the empirical CDF of the training values, through the inverse normal CDF.
    #[serde(rename = "quantile-normal")]
    QuantileNormal,
}

impl std::str::FromStr for NumericTransform {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::from(s)).map_err(|_| {
            format!("unknown numeric transform `{s}`; expected standard, log1p+standard or quantile-normal")
        })
    }
}

fn d_min_count() -> usize {
    2
}

/// Which columns are metadata and how they are transformed (the training options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Numeric columns.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Categorical columns.
    #[serde(default)]
    pub categorical: Vec<String>,
    /// Date columns.
    #[serde(default)]
    pub date: Vec<String>,
    /// Transform of numeric columns.
    #[serde(default)]
    pub numeric_transform: NumericTransform,
    /// A category seen fewer times than this in training goes to the rare/unknown bucket.
    #[serde(default = "d_min_count")]
    pub min_category_count: usize,
    /// Embedding width of every categorical column; `None`: `min(50, round(1.6·n^0.56))` for
    /// `n` ids (fastai's rule).
    #[serde(default)]
    pub embedding_dim: Option<usize>,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        Self {
            numeric: Vec::new(),
            categorical: Vec::new(),
            date: Vec::new(),
            numeric_transform: NumericTransform::Standard,
            min_category_count: d_min_count(),
            embedding_dim: None,
        }
    }
}

/// One fitted numeric feature (a numeric column, or one part of a date).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericFit {
    /// Feature name (`column`, or `column.year` … for dates).
    pub name: String,
    /// Transform.
    pub transform: NumericTransform,
    /// Value that replaces a null (the training mean of the raw values).
    pub fill: f64,
    /// Mean of the transformed training values (0 for quantile-normal).
    pub mean: f64,
    /// Standard deviation of the transformed training values (1 when constant).
    pub std: f64,
    /// Quantile-normal: sorted training quantiles (at evenly spaced probabilities).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quantiles: Vec<f64>,
}

/// One fitted numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericColumn {
    /// Column name.
    pub column: String,
    /// Its feature.
    pub fit: NumericFit,
    /// Whether training had nulls, so a missing-indicator feature follows.
    pub missing_indicator: bool,
}

/// One fitted date column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateColumn {
    /// Column name.
    pub column: String,
    /// The earliest training date (ISO).
    pub origin: String,
    /// Year, month, day of the week (Monday = 0), days since `origin`.
    pub parts: Vec<NumericFit>,
    /// Whether training had nulls, so a missing-indicator feature follows.
    pub missing_indicator: bool,
}

/// One fitted categorical column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalColumn {
    /// Column name.
    pub column: String,
    /// Known values; value `vocab[i]` has id `i + 1`. Id 0 is rare/unknown. A null is the
    /// value `<null>`.
    pub vocab: Vec<String>,
    /// Embedding width.
    pub embedding_dim: usize,
}

/// Transforms fitted on training data (`features.json` in a model folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedFeatures {
    /// Numeric columns.
    pub numeric: Vec<NumericColumn>,
    /// Date columns.
    pub date: Vec<DateColumn>,
    /// Categorical columns.
    pub categorical: Vec<CategoricalColumn>,
}

/// Encoded metadata of some rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodedFeatures {
    /// Rows × [`FittedFeatures::numeric_width`] numeric features, row-major.
    pub numeric: Vec<f32>,
    /// Rows × categorical columns ids, row-major.
    pub categorical: Vec<i64>,
    /// Per categorical column: values that were not in the vocabulary (sent to bucket 0).
    pub unknown: Vec<usize>,
}

/// The metadata of a batch as tensors (`None` where there are no such features).
#[derive(Debug, Clone)]
pub struct FeatureBatch {
    /// `[batch, numeric_width]`
    pub numeric: Option<Tensor<2>>,
    /// `[batch, categorical columns]` ids
    pub categorical: Option<Tensor<2, Int>>,
}

const NULL: &str = "<null>";
const QUANTILES: usize = 1000;

enum Cell {
    Missing,
    Number(f64),
}

fn bad(path: &Path, row: usize, problem: String) -> DataError {
    DataError::BadRow {
        path: path.to_path_buf(),
        row,
        problem,
    }
}

fn number(path: &Path, row: usize, col: &str, cell: Option<&str>) -> Result<Cell> {
    let Some(s) = cell.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Cell::Missing);
    };
    let v = match s {
        "true" => 1.0,
        "false" => 0.0,
        _ => s.parse::<f64>().map_err(|_| {
            bad(
                path,
                row,
                format!("feature `{col}` holds `{s}`; expected a number (numeric column)"),
            )
        })?,
    };
    if v.is_nan() {
        return Ok(Cell::Missing);
    }
    if !v.is_finite() {
        return Err(bad(
            path,
            row,
            format!(
                "feature `{col}` is {s}; expected a finite number (a missing value is null, empty or NaN)"
            ),
        ));
    }
    Ok(Cell::Number(v))
}

fn date(
    path: &Path,
    row: usize,
    col: &str,
    cell: Option<&str>,
) -> Result<Option<chrono::NaiveDate>> {
    let Some(s) = cell.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let head = s.get(..10).unwrap_or(s);
    ["%Y-%m-%d", "%Y/%m/%d"]
        .iter()
        .find_map(|f| chrono::NaiveDate::parse_from_str(head, f).ok())
        .map(Some)
        .ok_or_else(|| {
            bad(
                path,
                row,
                format!(
                    "feature `{col}` holds `{s}`; expected a date such as 2017-11-20 (date column)"
                ),
            )
        })
}

fn date_parts(d: chrono::NaiveDate, origin: chrono::NaiveDate) -> [f64; 4] {
    use chrono::Datelike;
    [
        d.year() as f64,
        d.month() as f64,
        d.weekday().num_days_from_monday() as f64,
        (d - origin).num_days() as f64,
    ]
}

impl NumericFit {
    fn fit(
        name: String,
        transform: NumericTransform,
        raw: &[f64],
    ) -> std::result::Result<Self, String> {
        let n = raw.len() as f64;
        let fill = raw.iter().sum::<f64>() / n;
        let mut fit = Self {
            name,
            transform,
            fill,
            mean: 0.0,
            std: 1.0,
            quantiles: Vec::new(),
        };
        if transform == NumericTransform::QuantileNormal {
            let mut v = raw.to_vec();
            v.sort_by(f64::total_cmp);
            let q = QUANTILES.min(v.len());
            fit.quantiles = (0..q)
                .map(|i| {
                    let p = if q == 1 {
                        0.0
                    } else {
                        i as f64 / (q - 1) as f64
                    };
                    let x = p * (v.len() - 1) as f64;
                    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
                    v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
                })
                .collect();
            return Ok(fit);
        }
        if transform == NumericTransform::Log1pStandard
            && let Some(x) = raw.iter().find(|&&x| x <= -1.0)
        {
            return Err(format!("log1p needs values > -1, found {x}"));
        }
        let t: Vec<f64> = raw.iter().map(|&x| fit.pre(x)).collect();
        fit.mean = t.iter().sum::<f64>() / n;
        let var = t.iter().map(|x| (x - fit.mean).powi(2)).sum::<f64>() / n;
        fit.std = if var > 1e-24 { var.sqrt() } else { 1.0 };
        Ok(fit)
    }

    fn pre(&self, x: f64) -> f64 {
        match self.transform {
            NumericTransform::Log1pStandard => x.max(-1.0 + 1e-12).ln_1p(),
            _ => x,
        }
    }

    /// The feature value of a raw value (`None` = null, filled with the training mean).
    pub fn apply(&self, x: Option<f64>) -> f64 {
        let x = x.unwrap_or(self.fill);
        match self.transform {
            NumericTransform::QuantileNormal => {
                use statrs::distribution::ContinuousCDF;
                let q = &self.quantiles;
                if q.len() < 2 || q[q.len() - 1] <= q[0] {
                    return 0.0;
                }
                // Interpolated empirical CDF, averaged over ties (as scikit-learn does, from
                // both sides).
                let up = q.partition_point(|&v| v <= x);
                let down = q.partition_point(|&v| v < x);
                let cdf = |k: usize| -> f64 {
                    if k == 0 {
                        return 0.0;
                    }
                    if k >= q.len() {
                        return 1.0;
                    }
                    let (a, b) = (q[k - 1], q[k]);
                    let frac = if b > a { (x - a) / (b - a) } else { 0.0 };
                    ((k - 1) as f64 + frac.clamp(0.0, 1.0)) / (q.len() - 1) as f64
                };
                let u = if up != down {
                    // x equals training quantiles: the middle of their probabilities.
                    0.5 * ((down as f64) + (up - 1) as f64) / (q.len() - 1) as f64
                } else {
                    cdf(up)
                };
                let u = u.clamp(1e-7, 1.0 - 1e-7);
                statrs::distribution::Normal::standard().inverse_cdf(u)
            }
            _ => (self.pre(x) - self.mean) / self.std,
        }
    }
}

fn embedding_rule(n: usize) -> usize {
    ((1.6 * (n as f64).powf(0.56)).round() as usize).clamp(1, 50)
}

impl FeatureSpec {
    /// The feature columns in reading order: numeric, categorical, date (as
    /// [`crate::Columns::features`] and [`Record::features`] hold them).
    pub fn columns(&self) -> Vec<String> {
        self.numeric
            .iter()
            .chain(&self.categorical)
            .chain(&self.date)
            .cloned()
            .collect()
    }

    /// No metadata.
    pub fn is_empty(&self) -> bool {
        self.numeric.is_empty() && self.categorical.is_empty() && self.date.is_empty()
    }

    /// Fits the transforms on training records (read with [`Self::columns`]); `path` and the
    /// record index (1-based) name a bad cell.
    pub fn fit(&self, path: &Path, records: &[Record]) -> Result<FittedFeatures> {
        let width = self.columns().len();
        fn cell(r: &Record, k: usize) -> Option<&str> {
            r.features[k].as_deref()
        }
        for (i, r) in records.iter().enumerate() {
            if r.features.len() != width {
                return Err(bad(
                    path,
                    i + 1,
                    format!("{} feature cells read, expected {width}", r.features.len()),
                ));
            }
        }
        let whole = |col: &str, problem: String| DataError::Feature {
            path: path.to_path_buf(),
            column: col.into(),
            problem,
        };
        let mut numeric = Vec::new();
        for (k, col) in self.numeric.iter().enumerate() {
            let mut raw = Vec::new();
            let mut missing = false;
            for (i, r) in records.iter().enumerate() {
                match number(path, i + 1, col, cell(r, k))? {
                    Cell::Number(v) => raw.push(v),
                    Cell::Missing => missing = true,
                }
            }
            if raw.is_empty() {
                return Err(whole(col, "every training value is null".into()));
            }
            let fit = NumericFit::fit(col.clone(), self.numeric_transform, &raw)
                .map_err(|m| whole(col, m))?;
            numeric.push(NumericColumn {
                column: col.clone(),
                fit,
                missing_indicator: missing,
            });
        }
        let mut categorical = Vec::new();
        let off = self.numeric.len();
        for (k, col) in self.categorical.iter().enumerate() {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for r in records {
                *counts.entry(cell(r, off + k).unwrap_or(NULL)).or_default() += 1;
            }
            let mut vocab: Vec<(&str, usize)> = counts
                .into_iter()
                .filter(|&(_, c)| c >= self.min_category_count.max(1))
                .collect();
            vocab.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let vocab: Vec<String> = vocab.into_iter().map(|(v, _)| v.to_string()).collect();
            let embedding_dim = self
                .embedding_dim
                .unwrap_or_else(|| embedding_rule(vocab.len() + 1));
            categorical.push(CategoricalColumn {
                column: col.clone(),
                vocab,
                embedding_dim,
            });
        }
        let mut date_cols = Vec::new();
        let off = off + self.categorical.len();
        for (k, col) in self.date.iter().enumerate() {
            let mut dates = Vec::new();
            let mut missing = false;
            for (i, r) in records.iter().enumerate() {
                match date(path, i + 1, col, cell(r, off + k))? {
                    Some(d) => dates.push(d),
                    None => missing = true,
                }
            }
            let Some(&origin) = dates.iter().min() else {
                return Err(whole(col, "every training value is null".into()));
            };
            let rows: Vec<[f64; 4]> = dates.iter().map(|&d| date_parts(d, origin)).collect();
            let parts = ["year", "month", "weekday", "days"]
                .iter()
                .enumerate()
                .map(|(j, part)| {
                    let raw: Vec<f64> = rows.iter().map(|r| r[j]).collect();
                    NumericFit::fit(format!("{col}.{part}"), NumericTransform::Standard, &raw)
                        .expect("standard fits any finite values")
                })
                .collect();
            date_cols.push(DateColumn {
                column: col.clone(),
                origin: origin.format("%Y-%m-%d").to_string(),
                parts,
                missing_indicator: missing,
            });
        }
        Ok(FittedFeatures {
            numeric,
            date: date_cols,
            categorical,
        })
    }
}

impl FittedFeatures {
    /// The columns to read, in [`Record::features`] order.
    pub fn columns(&self) -> Vec<String> {
        self.numeric
            .iter()
            .map(|c| c.column.clone())
            .chain(self.categorical.iter().map(|c| c.column.clone()))
            .chain(self.date.iter().map(|c| c.column.clone()))
            .collect()
    }

    /// Numeric features per row (numeric columns, date parts, missing indicators).
    pub fn numeric_width(&self) -> usize {
        self.numeric
            .iter()
            .map(|c| 1 + c.missing_indicator as usize)
            .chain(
                self.date
                    .iter()
                    .map(|c| c.parts.len() + c.missing_indicator as usize),
            )
            .sum()
    }

    /// `(ids including the rare/unknown bucket, embedding width)` per categorical column.
    pub fn categorical_dims(&self) -> Vec<(usize, usize)> {
        self.categorical
            .iter()
            .map(|c| (c.vocab.len() + 1, c.embedding_dim))
            .collect()
    }

    /// Encodes records read with [`Self::columns`]; `first_row` (1-based) is the file row of
    /// `records[0]`, for error messages.
    pub fn encode(
        &self,
        path: &Path,
        first_row: usize,
        records: &[&Record],
    ) -> Result<EncodedFeatures> {
        let n_num = self.numeric.len();
        let n_cat = self.categorical.len();
        let width = n_num + n_cat + self.date.len();
        let mut out = EncodedFeatures {
            numeric: Vec::with_capacity(records.len() * self.numeric_width()),
            categorical: Vec::with_capacity(records.len() * n_cat),
            unknown: vec![0; n_cat],
        };
        let index: Vec<HashMap<&str, i64>> = self
            .categorical
            .iter()
            .map(|c| {
                c.vocab
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.as_str(), i as i64 + 1))
                    .collect()
            })
            .collect();
        let unseen_null = |row: usize, col: &str| {
            bad(
                path,
                row,
                format!(
                    "feature `{col}` is missing (null, empty or NaN), but it had no missing values in training, so the model has no missing indicator for it"
                ),
            )
        };
        for (i, r) in records.iter().enumerate() {
            let row = first_row + i;
            // Cells past the model's (columns a caller reads along, such as an id) are ignored.
            if r.features.len() < width {
                return Err(bad(
                    path,
                    row,
                    format!(
                        "{} feature cells read, expected at least {width}",
                        r.features.len()
                    ),
                ));
            }
            for (k, c) in self.numeric.iter().enumerate() {
                match number(path, row, &c.column, r.features[k].as_deref())? {
                    Cell::Number(v) => {
                        out.numeric.push(c.fit.apply(Some(v)) as f32);
                        if c.missing_indicator {
                            out.numeric.push(0.0);
                        }
                    }
                    Cell::Missing if c.missing_indicator => {
                        out.numeric.push(c.fit.apply(None) as f32);
                        out.numeric.push(1.0);
                    }
                    Cell::Missing => return Err(unseen_null(row, &c.column)),
                }
            }
            for (k, c) in self.date.iter().enumerate() {
                let origin = chrono::NaiveDate::parse_from_str(&c.origin, "%Y-%m-%d")
                    .expect("origin written by fit");
                match date(
                    path,
                    row,
                    &c.column,
                    r.features[n_num + n_cat + k].as_deref(),
                )? {
                    Some(d) => {
                        let p = date_parts(d, origin);
                        for (f, &x) in c.parts.iter().zip(&p) {
                            out.numeric.push(f.apply(Some(x)) as f32);
                        }
                        if c.missing_indicator {
                            out.numeric.push(0.0);
                        }
                    }
                    None if c.missing_indicator => {
                        for f in &c.parts {
                            out.numeric.push(f.apply(None) as f32);
                        }
                        out.numeric.push(1.0);
                    }
                    None => return Err(unseen_null(row, &c.column)),
                }
            }
            for (k, idx) in index.iter().enumerate() {
                let v = r.features[n_num + k].as_deref().unwrap_or(NULL);
                match idx.get(v) {
                    Some(&id) => out.categorical.push(id),
                    None => {
                        out.categorical.push(0);
                        out.unknown[k] += 1;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The rows `idx` of encoded features as tensors.
    pub fn batch(&self, enc: &EncodedFeatures, idx: &[usize], device: &Device) -> FeatureBatch {
        let w = self.numeric_width();
        let k = self.categorical.len();
        let b = idx.len();
        FeatureBatch {
            numeric: (w > 0).then(|| {
                let v: Vec<f32> = idx
                    .iter()
                    .flat_map(|&i| enc.numeric[i * w..(i + 1) * w].iter().copied())
                    .collect();
                Tensor::from_data(TensorData::new(v, [b, w]), device)
            }),
            categorical: (k > 0).then(|| {
                let v: Vec<i64> = idx
                    .iter()
                    .flat_map(|&i| enc.categorical[i * k..(i + 1) * k].iter().copied())
                    .collect();
                Tensor::from_data(TensorData::new(v, [b, k]), device)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(cells: &[Option<&str>]) -> Record {
        Record {
            features: cells.iter().map(|c| c.map(String::from)).collect(),
            ..Record::text("t")
        }
    }

    fn spec(t: NumericTransform) -> FeatureSpec {
        FeatureSpec {
            numeric: vec!["n".into()],
            categorical: vec!["c".into()],
            date: vec!["d".into()],
            numeric_transform: t,
            min_category_count: 2,
            embedding_dim: None,
        }
    }

    #[test]
    fn fitted_on_train_applied_the_same_and_round_trips_as_json() {
        let p = Path::new("train.csv");
        let train = vec![
            rec(&[Some("1"), Some("a"), Some("2020-01-01")]),
            rec(&[Some("3"), Some("a"), Some("2020-01-03")]),
            rec(&[None, Some("b"), Some("2020-01-02")]),
            rec(&[Some("5"), Some("c"), None]),
        ];
        let fit = spec(NumericTransform::Standard).fit(p, &train).unwrap();
        // a (twice) is known; b and c are rare.
        assert_eq!(fit.categorical[0].vocab, vec!["a".to_string()]);
        // n: value + indicator; d: 4 parts + indicator.
        assert_eq!(fit.numeric_width(), 2 + 5);
        let refs: Vec<&Record> = train.iter().collect();
        let enc = fit.encode(p, 1, &refs).unwrap();
        let row = |i: usize| &enc.numeric[i * 7..(i + 1) * 7];
        // Mean 3, sd sqrt(8/3).
        let sd = (8.0f64 / 3.0).sqrt();
        assert!((row(0)[0] as f64 - (1.0 - 3.0) / sd).abs() < 1e-6);
        assert_eq!(row(2)[..2], [0.0, 1.0]);
        assert_eq!(row(3)[6], 1.0);
        assert_eq!(enc.categorical, vec![1, 1, 0, 0]);
        assert_eq!(enc.unknown, vec![2]);
        let json = serde_json::to_string(&fit).unwrap();
        let back: FittedFeatures = serde_json::from_str(&json).unwrap();
        assert_eq!(back.encode(p, 1, &refs).unwrap(), enc);
    }

    #[test]
    fn bad_cells_name_the_row_and_column() {
        let p = Path::new("x.parquet");
        let s = spec(NumericTransform::Standard);
        let inf = vec![
            rec(&[Some("1"), Some("a"), Some("2020-01-01")]),
            rec(&[Some("inf"), Some("a"), Some("2020-01-01")]),
        ];
        let e = s.fit(p, &inf).unwrap_err().to_string();
        assert!(
            e.contains("row 2") && e.contains("`n`") && e.contains("inf"),
            "{e}"
        );
        // NaN in training is a missing value: filled, with an indicator.
        let nan = vec![
            rec(&[Some("1"), Some("a"), Some("2020-01-01")]),
            rec(&[Some("NaN"), Some("a"), Some("2020-01-01")]),
        ];
        let fit = s.fit(p, &nan).unwrap();
        assert!(fit.numeric[0].missing_indicator);
        assert_eq!(fit.numeric[0].fit.fill, 1.0);
        let word = vec![rec(&[Some("many"), Some("a"), Some("2020-01-01")])];
        let e = s.fit(p, &word).unwrap_err().to_string();
        assert!(
            e.contains("`many`") && e.contains("expected a number"),
            "{e}"
        );
        let day = vec![rec(&[Some("1"), Some("a"), Some("yesterday")])];
        let e = s.fit(p, &day).unwrap_err().to_string();
        assert!(e.contains("`d`") && e.contains("expected a date"), "{e}");
        // A null where training had none.
        let ok = vec![rec(&[Some("1"), Some("a"), Some("2020-01-01")])];
        let fit = s.fit(p, &ok).unwrap();
        let null = rec(&[None, Some("a"), Some("2020-01-01")]);
        let e = fit.encode(p, 7, &[&null]).unwrap_err().to_string();
        assert!(
            e.contains("row 7") && e.contains("no missing values in training"),
            "{e}"
        );
        let nan = rec(&[Some("NaN"), Some("a"), Some("2020-01-01")]);
        let e = fit.encode(p, 7, &[&nan]).unwrap_err().to_string();
        assert!(
            e.contains("row 7") && e.contains("no missing values in training"),
            "{e}"
        );
    }

    #[test]
    fn quantile_normal_and_log1p() {
        let p = Path::new("t");
        let train: Vec<Record> = (0..101)
            .map(|i| rec(&[Some(&format!("{}", i * i)), Some("a"), Some("2020-01-01")]))
            .collect();
        let fit = spec(NumericTransform::QuantileNormal)
            .fit(p, &train)
            .unwrap();
        let f = &fit.numeric[0].fit;
        // The median maps to 0, the extremes to about ±5.2 (clipped at 1e-7).
        assert!(f.apply(Some(2500.0)).abs() < 1e-9);
        assert!(f.apply(Some(1e9)) > 5.0 && f.apply(Some(-1.0)) < -5.0);
        assert!(f.apply(Some(100.0)) < f.apply(Some(121.0)));
        let fit = spec(NumericTransform::Log1pStandard)
            .fit(p, &train)
            .unwrap();
        let f = &fit.numeric[0].fit;
        let t: Vec<f64> = (0..101).map(|i| f.apply(Some((i * i) as f64))).collect();
        let mean = t.iter().sum::<f64>() / 101.0;
        assert!(mean.abs() < 1e-9);
        let neg = vec![rec(&[Some("-2"), Some("a"), Some("2020-01-01")])];
        let e = spec(NumericTransform::Log1pStandard)
            .fit(p, &neg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("log1p"), "{e}");
    }
}
