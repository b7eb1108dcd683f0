//! The label map: built from the training data, checked against every other split.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::{DataError, Record, Result};

/// Class names in id order, and their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    names: Vec<String>,
    ids: HashMap<String, usize>,
}

/// The error for a list label (record `i`) in single-label data.
fn list_label(path: &Path, i: usize) -> DataError {
    DataError::BadRow {
        path: path.to_path_buf(),
        row: i + 1,
        problem: "the label is a list; train with --problem-type multi_label_classification".into(),
    }
}

impl LabelMap {
    /// Fails naming the labels of `path` that training never saw.
    fn known(&self, path: &Path, unknown: std::collections::BTreeSet<String>) -> Result<()> {
        if unknown.is_empty() {
            return Ok(());
        }
        Err(DataError::UnknownLabels {
            path: path.to_path_buf(),
            labels: unknown.into_iter().collect(),
            known: self.names.clone(),
        })
    }

    /// From class names in id order.
    pub fn new(names: Vec<String>) -> Self {
        let ids = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Self { names, ids }
    }

    /// Builds the map from training records: sorted names (numeric order when every label is
    /// an integer), as transformers' examples do.
    pub fn from_train(records: &[Record], path: &Path) -> Result<Self> {
        if let Some(i) = records.iter().position(|r| r.labels.is_some()) {
            return Err(list_label(path, i));
        }
        let set: BTreeSet<&str> = records.iter().filter_map(|r| r.label.as_deref()).collect();
        let mut names: Vec<String> = set.into_iter().map(String::from).collect();
        if names.iter().all(|n| n.parse::<i64>().is_ok()) {
            names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
        }
        if names.len() < 2 {
            return Err(DataError::TooFewLabels {
                path: path.to_path_buf(),
                labels: names,
            });
        }
        Ok(Self::new(names))
    }

    /// The label set of multi-label training records: every label that occurs, sorted.
    pub fn from_train_sets(records: &[Record], path: &Path) -> Result<Self> {
        let mut set = BTreeSet::new();
        for (i, r) in records.iter().enumerate() {
            let Some(ls) = &r.labels else {
                return Err(DataError::BadRow {
                    path: path.to_path_buf(),
                    row: i + 1,
                    problem: match &r.label {
                        Some(l) => format!(
                            "the label `{l}` is a single value, but multi-label data needs a list of labels (or 0/1 label columns) in every row"
                        ),
                        None => "the labels are missing (null)".into(),
                    },
                });
            };
            set.extend(ls.iter().map(String::as_str));
        }
        let names: Vec<String> = set.into_iter().map(String::from).collect();
        if names.len() < 2 {
            return Err(DataError::TooFewLabels {
                path: path.to_path_buf(),
                labels: names,
            });
        }
        Ok(Self::new(names))
    }

    /// Multi-hot targets (`[n, labels]`, 1.0 where the row carries the label); a label the map
    /// lacks is an error naming all of them.
    pub fn encode_sets(&self, records: &[Record], path: &Path) -> Result<Vec<Vec<f32>>> {
        let mut unknown = BTreeSet::new();
        let mut out = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            // A single label in a multi-label file is a set of one.
            let one;
            let ls: &[String] = match (&r.labels, &r.label) {
                (Some(ls), _) => ls,
                (None, Some(l)) => {
                    one = [l.clone()];
                    &one
                }
                (None, None) => {
                    return Err(DataError::BadRow {
                        path: path.to_path_buf(),
                        row: i + 1,
                        problem: "the labels are missing (null)".into(),
                    });
                }
            };
            let mut row = vec![0f32; self.len()];
            for l in ls {
                match self.id(l) {
                    Some(id) => row[id] = 1.0,
                    None => {
                        unknown.insert(l.clone());
                    }
                }
            }
            out.push(row);
        }
        self.known(path, unknown)?;
        Ok(out)
    }

    /// Regression targets: every label parsed as a finite number.
    pub fn encode_values(records: &[Record], path: &Path) -> Result<Vec<f32>> {
        records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let bad = |problem: String| DataError::BadRow {
                    path: path.to_path_buf(),
                    row: i + 1,
                    problem,
                };
                let l = r
                    .label
                    .as_deref()
                    .ok_or_else(|| bad("the target value is missing (null)".into()))?;
                match l.trim().parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(v as f32),
                    Ok(v) => Err(bad(format!(
                        "the target value is {v}; expected a finite number"
                    ))),
                    Err(_) => Err(bad(format!(
                        "the target `{l}` is not a number (regression needs numeric labels)"
                    ))),
                }
            })
            .collect()
    }

    /// Class names in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The id of a class name.
    pub fn id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    /// Ids of every record's label; any label the map lacks is an error naming all of them.
    pub fn encode(&self, records: &[Record], path: &Path) -> Result<Vec<usize>> {
        let mut unknown = BTreeSet::new();
        let mut out = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            if r.labels.is_some() {
                return Err(list_label(path, i));
            }
            let Some(l) = r.label.as_deref() else {
                return Err(DataError::BadRow {
                    path: path.to_path_buf(),
                    row: i + 1,
                    problem: "the label is missing (null)".into(),
                });
            };
            match self.id(l) {
                Some(id) => out.push(id),
                None => {
                    unknown.insert(l.to_string());
                }
            }
        }
        self.known(path, unknown)?;
        Ok(out)
    }
}
