//! Ingestion metrics.

use prometheus::{HistogramVec, IntCounterVec, Registry};

use lizards_shared::telemetry::{counter_vec, histogram_vec, latency_buckets};

#[derive(Clone)]
pub struct Metrics {
    pub published: IntCounterVec,
    pub rejected: IntCounterVec,
    pub flagged: IntCounterVec,
    pub publish_failures: IntCounterVec,
    pub raw_store_errors: IntCounterVec,
    /// Publish-to-confirm time (seed 000 `delivery_time`).
    pub delivery_time: HistogramVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        Metrics {
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
        }
    }
}
