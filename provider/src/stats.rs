//! Gauges read from the stores (the seed systems' admin figures): users by role,
//! tracked symbols, and symbols that rules or positions name; and the
//! messages waiting in the shared broker queues. Counted by the database
//! and the broker, so every provider instance reports the same figures;
//! dashboards take `max`.

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    accounts::AccountStore,
    broker::{ALERTS_EVAL_QUEUE, Broker, DEAD_QUEUE, NOTIFY_QUEUE, PERSIST_QUEUE},
    jwt::Role,
    shutdown::Shutdown,
    store::QuoteStore,
};

use crate::{alerts::Interest, metrics::Metrics};

/// Two refreshes per default Prometheus scrape interval (15 s).
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Stats {
    pub quotes: Arc<dyn QuoteStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub interest: Arc<Interest>,
    pub broker: Arc<dyn Broker>,
    pub metrics: Metrics,
}

impl Stats {
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            self.refresh().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(STATS_INTERVAL) => {}
            }
        }
    }

    async fn refresh(&self) {
        match self.accounts.users_by_role().await {
            Ok(counts) => {
                for role in [Role::User, Role::Admin] {
                    let n = counts.iter().find(|(r, _)| *r == role).map_or(0, |(_, n)| *n);
                    self.metrics.users.with_label_values(&[role.as_str()]).set(n as i64);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot count users"),
        }
        match self.quotes.latest_all().await {
            Ok(tracked) => self.metrics.tracked_symbols.set(tracked.len() as i64),
            Err(error) => tracing::debug!(%error, "cannot count tracked symbols"),
        }
        self.metrics.symbols_referenced.set(self.interest.all().len() as i64);
        // A backlog that keeps growing is work the consumers cannot keep up
        // with (and, on the embedded broker, memory).
        for queue in [PERSIST_QUEUE, ALERTS_EVAL_QUEUE, NOTIFY_QUEUE, DEAD_QUEUE] {
            match self.broker.queue_len(queue).await {
                Ok(waiting) => self.metrics.queue_messages.with_label_values(&[queue]).set(waiting as i64),
                Err(error) => tracing::debug!(%error, queue, "cannot read the queue's length"),
            }
        }
    }
}
