//! Alerts are stored before they are published; one whose publish failed
//! (broker down, provider killed in between) is published from here, so a
//! fired alert always reaches the notifier and the user's sockets.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use lizards_shared::{broker::Broker, shutdown::Shutdown};

use super::evaluator::publish;
use crate::{accounts::Accounts, metrics::Metrics};

/// How often unpublished alerts are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// An alert this young may still be on its way from the evaluator.
const GRACE: Duration = Duration::from_secs(5);
/// Alerts published per sweep.
const BATCH: u32 = 100;

pub async fn run(broker: Arc<dyn Broker>, accounts: Arc<Accounts>, metrics: Metrics, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let before = Utc::now() - chrono::Duration::from_std(GRACE).expect("small duration");
        let alerts = match accounts.store.unpublished_alerts(before, BATCH).await {
            Ok(alerts) => alerts,
            Err(error) => {
                tracing::warn!(%error, "cannot look for unpublished alerts");
                continue;
            }
        };
        if !alerts.is_empty() {
            tracing::info!(count = alerts.len(), "publishing alerts whose first publish failed");
        }
        for alert in &alerts {
            publish(&*broker, &accounts, &metrics, alert).await;
        }
    }
}
