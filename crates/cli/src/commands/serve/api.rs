//! The HTTP API's requests, responses and errors.
//!
//! - `POST /predict` is text-embeddings-inference's: `inputs` is a text, a pair
//!   `[text, text]`, or a batch `[[text], [text, text], …]`; the answer is `[{label, score}]`
//!   sorted by score (a list of them for a batch).
//! - `POST /classify` is sequin's: `inputs` is an object (or a list of them) with `text`,
//!   optionally `text_pair`, and the model's metadata columns by name; `top_k` and `function`
//!   work as `sequin predict`'s flags, and the answer is `predict`'s JSONL row.
//!
//! Every error is `{"error": reason, "error_type": kind}` with a 4xx or 5xx status, and the
//! reason names the field (`inputs[2]`, `inputs[0].price`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    /// 422: a well-formed request whose content cannot be used.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "validation",
            message: message.into(),
        }
    }

    /// 413: too large (body, batch or text).
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "validation",
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_type: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            error_type: self.kind,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a JSON body into `T`: malformed JSON is 400, JSON of the wrong shape 422, and the
/// reason names the field (through serde_path_to_error).
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let status = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let message = match path.as_str() {
            "." | "" => format!("invalid request body: {inner}"),
            p => format!("{p}: {inner}"),
        };
        ApiError {
            status,
            kind: "validation",
            message,
        }
    })
}

/// `POST /predict`'s body (TEI's `PredictRequest`).
#[derive(Deserialize)]
pub(crate) struct PredictRequest {
    /// A text, a pair, or a batch (see [`sequences`]).
    pub(crate) inputs: Value,
    /// `false`: refuse a text longer than the model's max length (as TEI does); `true`:
    /// truncate it. Absent: the model's saved long-text policy, as `sequin predict`.
    #[serde(default)]
    pub(crate) truncate: Option<bool>,
    /// Raw logits instead of probabilities.
    #[serde(default)]
    pub(crate) raw_scores: bool,
}

/// One input sequence: a text, or a text pair.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sequence {
    pub(crate) text: String,
    pub(crate) pair: Option<String>,
}

/// TEI's `inputs`: `"text"` (one), `["a", "b"]` (one pair), or `[["a"], ["a", "b"], …]` (a
/// batch). Returns the sequences and whether it was a batch.
pub(crate) fn sequences(inputs: &Value) -> Result<(Vec<Sequence>, bool), ApiError> {
    const SHAPES: &str = "a string, a pair of strings [string, string], or a batch [[string], [string, string], ...]";
    let seq = |v: &[Value], at: &str| -> Result<Sequence, ApiError> {
        let texts: Option<Vec<&str>> = v.iter().map(Value::as_str).collect();
        match texts.as_deref() {
            Some([t]) => Ok(Sequence {
                text: t.to_string(),
                pair: None,
            }),
            Some([t, p]) => Ok(Sequence {
                text: t.to_string(),
                pair: Some(p.to_string()),
            }),
            _ => Err(ApiError::invalid(format!(
                "{at}: expected [string] or [string, string], got {}",
                short(&Value::Array(v.to_vec()))
            ))),
        }
    };
    match inputs {
        Value::String(s) => Ok((
            vec![Sequence {
                text: s.clone(),
                pair: None,
            }],
            false,
        )),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::invalid("inputs: empty; send at least one text"))
        }
        Value::Array(items) if items[0].is_string() => Ok((vec![seq(items, "inputs")?], false)),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("inputs[{i}]");
                match item {
                    Value::Array(v) => out.push(seq(v, &at)?),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "{at}: expected [string] or [string, string], got {}",
                            short(other)
                        )));
                    }
                }
            }
            Ok((out, true))
        }
        other => Err(ApiError::invalid(format!(
            "inputs: expected {SHAPES}, got {}",
            short(other)
        ))),
    }
}

/// A value, shortened for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// TEI's answer item.
#[derive(Serialize)]
pub(crate) struct LabelScore {
    pub(crate) label: String,
    pub(crate) score: f32,
    /// Multi-label models: whether the label's probability reaches its saved threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) predicted: Option<bool>,
}

/// `POST /classify`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClassifyRequest {
    /// `{"text": …, "text_pair": …, "<metadata column>": …}` or a list of them.
    pub(crate) inputs: Value,
    /// The best k labels with their scores (`"all"`: every label).
    #[serde(default)]
    pub(crate) top_k: Option<TopK>,
    /// `softmax`, `sigmoid` or `none` [default: the model's problem type's].
    #[serde(default)]
    pub(crate) function: Option<sequin_train::ScoreFunction>,
    /// As `/predict`'s.
    #[serde(default)]
    pub(crate) truncate: Option<bool>,
}

/// `top_k`: a count or `"all"`.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
pub(crate) enum TopK {
    N(usize),
    All(AllLabels),
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AllLabels {
    All,
}

impl TopK {
    pub(crate) fn count(self) -> usize {
        match self {
            Self::N(n) => n,
            Self::All(_) => usize::MAX,
        }
    }
}

/// One `/classify` input, checked against the model's fields.
pub(crate) struct NamedInput {
    pub(crate) seq: Sequence,
    /// The metadata cells in the model's column order (`None`: null).
    pub(crate) features: Vec<Option<String>>,
}

/// `/classify`'s `inputs`: one object or a list; each has `text` (a string), optionally
/// `text_pair`, and every metadata column the model reads (null allowed, absence refused).
pub(crate) fn named_inputs(
    inputs: &Value,
    columns: &[String],
) -> Result<(Vec<NamedInput>, bool), ApiError> {
    let (items, batch): (Vec<&Value>, bool) = match inputs {
        Value::Array(v) if v.is_empty() => {
            return Err(ApiError::invalid("inputs: empty; send at least one input"));
        }
        Value::Array(v) => (v.iter().collect(), true),
        other => (vec![other], false),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = if batch {
            format!("inputs[{i}]")
        } else {
            "inputs".to_string()
        };
        out.push(named_input(item, columns, &at)?);
    }
    Ok((out, batch))
}

fn named_input(item: &Value, columns: &[String], at: &str) -> Result<NamedInput, ApiError> {
    let fields = || {
        let mut f = vec!["text".to_string(), "text_pair".to_string()];
        f.extend(columns.iter().cloned());
        f.join(", ")
    };
    let Value::Object(o) = item else {
        return Err(ApiError::invalid(format!(
            "{at}: expected an object with the fields {}, got {}",
            fields(),
            short(item)
        )));
    };
    for k in o.keys() {
        if k != "text" && k != "text_pair" && !columns.contains(k) {
            return Err(ApiError::invalid(format!(
                "{at}.{k}: unknown field; this model reads {}",
                fields()
            )));
        }
    }
    let text = match o.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "{at}.text: expected a string, got {}",
                short(other)
            )));
        }
        None => return Err(ApiError::invalid(format!("{at}.text: missing"))),
    };
    let pair = match o.get("text_pair") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "{at}.text_pair: expected a string or null, got {}",
                short(other)
            )));
        }
    };
    let mut features = Vec::with_capacity(columns.len());
    for c in columns {
        features.push(match o.get(c) {
            None => {
                return Err(ApiError::invalid(format!(
                    "{at}.{c}: missing metadata field (this model reads {}; send null for a missing value)",
                    columns.join(", ")
                )));
            }
            Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "{at}.{c}: expected a string, a number, a boolean or null, got {}",
                    short(other)
                )));
            }
        });
    }
    Ok(NamedInput {
        seq: Sequence { text, pair },
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tei_inputs_are_a_text_a_pair_or_a_batch() {
        let one = sequences(&json!("hi")).unwrap();
        assert_eq!((one.0.len(), one.1), (1, false));
        let pair = sequences(&json!(["a", "b"])).unwrap();
        assert_eq!(pair.0[0].pair.as_deref(), Some("b"));
        assert!(!pair.1);
        let batch = sequences(&json!([["a"], ["b", "c"]])).unwrap();
        assert!(batch.1);
        assert_eq!(batch.0[1].pair.as_deref(), Some("c"));
        let e = sequences(&json!([["a"], 3])).unwrap_err();
        assert!(e.message.starts_with("inputs[1]:"), "{}", e.message);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(sequences(&json!(["a", "b", "c"])).is_err());
        assert!(sequences(&json!([])).is_err());
    }

    #[test]
    fn named_inputs_name_the_missing_or_unknown_field() {
        let cols = vec!["price".to_string()];
        let e = named_inputs(&json!([{"text": "a", "price": 1}, {"text": "b"}]), &cols)
            .err()
            .unwrap();
        assert!(
            e.message.starts_with("inputs[1].price: missing"),
            "{}",
            e.message
        );
        let e = named_inputs(&json!({"text": "a", "price": 1, "colour": "red"}), &cols)
            .err()
            .unwrap();
        assert!(
            e.message.starts_with("inputs.colour: unknown field"),
            "{}",
            e.message
        );
        let (ok, batch) = named_inputs(&json!({"text": "a", "price": 2.5}), &cols).unwrap();
        assert!(!batch);
        assert_eq!(ok[0].features, vec![Some("2.5".to_string())]);
    }

    #[test]
    fn malformed_json_is_400_and_a_wrong_type_422_naming_the_field() {
        let e = parse::<PredictRequest>(b"{\"inputs\": ").err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse::<PredictRequest>(br#"{"inputs": "a", "raw_scores": "yes"}"#)
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("raw_scores:"), "{}", e.message);
    }
}
