//! `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use sequin_encoders::{BertConfig, DistilBertConfig, LongformerConfig, ModernBertConfig};
use sequin_heads::ProblemType;
use serde_json::{Map, Value};

use crate::{HfError, Result, io_err};

/// Class names in id order (`id2label`).
pub type LabelNames = Vec<String>;

/// The architecture fields of a supported family.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchConfig {
    /// `bert`
    Bert(BertConfig),
    /// `roberta`, `xlm-roberta` (BERT's fields; positions offset by `pad_token_id + 1`).
    Roberta(BertConfig),
    /// `distilbert`
    DistilBert(DistilBertConfig),
    /// `longformer` (RoBERTa's fields plus `attention_window`).
    Longformer(LongformerConfig),
    /// `modernbert`
    ModernBert(ModernBertConfig),
}

impl ArchConfig {
    /// The longest input, special tokens included, the position table allows.
    pub fn max_length(&self) -> usize {
        match self {
            Self::Bert(c) => c.max_position_embeddings,
            Self::Roberta(c) => c.roberta_max_length(),
            Self::DistilBert(c) => c.max_position_embeddings,
            Self::Longformer(c) => c.max_length(),
            Self::ModernBert(c) => c.max_position_embeddings,
        }
    }

    /// Rows of the word-embedding table.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Bert(c) | Self::Roberta(c) => c.vocab_size,
            Self::DistilBert(c) => c.vocab_size,
            Self::Longformer(c) => c.bert.vocab_size,
            Self::ModernBert(c) => c.vocab_size,
        }
    }

    /// transformers' class name for the sequence classifier of this family.
    pub fn classifier_architecture(&self, model_type: &str) -> &'static str {
        match (self, model_type) {
            (Self::Bert(_), _) => "BertForSequenceClassification",
            (Self::Roberta(_), "xlm-roberta") => "XLMRobertaForSequenceClassification",
            (Self::Roberta(_), _) => "RobertaForSequenceClassification",
            (Self::DistilBert(_), _) => "DistilBertForSequenceClassification",
            (Self::Longformer(_), _) => "LongformerForSequenceClassification",
            (Self::ModernBert(_), _) => "ModernBertForSequenceClassification",
        }
    }
}

/// A model folder's `config.json`: the typed fields sequin uses, plus every other key kept
/// as it was.
#[derive(Debug, Clone)]
pub struct HfConfig {
    /// `model_type`, e.g. `bert`.
    pub model_type: String,
    /// The architecture fields.
    pub arch: ArchConfig,
    /// `id2label` in id order, if the folder is a classifier.
    pub labels: Option<LabelNames>,
    /// `problem_type`.
    pub problem_type: Option<ProblemType>,
    /// `architectures`.
    pub architectures: Vec<String>,
    /// The whole JSON object as read.
    pub raw: Map<String, Value>,
}

/// The model types this version can load.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "bert",
    "distilbert",
    "longformer",
    "modernbert",
    "roberta",
    "xlm-roberta",
];

impl HfConfig {
    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Self::parse(&text, &path)
    }

    /// Parses config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let cfg_err = |message: String| HfError::Config {
            path: path.to_path_buf(),
            message,
        };
        let raw: Map<String, Value> =
            serde_json::from_str(text).map_err(|e| cfg_err(e.to_string()))?;
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| cfg_err("no `model_type` key".into()))?
            .to_string();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(HfError::UnsupportedModel {
                path: path.to_path_buf(),
                model_type,
                supported: SUPPORTED_MODEL_TYPES.join(", "),
            });
        }
        let value = Value::Object(raw.clone());
        let arch = match model_type.as_str() {
            "distilbert" => {
                let c: DistilBertConfig =
                    serde_json::from_value(value).map_err(|e| cfg_err(e.to_string()))?;
                c.validate().map_err(|e| cfg_err(e.to_string()))?;
                ArchConfig::DistilBert(c)
            }
            "longformer" => {
                let c: LongformerConfig =
                    serde_json::from_value(value).map_err(|e| cfg_err(e.to_string()))?;
                c.validate().map_err(|e| cfg_err(e.to_string()))?;
                ArchConfig::Longformer(c)
            }
            "modernbert" => {
                let c: ModernBertConfig =
                    serde_json::from_value(value).map_err(|e| cfg_err(e.to_string()))?;
                c.plan().map_err(|e| cfg_err(e.to_string()))?;
                ArchConfig::ModernBert(c)
            }
            t => {
                let c: BertConfig =
                    serde_json::from_value(value).map_err(|e| cfg_err(e.to_string()))?;
                c.validate().map_err(|e| cfg_err(e.to_string()))?;
                if t == "bert" {
                    ArchConfig::Bert(c)
                } else {
                    ArchConfig::Roberta(c)
                }
            }
        };
        let labels = match raw.get("id2label") {
            Some(Value::Object(m)) if !m.is_empty() => {
                let mut by_id = BTreeMap::new();
                for (k, v) in m {
                    let id: usize = k
                        .parse()
                        .map_err(|_| cfg_err(format!("id2label key `{k}` is not an integer")))?;
                    let name = v
                        .as_str()
                        .ok_or_else(|| cfg_err(format!("id2label[{k}] is not a string")))?;
                    by_id.insert(id, name.to_string());
                }
                if by_id.keys().copied().ne(0..by_id.len()) {
                    return Err(cfg_err("id2label ids are not 0..n".into()));
                }
                Some(by_id.into_values().collect())
            }
            _ => None,
        };
        let problem_type = match raw.get("problem_type") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| cfg_err(format!("problem_type: {e}")))?,
            ),
        };
        let architectures = raw
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            model_type,
            arch,
            labels,
            problem_type,
            architectures,
            raw,
        })
    }

    /// The config to write for a trained classifier: the original keys, with `architectures`,
    /// `id2label`, `label2id` and `problem_type` set.
    pub fn for_classifier(
        &self,
        labels: &[String],
        problem_type: ProblemType,
    ) -> Map<String, Value> {
        let mut out = self.raw.clone();
        // A marker that only a fusion model's folder carries (written by sequin-train).
        out.remove("sequin_fusion");
        out.insert(
            "architectures".into(),
            Value::Array(vec![Value::String(
                self.arch.classifier_architecture(&self.model_type).into(),
            )]),
        );
        out.insert(
            "id2label".into(),
            Value::Object(
                labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i.to_string(), Value::String(l.clone())))
                    .collect(),
            ),
        );
        out.insert(
            "label2id".into(),
            Value::Object(
                labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.clone(), Value::from(i)))
                    .collect(),
            ),
        );
        out.insert(
            "problem_type".into(),
            serde_json::to_value(problem_type).expect("enum serialises"),
        );
        out.remove("_name_or_path");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_model_type_lists_supported() {
        let err = HfConfig::parse(r#"{"model_type": "gpt2"}"#, Path::new("x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gpt2") && err.contains("bert") && err.contains("x/config.json"),
            "{err}"
        );
    }
}
