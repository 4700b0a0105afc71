//! Gateway metrics.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use lizards_shared::telemetry::{Operations, counter_vec, gauge, gauge_vec, histogram_vec, latency_buckets, register};

#[derive(Clone)]
pub struct Metrics {
    pub requests: IntCounterVec,
    pub upstream_errors: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub ws_proxied: IntGauge,
    pub upstream_instances: IntGaugeVec,
    pub cache: IntCounterVec,
    pub limited: IntCounterVec,
    pub ratelimit_check: Histogram,
    pub store_failures: IntCounterVec,
    /// Seed 000's operations (every request is an `http` one) and errors
    /// (`upstream`, `store`).
    pub ops: Operations,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        let metrics = Metrics {
            ops: Operations::new(registry, &[], &["upstream", "store"]),
            requests: counter_vec(
                registry,
                "lizards_gateway_requests_total",
                "Proxied requests by route prefix and status",
                &["route", "status"],
            ),
            upstream_errors: counter_vec(
                registry,
                "lizards_gateway_upstream_errors_total",
                "Upstream failures by route prefix and kind (connect, timeout)",
                &["route", "kind"],
            ),
            upstream_duration: histogram_vec(
                registry,
                "lizards_gateway_upstream_duration_seconds",
                "Upstream response time (to the response head) by route prefix",
                &["route"],
                latency_buckets(),
            ),
            ws_proxied: gauge(registry, "lizards_gateway_ws_proxied", "WebSocket connections being proxied"),
            upstream_instances: gauge_vec(
                registry,
                "lizards_gateway_upstream_instances",
                "Healthy instances the gateway routes to, by upstream service, as of its last registry refresh",
                &["upstream"],
            ),
            cache: counter_vec(
                registry,
                "lizards_gateway_cache_requests_total",
                "Cacheable requests by route prefix and result (hit, miss, coalesced into another miss)",
                &["route", "result"],
            ),
            limited: counter_vec(
                registry,
                "lizards_gateway_rate_limited_total",
                "Requests refused with 429 by rate-limit policy",
                &["policy"],
            ),
            ratelimit_check: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lizards_gateway_ratelimit_check_seconds",
                        "Time to count one request against its rate limit",
                    )
                    .buckets(vec![0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0]),
                )
                .expect("valid histogram"),
            ),
            store_failures: counter_vec(
                registry,
                "lizards_gateway_store_failures_total",
                "Cache-store (Redis) failures by use; rate limits fail open and the cache is bypassed",
                &["use"],
            ),
        };
        metrics.prime();
        metrics
    }

    /// The series of fixed label sets at zero, so dashboards and `rate()`
    /// see them before their first event.
    fn prime(&self) {
        for policy in ["default", "user", "auth", "websocket"] {
            self.limited.with_label_values(&[policy]);
        }
        for route in crate::routes::ROUTES {
            for kind in ["connect", "timeout"] {
                self.upstream_errors.with_label_values(&[route.prefix, kind]);
            }
        }
        for use_ in ["cache", "ratelimit"] {
            self.store_failures.with_label_values(&[use_]);
        }
    }

    pub fn upstream_error(&self, route: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[route, kind]).inc();
        self.ops.errors.with_label_values(&["upstream"]).inc();
    }

    /// Redis failed for `use_` (`cache` or `ratelimit`).
    pub fn store_failure(&self, use_: &str) {
        self.store_failures.with_label_values(&[use_]).inc();
        self.ops.errors.with_label_values(&["store"]).inc();
    }
}
