//! Provider metrics: streaming, persistence and sessions.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use lizards_shared::telemetry::{Operations, counter_vec, gauge, gauge_vec, histogram, latency_buckets, register};

#[derive(Clone)]
pub struct Metrics {
    pub ws_connections: IntGauge,
    pub ws_connections_opened: IntCounter,
    pub ws_subscriptions: IntGauge,
    /// Symbols bound to this instance's live queue.
    pub live_bindings: IntGauge,
    pub ws_frames_sent: IntCounterVec,
    pub ws_symbol_updates_sent: IntCounter,
    pub ws_updates_conflated: IntCounter,
    pub ws_slow_closes: IntCounter,
    pub ws_error_frames: IntCounterVec,
    pub ws_closes: IntCounterVec,
    /// `ingested_at` → frame written, per frame (its oldest update).
    pub e2e_latency: Histogram,
    pub persisted: IntCounter,
    pub persist_batch_size: Histogram,
    pub persist_duration: Histogram,
    pub consumed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    /// Seed 000's operations and errors (`errors` is `ops.errors`).
    pub ops: Operations,
    pub errors: IntCounterVec,
    pub sessions_created: IntCounter,
    pub symbol_lookups: IntCounterVec,
    pub produced: IntCounterVec,
    /// Account events: registered, logged_in, login_failed, deleted.
    pub accounts: IntCounterVec,
    pub alert_evaluations: IntCounterVec,
    pub alerts_fired: IntCounterVec,
    /// Time to evaluate one batch from `alerts.eval`.
    pub alert_batch_duration: Histogram,
    pub portfolio_operations: IntCounterVec,
    pub idempotency: IntCounterVec,
    /// Quotes (`old`) and tracked symbols (`unused`) removed by retention.
    pub retention_deleted: IntCounterVec,
    pub retention_duration: Histogram,
    /// Read from the stores by [`crate::stats`].
    pub users: IntGaugeVec,
    pub tracked_symbols: IntGauge,
    pub symbols_referenced: IntGauge,
    /// Messages waiting in the shared queues, read from the broker.
    pub queue_messages: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid counter"))
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        let ops = Operations::new(
            registry,
            &["message"],
            &["database", "session_store", "alert_publish", "alert_quota", "retention"],
        );
        let metrics = Metrics {
            ws_connections: gauge(registry, "lizards_ws_connections", "Open WebSocket connections"),
            ws_connections_opened: counter(
                registry,
                "lizards_ws_connections_opened_total",
                "WebSocket connections accepted",
            ),
            ws_subscriptions: gauge(registry, "lizards_ws_subscriptions", "Symbol subscriptions across connections"),
            live_bindings: gauge(
                registry,
                "lizards_live_bindings",
                "Watched symbols whose quotes this instance's live queue is bound to",
            ),
            ws_frames_sent: counter_vec(
                registry,
                "lizards_ws_frames_sent_total",
                "Frames written to clients",
                &["type"],
            ),
            ws_symbol_updates_sent: counter(
                registry,
                "lizards_ws_symbol_updates_sent_total",
                "Symbol updates written to clients (one per symbol per price_update)",
            ),
            ws_updates_conflated: counter(
                registry,
                "lizards_ws_updates_conflated_total",
                "Updates replaced by a newer price before a slow client could take them",
            ),
            ws_slow_closes: counter(registry, "lizards_ws_slow_closes_total", "Clients closed for staying unwritable"),
            ws_error_frames: counter_vec(
                registry,
                "lizards_ws_error_frames_total",
                "Error frames sent, by problem",
                &["kind"],
            ),
            ws_closes: counter_vec(registry, "lizards_ws_closes_total", "Connections closed, by reason", &["reason"]),
            e2e_latency: histogram(
                registry,
                "lizards_e2e_latency_seconds",
                "Ingestion (ingested_at) to WebSocket frame written",
                latency_buckets(),
            ),
            persisted: counter(registry, "lizards_quotes_persisted_total", "Quotes newly written to the SQL store"),
            persist_batch_size: histogram(
                registry,
                "lizards_persist_batch_size",
                "Quotes per persisted batch",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0],
            ),
            persist_duration: histogram(
                registry,
                "lizards_persist_duration_seconds",
                "Time to write one batch",
                latency_buckets(),
            ),
            consumed: counter_vec(registry, "lizards_messages_consumed_total", "Broker messages consumed", &["queue"]),
            dead_lettered: counter_vec(
                registry,
                "lizards_messages_dead_lettered_total",
                "Poison messages sent to the dead-letter queue",
                &["queue"],
            ),
            errors: ops.errors.clone(),
            ops,
            sessions_created: counter(registry, "lizards_sessions_created_total", "Sessions created by POST /session"),
            symbol_lookups: counter_vec(
                registry,
                "lizards_symbol_lookups_total",
                "On-demand symbol lookups by outcome",
                &["outcome"],
            ),
            produced: counter_vec(
                registry,
                "lizards_messages_produced_total",
                "Broker messages published, by exchange",
                &["exchange"],
            ),
            accounts: counter_vec(registry, "lizards_account_events_total", "Account events", &["event"]),
            alert_evaluations: counter_vec(
                registry,
                "lizards_alert_evaluations_total",
                "Rule evaluations by outcome (fired, changed, unchanged, conflict, failed)",
                &["outcome"],
            ),
            alerts_fired: counter_vec(registry, "lizards_alerts_fired_total", "Alerts fired, by rule kind", &["kind"]),
            alert_batch_duration: histogram(
                registry,
                "lizards_alert_eval_batch_seconds",
                "Time to evaluate one batch of quotes from alerts.eval against the rules",
                latency_buckets(),
            ),
            portfolio_operations: counter_vec(
                registry,
                "lizards_portfolio_operations_total",
                "Deposits and orders (buy, sell, refused)",
                &["operation"],
            ),
            idempotency: counter_vec(
                registry,
                "lizards_idempotency_requests_total",
                "Requests with an Idempotency-Key, by outcome (executed, replayed, mismatch, in_progress)",
                &["outcome"],
            ),
            retention_deleted: counter_vec(
                registry,
                "lizards_retention_deleted_total",
                "Rows removed by retention: quotes older than RETENTION_DAYS (old), idle symbols untracked (unused)",
                &["reason"],
            ),
            retention_duration: histogram(
                registry,
                "lizards_retention_cycle_seconds",
                "Duration of one retention cycle",
                latency_buckets(),
            ),
            users: gauge_vec(registry, "lizards_users", "Registered users, by role", &["role"]),
            tracked_symbols: gauge(registry, "lizards_tracked_symbols", "Symbols with a latest quote (GET /symbols)"),
            symbols_referenced: gauge(
                registry,
                "lizards_symbols_referenced",
                "Symbols an alert rule or open position names",
            ),
            queue_messages: gauge_vec(
                registry,
                "lizards_queue_messages",
                "Messages waiting in a shared broker queue (persistence, alert evaluation, notifications, dead letters)",
                &["queue"],
            ),
        };
        metrics.prime();
        metrics
    }

    /// The series of fixed label sets at zero, so dashboards and `rate()`
    /// see them before their first event.
    fn prime(&self) {
        for outcome in ["fired", "suppressed", "changed", "unchanged", "conflict", "failed"] {
            self.alert_evaluations.with_label_values(&[outcome]);
        }
        for kind in lizards_shared::accounts::RuleKind::ALL {
            self.alerts_fired.with_label_values(&[kind.as_str()]);
        }
        for queue in [lizards_shared::broker::PERSIST_QUEUE, lizards_shared::broker::ALERTS_EVAL_QUEUE] {
            self.consumed.with_label_values(&[queue]);
            self.dead_lettered.with_label_values(&[queue]);
        }
        for reason in ["client", "idle", "errors", "slow", "revoked", "shutdown", "too_big"] {
            self.ws_closes.with_label_values(&[reason]);
        }
        for kind in ["price_update", "control"] {
            self.ws_frames_sent.with_label_values(&[kind]);
        }
    }
}
