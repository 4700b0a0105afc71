//! Notifier metrics: deliveries by channel and outcome, send and
//! end-to-end latency, and the `notify` queue's consumption.

use prometheus::{HistogramVec, IntCounterVec, Registry};

use lizards_shared::{
    accounts::Channel,
    broker::NOTIFY_QUEUE,
    telemetry::{Operations, counter_vec, histogram_vec, latency_buckets},
};

#[derive(Clone)]
pub struct Metrics {
    /// Channel deliveries by outcome: sent, failed, retried (one per retry
    /// scheduled), suppressed (minimum interval), skipped (no target).
    pub notifications: IntCounterVec,
    /// One send attempt, by channel.
    pub send_seconds: HistogramVec,
    /// The alert's `fired_at` → its delivery sent, by channel.
    pub delivery_seconds: HistogramVec,
    pub consumed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    /// Seed 000's operations and errors (`errors` is `ops.errors`).
    pub ops: Operations,
    pub errors: IntCounterVec,
    /// Telegram bot commands handled, by command and outcome.
    pub bot_commands: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Metrics {
        let errors = ["decode", "notifier_task", "telegram_poll", "telegram_reply"];
        let ops = Operations::new(registry, &["message"], &errors);
        let metrics = Metrics {
            notifications: counter_vec(
                registry,
                "lizards_notifications_total",
                "Notification deliveries by channel and outcome (sent, failed, retried, suppressed, skipped)",
                &["channel", "outcome"],
            ),
            send_seconds: histogram_vec(
                registry,
                "lizards_notification_seconds",
                "Duration of one notification send attempt, by channel",
                &["channel"],
                latency_buckets(),
            ),
            delivery_seconds: histogram_vec(
                registry,
                "lizards_notification_delivery_seconds",
                "Time from an alert firing to its notification sent, by channel",
                &["channel"],
                vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
            ),
            consumed: counter_vec(
                registry,
                "lizards_messages_consumed_total",
                "Messages consumed, by queue",
                &["queue"],
            ),
            dead_lettered: counter_vec(
                registry,
                "lizards_messages_dead_lettered_total",
                "Messages rejected to the dead-letter exchange, by queue",
                &["queue"],
            ),
            errors: ops.errors.clone(),
            ops,
            bot_commands: counter_vec(
                registry,
                "lizards_telegram_commands_total",
                "Telegram bot commands handled, by command and outcome",
                &["command", "outcome"],
            ),
        };
        metrics.prime();
        metrics
    }

    /// Every channel's series at zero, so dashboards and `rate()` see them
    /// before the first delivery.
    fn prime(&self) {
        for channel in Channel::ALL.map(Channel::as_str) {
            for outcome in ["sent", "failed", "retried", "suppressed", "skipped"] {
                self.notifications.with_label_values(&[channel, outcome]);
            }
            self.send_seconds.with_label_values(&[channel]);
            self.delivery_seconds.with_label_values(&[channel]);
        }
        self.consumed.with_label_values(&[NOTIFY_QUEUE]);
        self.dead_lettered.with_label_values(&[NOTIFY_QUEUE]);
    }

    pub fn count(&self, channel: Channel, outcome: &str) {
        self.notifications.with_label_values(&[channel.as_str(), outcome]).inc();
    }
}
