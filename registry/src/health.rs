//! Active health checks: instances that registered a `health_check_path`
//! over HTTP or HTTPS are probed; a non-2xx answer, a timeout or a refused
//! connection marks them critical (the gateway then skips them), a 2xx
//! marks them passing again.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lizards_shared::shutdown::Shutdown;
use tokio::time::MissedTickBehavior;

use crate::{
    model::{ServiceId, Status},
    store::{InstanceRecord, RegistryStore},
};

/// How often every probed instance is checked.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// A probe slower than this counts as failing.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Probes in flight at once, so a large registry does not open a socket
/// per instance in the same instant.
const CONCURRENT_PROBES: usize = 32;

/// Probes every `HEALTH_INTERVAL` until `shutdown`.
pub async fn run(store: Arc<dyn RegistryStore>, shutdown: Shutdown) {
    let client = lizards_shared::http::client();
    let mut ticks = tokio::time::interval(HEALTH_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = check_all(&client, store.as_ref()) => {}
        }
    }
}

/// One instance to probe, with the status it has now.
struct Probe {
    service_id: ServiceId,
    instance_id: String,
    url: String,
    current: Status,
}

impl Probe {
    fn of(service_id: &ServiceId, instance: &InstanceRecord) -> Option<Probe> {
        let scheme = instance.protocol.probe_scheme()?;
        let path = instance.health_check_path.as_ref()?;
        Some(Probe {
            service_id: service_id.clone(),
            instance_id: instance.instance_id.clone(),
            url: format!("{scheme}://{}{}", instance.authority(), path.as_str()),
            current: instance.status,
        })
    }

    async fn status(&self, client: &reqwest::Client) -> Status {
        match client.get(&self.url).timeout(HEALTH_TIMEOUT).send().await {
            Ok(response) if response.status().is_success() => Status::Passing,
            Ok(response) => {
                tracing::debug!(url = %self.url, status = %response.status(), "health check failed");
                Status::Critical
            }
            Err(error) => {
                tracing::debug!(url = %self.url, %error, "health check failed");
                Status::Critical
            }
        }
    }
}

async fn check_all(client: &reqwest::Client, store: &dyn RegistryStore) {
    let services = match store.list().await {
        Ok(services) => services,
        Err(error) => {
            tracing::warn!(%error, "cannot list instances to probe");
            return;
        }
    };
    let probes: Vec<Probe> = services
        .iter()
        .flat_map(|service| service.instances.iter().filter_map(|instance| Probe::of(&service.service_id, instance)))
        .collect();
    futures::stream::iter(probes)
        .for_each_concurrent(CONCURRENT_PROBES, |probe| async move {
            let status = probe.status(client).await;
            if status != probe.current {
                record(store, &probe, status).await;
            }
        })
        .await;
}

async fn record(store: &dyn RegistryStore, probe: &Probe, status: Status) {
    match store.set_status(probe.service_id.as_str(), &probe.instance_id, status).await {
        // The instance may have left while it was being probed.
        Ok(false) => {}
        Ok(true) if status == Status::Critical => {
            tracing::warn!(service = %probe.service_id, instance = %probe.instance_id, url = %probe.url, "instance critical: health check failing");
        }
        Ok(true) => {
            tracing::info!(service = %probe.service_id, instance = %probe.instance_id, "instance passing again");
        }
        Err(error) => tracing::warn!(%error, "cannot record health status"),
    }
}
