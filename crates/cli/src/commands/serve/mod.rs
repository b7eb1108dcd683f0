//! `sequin serve`: a classifier over HTTP, compatible with text-embeddings-inference.
//!
//! - `api`: requests, answers and errors (TEI's `/predict` shapes; sequin's `/classify`);
//! - `batcher`: the token-budget batching queue and the inference thread;
//! - `metrics`: Prometheus metrics;
//! - `playground.html`: the page at `/`, embedded in the binary (no network).
//!
//! The async runtime (two threads) parses, validates and tokenizes requests and writes
//! answers; one inference thread owns the model and runs batches on the CPU pool. A request
//! is admitted (or answered 429) before any work, and an admitted request is always answered.

mod api;
mod batcher;
mod metrics;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::Device;
use sequin_data::{FittedFeatures, Record};
use sequin_heads::ProblemType;
use sequin_tokenize::{LongText, Tokenizer};
use sequin_train::{Classifier, Prediction, ScoreFunction};
use serde_json::{Value, json};

use self::api::{ApiError, ClassifyRequest, LabelScore, PredictRequest};
use self::batcher::{Budget, Job};
use self::metrics::Metrics;
use crate::args::ServeArgs;

/// The playground page.
const PAGE: &str = include_str!("playground.html");

/// What the handlers know of the model (the model itself stays on the inference thread).
struct Card {
    tokenizer: Tokenizer,
    features: Option<FittedFeatures>,
    feature_columns: Vec<String>,
    max_length: usize,
    /// Whether a text longer than `max_length` is cut (not read in windows).
    truncates: bool,
    multi_label: bool,
    /// `GET /info`.
    info: Value,
}

/// The limits of the server.
struct Limits {
    max_concurrent: usize,
    max_client_batch: usize,
}

struct AppState {
    card: Card,
    limits: Limits,
    queue: mpsc::Sender<Job>,
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
    api_key: Option<String>,
}

/// Runs the server until SIGTERM or Ctrl-C, then drains the requests in flight and returns.
pub(crate) fn serve(a: ServeArgs, device: &Device) -> Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel::<Job>();
    let (card_tx, card_rx) = mpsc::channel::<Result<Card>>();
    let budget = Budget {
        max_tokens: a.max_batch_tokens,
        max_requests: a.max_batch_requests.unwrap_or(usize::MAX),
        token_cap: usize::MAX,
    };
    let device = device.clone();
    let m = metrics.clone();
    let run = a.run.clone();
    let limits_json = json!({
        "max_concurrent_requests": a.max_concurrent_requests,
        "max_batch_tokens": a.max_batch_tokens,
        "max_batch_requests": a.max_batch_requests,
        "max_client_batch_size": a.max_client_batch_size,
        "payload_limit": a.payload_limit,
        "batch_size": a.run.batch_size,
    });
    let worker = std::thread::Builder::new()
        .name("sequin-inference".into())
        .spawn(move || {
            let loaded = crate::commands::eval::load(&run, &device);
            let (c, opts) = match loaded {
                Ok(x) => x,
                Err(e) => {
                    let _ = card_tx.send(Err(e));
                    return;
                }
            };
            let card = card(&c, opts.max_length, &run.model, limits_json);
            let budget = Budget {
                token_cap: if card.truncates {
                    opts.max_length
                } else {
                    usize::MAX
                },
                ..budget
            };
            if card_tx.send(Ok(card)).is_ok() {
                batcher::run(c, opts, run.batch_size, rx, budget, m);
            }
        })
        .context("cannot start the inference thread")?;
    let card = match card_rx.recv() {
        Ok(card) => card?,
        Err(_) => anyhow::bail!("the inference thread stopped while loading the model"),
    };
    let state = Arc::new(AppState {
        card,
        limits: Limits {
            max_concurrent: a.max_concurrent_requests,
            max_client_batch: a.max_client_batch_size,
        },
        queue: tx,
        in_flight: AtomicUsize::new(0),
        metrics,
        api_key: a.api_key.filter(|k| !k.is_empty()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sequin-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let app = router(state, a.payload_limit);
    let served: Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        eprintln!("sequin serve: listening on http://{addr} (playground at http://{addr}/)");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the server failed")
    });
    drop(runtime);
    // Every sender is gone with the router: the inference thread finishes and returns.
    let _ = worker.join();
    served?;
    eprintln!("sequin serve: stopped");
    Ok(())
}

/// The routes and their layers (the outermost, last, counts every answer).
fn router(state: Arc<AppState>, payload_limit: usize) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics_text))
        .route("/predict", post(predict))
        .route("/classify", post(classify))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(payload_limit))
        .layer(from_fn_with_state(state.clone(), authorize))
        .layer(from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Waits for SIGTERM (or Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("sequin serve: shutting down; answering the requests in flight first");
}

/// The model card and `/info`.
fn card(c: &Classifier, max_length: usize, model_id: &str, limits: Value) -> Card {
    let labels = c.labels.names().to_vec();
    let id2label: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.clone().into()))
        .collect();
    let label2id: serde_json::Map<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i.into()))
        .collect();
    let features = c.features.clone();
    let metadata: Vec<Value> = features.as_ref().map_or_else(Vec::new, |f| {
        let numeric = f.numeric.iter().map(|n| json!({"name": n.column, "kind": "numeric"}));
        let date = f.date.iter().map(|d| json!({"name": d.column, "kind": "date"}));
        let categorical = f.categorical.iter().map(
            |k| json!({"name": k.column, "kind": "categorical", "values": k.vocab.iter().take(50).collect::<Vec<_>>()}),
        );
        numeric.chain(categorical).chain(date).collect()
    });
    let schema = c.policy.schema.as_ref();
    let multi_label = c.problem_type() == ProblemType::MultiLabelClassification;
    let precision = match c.precision() {
        sequin_train::Precision::Int8 => "int8",
        sequin_train::Precision::Bf16 => "bfloat16",
        sequin_train::Precision::Fp32 => "float32",
    };
    let mut info = json!({
        "model_id": model_id,
        "model_sha": null,
        "model_dtype": precision,
        "model_type": {"classifier": {"id2label": id2label, "label2id": label2id}},
        "max_input_length": max_length,
        "tokenization_workers": 2,
        "auto_truncate": false,
        "version": env!("CARGO_PKG_VERSION"),
        "sequin": {
            "family": c.config.model_type,
            "problem_type": c.problem_type(),
            "labels": labels,
            "thresholds": multi_label.then(|| (0..labels.len()).map(|j| c.threshold(j)).collect::<Vec<_>>()),
            "text_column": schema.map(|s| s.text_column.clone()),
            "text_pair_column": schema.and_then(|s| s.text_pair_column.clone()),
            "metadata": metadata,
            "long_text": c.policy.long_text,
            "backend": crate::backend_name(),
            "calibration": c.policy.calibration,
            "calibration_applied": c.temperature() != 1.0,
            "temperature": c.temperature(),
            "examples": c.policy.examples,
        },
    });
    if let (Value::Object(o), Value::Object(l)) = (&mut info, limits) {
        o.extend(l);
    }
    Card {
        tokenizer: c.tokenizer.clone(),
        feature_columns: c.feature_columns(),
        features,
        max_length,
        truncates: matches!(c.policy.long_text, LongText::Truncate),
        multi_label,
        info,
    }
}

/// Counts every answer by route and status, with its latency.
async fn track(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        p @ ("/" | "/health" | "/info" | "/metrics" | "/predict" | "/classify") => p.to_string(),
        _ => "other".to_string(),
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    let m = &s.metrics;
    m.requests
        .get_or_create(&vec![("route", route.clone()), ("status", status)])
        .inc();
    m.latency
        .get_or_create(&vec![("route", route)])
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// With an API key: `Authorization: Bearer KEY` on every route but `/health`, else 401.
async fn authorize(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes()));
        if !ok && req.uri().path() != "/health" {
            let mut resp = ApiError {
                status: StatusCode::UNAUTHORIZED,
                kind: "unauthorized",
                message: match given {
                    Some(_) => "wrong API key".into(),
                    None => "an API key is required: send `Authorization: Bearer KEY`".into(),
                },
            }
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
            return resp;
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference (no timing hint of the key's prefix).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn info(State(s): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(s.card.info.clone())
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn not_found(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found",
        message: format!(
            "no route {} {}; the routes are GET /, /health, /info, /metrics and POST /predict, /classify",
            req.method(),
            req.uri().path()
        ),
    }
}

/// A body that could not be read: 413 when over the payload limit.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|r| ApiError {
        status: r.status(),
        kind: "validation",
        message: match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                "the request body is larger than the server's payload limit (--payload-limit)"
                    .into()
            }
            _ => r.body_text(),
        },
    })
}

/// `POST /predict` (TEI).
async fn predict(
    State(s): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PredictRequest = api::parse(&body(b)?)?;
    let (seqs, batch) = api::sequences(&req.inputs)?;
    if !s.card.feature_columns.is_empty() {
        return Err(ApiError::invalid(format!(
            "this model also reads metadata ({}); send it to POST /classify with those fields",
            s.card.feature_columns.join(", ")
        )));
    }
    let records: Vec<Record> = seqs
        .into_iter()
        .map(|q| Record {
            text_pair: q.pair,
            ..Record::text(q.text)
        })
        .collect();
    let function = req.raw_scores.then_some(ScoreFunction::None);
    let preds = s
        .submit(records, function, Some(usize::MAX), req.truncate)
        .await?;
    let items: Vec<Vec<LabelScore>> = preds.into_iter().map(|p| s.tei_items(p)).collect();
    Ok(match batch {
        true => axum::Json(items).into_response(),
        false => axum::Json(items.into_iter().next()).into_response(),
    })
}

/// `POST /classify` (sequin's).
async fn classify(
    State(s): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ClassifyRequest = api::parse(&body(b)?)?;
    let (inputs, batch) = api::named_inputs(&req.inputs, &s.card.feature_columns)?;
    let records: Vec<Record> = inputs
        .into_iter()
        .map(|n| Record {
            text_pair: n.seq.pair,
            features: n.features,
            ..Record::text(n.seq.text)
        })
        .collect();
    if let Some(f) = &s.card.features {
        let refs: Vec<&Record> = records.iter().collect();
        f.encode(std::path::Path::new("inputs"), 1, &refs)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
    }
    let top_k = req.top_k.map(api::TopK::count);
    let preds = s.submit(records, req.function, top_k, req.truncate).await?;
    Ok(match batch {
        true => axum::Json(preds).into_response(),
        false => axum::Json(preds.into_iter().next()).into_response(),
    })
}

/// An admitted request: counted in flight until dropped.
struct Admitted<'a>(&'a AppState);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.in_flight.dec();
    }
}

impl AppState {
    /// Admits a request, or answers 429 when `--max-concurrent-requests` are in flight.
    fn admit(&self) -> Result<Admitted<'_>, ApiError> {
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(self);
        self.metrics.in_flight.inc();
        if before >= self.limits.max_concurrent {
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                kind: "overloaded",
                message: format!(
                    "the server is at its limit of {} requests in flight (--max-concurrent-requests); retry later",
                    self.limits.max_concurrent
                ),
            });
        }
        Ok(admitted)
    }

    /// Checks, tokenizes and queues the inputs of one request; waits for their predictions.
    async fn submit(
        &self,
        records: Vec<Record>,
        function: Option<ScoreFunction>,
        top_k: Option<usize>,
        truncate: Option<bool>,
    ) -> Result<Vec<Prediction>, ApiError> {
        if records.len() > self.limits.max_client_batch {
            return Err(ApiError::too_large(format!(
                "inputs: {} inputs in one request; the most is {} (--max-client-batch-size)",
                records.len(),
                self.limits.max_client_batch
            )));
        }
        let _admitted = self.admit()?;
        let mut lengths = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let n = self
                .card
                .tokenizer
                .token_count(&r.text, r.text_pair.as_deref())
                .map_err(|e| ApiError::invalid(format!("inputs[{i}]: {e}")))?;
            if truncate == Some(false) && self.card.truncates && n > self.card.max_length {
                return Err(ApiError::too_large(format!(
                    "inputs[{i}]: {n} tokens; the model reads at most {} (send \"truncate\": true to cut it)",
                    self.card.max_length
                )));
            }
            lengths.push(n);
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let texts = records.len();
        self.metrics
            .tokens
            .inc_by(lengths.iter().sum::<usize>() as u64);
        self.metrics.queue_depth.inc_by(texts as i64);
        let job = Job {
            records,
            lengths,
            function,
            top_k,
            reply,
        };
        if self.queue.send(job).is_err() {
            self.metrics.queue_depth.dec_by(texts as i64);
            return Err(unavailable("the inference thread has stopped"));
        }
        match answer.await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "backend",
                message: e,
            }),
            Err(_) => Err(unavailable("the inference thread stopped before answering")),
        }
    }

    /// A prediction as TEI's list: every label with its score, best first (multi-label
    /// models: sigmoid scores, each marked with whether it reaches its threshold).
    fn tei_items(&self, p: Prediction) -> Vec<LabelScore> {
        let chosen = p.labels.unwrap_or_default();
        p.top_k
            .unwrap_or_default()
            .into_iter()
            .map(|ls| LabelScore {
                predicted: self.card.multi_label.then(|| chosen.contains(&ls.label)),
                label: ls.label,
                score: ls.score,
            })
            .collect()
    }
}

fn unavailable(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "unhealthy",
        message: message.into(),
    }
}
