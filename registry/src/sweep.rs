//! TTL sweeper: evicts instances that stopped renewing, and refreshes the
//! instance gauges while it is at it.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use lizards_shared::shutdown::Shutdown;
use tokio::time::MissedTickBehavior;

use crate::{metrics::RegistryMetrics, store::RegistryStore};

/// Sweeps every `every` until `shutdown`.
pub async fn run(store: Arc<dyn RegistryStore>, every: Duration, metrics: RegistryMetrics, shutdown: Shutdown) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => sweep(store.as_ref(), &metrics).await,
        }
    }
}

async fn sweep(store: &dyn RegistryStore, metrics: &RegistryMetrics) {
    match store.evict_expired(Utc::now()).await {
        Ok(evicted) => {
            for gone in &evicted {
                tracing::info!(service = %gone.service_id, instance = %gone.instance_id, address = %gone.authority, "instance evicted: TTL expired");
            }
            metrics.evicted(evicted.len());
        }
        Err(error) => tracing::warn!(%error, "eviction sweep failed"),
    }
    match store.list().await {
        Ok(services) => metrics.observe(&services),
        Err(error) => tracing::warn!(%error, "cannot list instances for metrics"),
    }
}
