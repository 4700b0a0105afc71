//! Ingestion metrics.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use lizards_shared::telemetry::{Operations, counter_vec, gauge, gauge_vec, histogram, histogram_vec, latency_buckets};

/// The `source` label of quotes whose source id is not a configured
/// source (ingest API callers name their own).
pub const OTHER_SOURCE: &str = "other";

#[derive(Clone)]
pub struct Metrics {
    /// Source ids that may be `source` labels: the enabled sources and the
    /// ingest API's default. Any other id is counted as [`OTHER_SOURCE`], so
    /// a caller inventing ids cannot create series without bound.
    known_sources: Arc<RwLock<HashSet<String>>>,
    pub published: IntCounterVec,
    pub rejected: IntCounterVec,
    pub flagged: IntCounterVec,
    pub publish_failures: IntCounterVec,
    pub raw_store_errors: IntCounterVec,
    /// Publish-to-confirm time (seed 000 `delivery_time`).
    pub delivery_time: HistogramVec,
    /// Quotes per broker message (one shard's share of a publish round).
    pub publish_batch_size: Histogram,
    /// Ingest API calls (gRPC `ProcessData`, `POST /ingest`) by `api` and
    /// `status`: `ok`, `rejected` (the caller's fault) or `error` (ours).
    pub ingest_requests: IntCounterVec,
    /// Quotes received through the ingest API by `api` and `outcome`.
    pub ingest_items: IntCounterVec,
    /// Calls to web sources by `source` and `outcome` (`ok` or the error kind).
    pub source_fetches: IntCounterVec,
    pub source_fetch_seconds: HistogramVec,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    /// 1 while this instance holds the source's lease.
    pub lease_held: IntGaugeVec,
    pub demand_symbols: IntGauge,
    pub demand_instances: IntGauge,
    /// Seed 000's operations (quotes published) and errors (raw store,
    /// publish).
    pub ops: Operations,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        Metrics {
            known_sources: Arc::default(),
            ops: Operations::new(registry, &["quote"], &["raw_store", "publish"]),
            published: counter_vec(
                registry,
                "lizards_quotes_published_total",
                "Quotes published and confirmed",
                &["source"],
            ),
            rejected: counter_vec(
                registry,
                "lizards_quotes_rejected_total",
                "Raw records rejected by validation",
                &["source", "reason"],
            ),
            flagged: counter_vec(
                registry,
                "lizards_quotes_flagged_total",
                "Quotes flagged (e.g. price jumps)",
                &["source", "flag"],
            ),
            publish_failures: counter_vec(
                registry,
                "lizards_publish_failures_total",
                "Quotes the broker did not confirm",
                &["source"],
            ),
            raw_store_errors: counter_vec(
                registry,
                "lizards_raw_store_errors_total",
                "Raw store operations that failed",
                &["operation"],
            ),
            delivery_time: histogram_vec(
                registry,
                "lizards_delivery_time_seconds",
                "Publish to broker confirm time",
                &["exchange"],
                latency_buckets(),
            ),
            publish_batch_size: histogram(
                registry,
                "lizards_publish_batch_size",
                "Quotes per broker message published",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0],
            ),
            ingest_requests: counter_vec(
                registry,
                "lizards_ingest_requests_total",
                "Ingest API calls (gRPC ProcessData, POST /ingest)",
                &["api", "status"],
            ),
            ingest_items: counter_vec(
                registry,
                "lizards_ingest_items_total",
                "Quotes received through the ingest API",
                &["api", "outcome"],
            ),
            source_fetches: counter_vec(
                registry,
                "lizards_source_fetches_total",
                "Calls to web sources by outcome",
                &["source", "outcome"],
            ),
            source_fetch_seconds: histogram_vec(
                registry,
                "lizards_source_fetch_seconds",
                "Web source call time, body included",
                &["source"],
                latency_buckets(),
            ),
            breaker_state: gauge_vec(
                registry,
                "lizards_source_breaker_state",
                "Circuit breaker per source: 0 closed, 1 half-open, 2 open",
                &["source"],
            ),
            breaker_transitions: counter_vec(
                registry,
                "lizards_source_breaker_transitions_total",
                "Circuit breaker transitions by new state",
                &["source", "to"],
            ),
            lease_held: gauge_vec(
                registry,
                "lizards_source_lease_held",
                "1 while this instance holds the source's polling lease",
                &["source"],
            ),
            demand_symbols: gauge(registry, "lizards_demand_symbols", "Symbols the polled sources fetch"),
            demand_instances: gauge(
                registry,
                "lizards_demand_instances",
                "Provider instances whose demand set is current",
            ),
        }
    }

    /// Creates a source's series at zero, so dashboards and `rate()` see
    /// them before the first event (a series born at its first increment
    /// hides that increment from `rate()`).
    pub fn prime_source(&self, source: &str) {
        self.known_sources.write().expect("not poisoned").insert(source.to_string());
        self.published.with_label_values(&[source]);
        self.publish_failures.with_label_values(&[source]);
        self.flagged.with_label_values(&[source, "jump"]);
        for reason in crate::validate::Reject::ALL {
            self.rejected.with_label_values(&[source, reason.label()]);
        }
    }

    /// The `source` label of `source`: itself when primed, else
    /// [`OTHER_SOURCE`].
    pub fn source_label<'a>(&self, source: &'a str) -> &'a str {
        if self.known_sources.read().expect("not poisoned").contains(source) { source } else { OTHER_SOURCE }
    }

    /// A polled source's fetch and breaker series at zero (see
    /// [`Metrics::prime_source`]).
    pub fn prime_breaker(&self, source: &str) {
        self.source_fetches.with_label_values(&[source, "ok"]);
        self.source_fetch_seconds.with_label_values(&[source]);
        for state in crate::breaker::BreakerState::ALL {
            self.breaker_transitions.with_label_values(&[source, state.as_str()]);
        }
    }
}
