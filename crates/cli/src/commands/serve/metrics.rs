//! `GET /metrics`: Prometheus counters, gauges and histograms of the server.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric, and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    /// Requests by route and status code.
    pub(crate) requests: Family<Labels, Counter>,
    /// Request latency by route, in seconds.
    pub(crate) latency: HistogramFamily,
    /// Texts waiting for a batch.
    pub(crate) queue_depth: Gauge,
    /// Requests accepted and not yet answered.
    pub(crate) in_flight: Gauge,
    /// Texts per batch.
    pub(crate) batch_size: Histogram,
    /// Tokens per batch.
    pub(crate) batch_tokens: Histogram,
    /// Texts classified.
    pub(crate) texts: Counter,
    /// Tokens classified (before truncation).
    pub(crate) tokens: Counter,
    /// Time per batch in the model, in seconds.
    pub(crate) inference: Histogram,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("sequin");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by route and status code",
            requests.clone(),
        );
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Texts waiting for a batch",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests accepted and not yet answered",
            in_flight.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register("batch_size", "Texts per batch", batch_size.clone());
        let batch_tokens = Histogram::new(exponential_buckets(16.0, 2.0, 12));
        registry.register("batch_tokens", "Tokens per batch", batch_tokens.clone());
        let texts = Counter::default();
        registry.register("texts", "Texts classified", texts.clone());
        let tokens = Counter::default();
        registry.register(
            "tokens",
            "Tokens of the texts classified (before truncation)",
            tokens.clone(),
        );
        let inference = latency_histogram();
        registry.register(
            "inference_duration_seconds",
            "Time per batch in the model",
            inference.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            queue_depth,
            in_flight,
            batch_size,
            batch_tokens,
            texts,
            tokens,
            inference,
        }
    }

    /// The Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
