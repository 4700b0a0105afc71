//! Gateway metrics.

use prometheus::{HistogramVec, IntCounterVec, IntGauge, Registry};

use lizards_shared::telemetry::{counter_vec, histogram_vec, latency_buckets, register};

#[derive(Clone)]
pub struct Metrics {
    pub requests: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub ws_proxied: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        Metrics {
            requests: counter_vec(
                registry,
                "lizards_gateway_requests_total",
                "Requests by route prefix and status",
                &["route", "status"],
            ),
            upstream_errors: counter_vec(
                registry,
                "lizards_gateway_upstream_errors_total",
                "Upstream failures by service and kind",
                &["service", "kind"],
            ),
            upstream_duration: histogram_vec(
                registry,
                "lizards_gateway_upstream_duration_seconds",
                "Upstream response time by service",
                &["service"],
                latency_buckets(),
            ),
            ws_proxied: register(
                registry,
                IntGauge::new("lizards_gateway_ws_proxied", "WebSocket connections being proxied")
                    .expect("valid gauge"),
            ),
        }
    }
}
