//! Telemetry in one place: tracing setup, the per-service Prometheus
//! registry, HTTP metrics and request ids, and `/metrics`, `/healthz`,
//! `/readyz`.

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::future::BoxFuture;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global tracing subscriber (`RUST_LOG` filters, else
/// `default_filter`).
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
    };
}

/// A Prometheus registry whose every metric carries `service="<name>"`.
pub fn metrics_registry(service: &str) -> Registry {
    let labels = HashMap::from([("service".to_string(), service.to_string())]);
    Registry::new_custom(None, Some(labels)).expect("valid registry")
}

/// Registers a metric and returns it (panics only on a programming error
/// caught by every test: a duplicate name, or a label named `service`,
/// which the registry already puts on every series and which would then
/// appear twice in a sample, making Prometheus refuse the whole scrape).
pub fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    for desc in metric.desc() {
        assert!(
            !desc.variable_labels.iter().any(|label| label == "service"),
            "{}: `service` is the registry's own label; name this one otherwise",
            desc.fq_name
        );
    }
    registry.register(Box::new(metric.clone())).expect("metric registers once");
    metric
}

/// Reports an embedded cache's size on `registry`, when no other role of
/// the process does yet.
pub fn register_cache(registry: &Registry, cache: &dyn crate::cache::Cache) {
    if let Some(metrics) = cache.metrics() {
        registry.register(metrics).expect("cache metrics register once");
    }
}

pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
}

pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid gauge"))
}

pub fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
}

pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(registry, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram"))
}

pub fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(registry, HistogramVec::new(opts, labels).expect("valid histogram"))
}

/// Latency buckets from 100 µs to 10 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
}

/// Checks a service's dependencies for `/readyz`.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    registry: Registry,
    readiness: Readiness,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn ops_routes(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(OpsState { registry, readiness })
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&state.registry.gather(), &mut buffer) {
        return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], buffer).into_response()
}

async fn ready(State(state): State<OpsState>) -> Response {
    match (state.readiness)().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => crate::problem::Problem::unavailable(reason).into_response(),
    }
}

/// Seed 000's pair, on every service: `lizards_operations_total{kind}`
/// (HTTP requests, messages consumed, quotes published, requests proxied)
/// and `lizards_errors_total{kind}` (incl. `database` when it is
/// unreachable, and `http_5xx`); their ratio is the `lizards:error_ratio`
/// recording rule.
#[derive(Clone)]
pub struct Operations {
    pub operations: IntCounterVec,
    pub errors: IntCounterVec,
}

impl Operations {
    /// Registers both; the kinds named start at zero, so `rate()` sees
    /// their first increment.
    pub fn new(registry: &Registry, operations: &[&str], errors: &[&str]) -> Operations {
        let ops = Operations {
            operations: counter_vec(registry, "lizards_operations_total", "Operations handled, by kind", &["kind"]),
            errors: counter_vec(registry, "lizards_errors_total", "Errors by kind", &["kind"]),
        };
        for kind in ["http"].iter().chain(operations) {
            ops.operations.with_label_values(&[kind]);
        }
        for kind in ["http_5xx"].iter().chain(errors) {
            ops.errors.with_label_values(&[kind]);
        }
        ops
    }
}

/// Per-route request counts and durations, each request one `http`
/// operation (a 5xx answer also an `http_5xx` error).
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    ops: Operations,
}

impl HttpMetrics {
    pub fn new(registry: &Registry, ops: &Operations) -> HttpMetrics {
        HttpMetrics {
            ops: ops.clone(),
            requests: counter_vec(
                registry,
                "lizards_http_requests_total",
                "HTTP requests by method, route and status",
                &["method", "route", "status"],
            ),
            duration: histogram_vec(
                registry,
                "lizards_http_request_duration_seconds",
                "HTTP request duration by method and route",
                &["method", "route"],
                latency_buckets(),
            ),
        }
    }
}

async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    let status = response.status();
    metrics.ops.operations.with_label_values(&["http"]).inc();
    if status.is_server_error() {
        metrics.ops.errors.with_label_values(&["http_5xx"]).inc();
    }
    let status = status.as_u16().to_string();
    metrics.requests.with_label_values(&[&method, &route, &status]).inc();
    metrics.duration.with_label_values(&[&method, &route]).observe(started.elapsed().as_secs_f64());
    response
}

/// Query parameters whose values are credentials: a WebSocket's `token`
/// and `session` (browsers cannot set headers on upgrades) and API keys.
const SECRET_PARAMS: &[&str] = &["token", "session", "access_token", "apikey", "api_key", "key", "token_secret"];

/// `uri` as it may be logged: the values of [`SECRET_PARAMS`] replaced.
pub fn redacted(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else { return uri.path().to_string() };
    let pairs = query.split('&').map(|pair| match pair.split_once('=') {
        Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => format!("{name}=REDACTED"),
        _ => pair.to_string(),
    });
    format!("{}?{}", uri.path(), pairs.collect::<Vec<_>>().join("&"))
}

/// Wraps a service router with request ids (generated or propagated
/// `X-Request-Id`, present in every log line of the request), tracing and
/// HTTP metrics.
pub fn http_layers(router: Router, metrics: HttpMetrics) -> Router {
    router
        .route_layer(middleware::from_fn_with_state(metrics, track))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id =
                request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
            let uri = redacted(request.uri());
            tracing::info_span!("http", method = %request.method(), %uri, request_id = %request_id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_are_redacted() {
        let uri: axum::http::Uri = "/ws?session=abc&token=eyJ.x.y&symbols=AAPL&TOKEN=z".parse().unwrap();
        assert_eq!(redacted(&uri), "/ws?session=REDACTED&token=REDACTED&symbols=AAPL&TOKEN=REDACTED");
        assert_eq!(redacted(&"/quotes/AAPL".parse().unwrap()), "/quotes/AAPL");
    }
}
