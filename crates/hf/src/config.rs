//! `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use sequin_encoders::EncoderError;
use sequin_heads::{CheckpointKeys, Family, ProblemType, SequenceClassifier};
use serde_json::{Map, Value};

use crate::{HfError, Result, io_err};

/// Class names in id order (`id2label`).
pub type LabelNames = Vec<String>;

macro_rules! arch_config {
    ($($v:ident => $t:ty),* $(,)?) => {
        /// The architecture fields of a supported family (one variant per registered family,
        /// holding its family's config, [`sequin_heads::ConfigOf`]).
        #[derive(Debug, Clone, PartialEq)]
        pub enum ArchConfig {
            $(
                #[allow(missing_docs)]
                $v(sequin_heads::ConfigOf<$t>),
            )*
        }

        impl ArchConfig {
            /// The longest input, special tokens included, the position table allows.
            pub fn max_length(&self) -> usize {
                match self {
                    $(Self::$v(c) => <$t as Family>::max_length(c),)*
                }
            }

            /// Rows of the word-embedding table.
            pub fn vocab_size(&self) -> usize {
                match self {
                    $(Self::$v(c) => <$t as Family>::vocab_size(c),)*
                }
            }

            /// transformers' class name for the sequence classifier of this family.
            pub fn classifier_architecture(&self, model_type: &str) -> &'static str {
                let types = match self {
                    $(Self::$v(_) => <$t as Family>::MODEL_TYPES,)*
                };
                types
                    .iter()
                    .find(|(t, _)| *t == model_type)
                    .unwrap_or(&types[0])
                    .1
            }

            /// How this family's checkpoints spell their keys.
            pub fn keys(&self) -> &'static CheckpointKeys {
                match self {
                    $(Self::$v(_) => &<$t as Family>::KEYS,)*
                }
            }

            /// A sequence classifier of this family with fresh weights.
            pub fn init_classifier(
                &self,
                num_labels: usize,
                device: &Device,
            ) -> std::result::Result<SequenceClassifier, EncoderError> {
                Ok(match self {
                    $(Self::$v(c) => SequenceClassifier::$v(<$t as Family>::init(c, num_labels, device)?),)*
                })
            }

            /// The family that reads `model_type`, with its config parsed from `value` and
            /// checked; `None` for an unsupported type.
            fn parse(model_type: &str, value: Value) -> Option<std::result::Result<Self, String>> {
                $(
                    if <$t as Family>::MODEL_TYPES.iter().any(|(t, _)| *t == model_type) {
                        return Some(
                            serde_json::from_value::<sequin_heads::ConfigOf<$t>>(value)
                                .map_err(|e| e.to_string())
                                .and_then(|c| {
                                    <$t as Family>::check(&c).map_err(|e| e.to_string())?;
                                    Ok(Self::$v(c))
                                }),
                        );
                    }
                )*
                None
            }
        }

        /// The model types this version can load, sorted.
        pub fn supported_model_types() -> Vec<&'static str> {
            let mut all: Vec<&'static str> = Vec::new();
            $(all.extend(<$t as Family>::MODEL_TYPES.iter().map(|(t, _)| *t));)*
            all.sort_unstable();
            all
        }
    };
}

sequin_heads::for_each_family!(arch_config);

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
        let arch = match ArchConfig::parse(&model_type, Value::Object(raw.clone())) {
            Some(arch) => arch.map_err(cfg_err)?,
            None => {
                return Err(HfError::UnsupportedModel {
                    path: path.to_path_buf(),
                    model_type,
                    supported: supported_model_types().join(", "),
                });
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
