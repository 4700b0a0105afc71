//! Instances per service, from the registry: cached, refreshed in the
//! background (a registry outage keeps the last known list), picked
//! round-robin, with passive ejection of instances that just failed.

use std::{
    collections::HashMap,
    sync::{
        Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lizards_shared::{
    discovery::{Instance, RegistryClient},
    shutdown::Shutdown,
};

use crate::routes::ROUTES;

/// How long a failed instance is skipped.
const EJECT_FOR: Duration = Duration::from_secs(10);

pub struct Upstreams {
    registry: RegistryClient,
    instances: RwLock<HashMap<String, Vec<Instance>>>,
    next: AtomicUsize,
    ejected: Mutex<HashMap<String, Instant>>,
}

impl Upstreams {
    pub fn new(registry: RegistryClient) -> Upstreams {
        Upstreams {
            registry,
            instances: RwLock::new(HashMap::new()),
            next: AtomicUsize::new(0),
            ejected: Mutex::new(HashMap::new()),
        }
    }

    /// Fetches one service's instances; keeps the old list on failure.
    pub async fn refresh(&self, service: &str) -> bool {
        match self.registry.instances(service).await {
            Ok(list) => {
                let healthy: Vec<Instance> = list.into_iter().filter(Instance::is_healthy).collect();
                self.instances.write().expect("instances lock").insert(service.to_string(), healthy);
                true
            }
            Err(error) => {
                tracing::warn!(%error, service, "registry refresh failed; keeping the last known instances");
                false
            }
        }
    }

    /// Refreshes every routed service periodically until shutdown.
    pub async fn run(&self, every: Duration, shutdown: Shutdown) {
        let mut services: Vec<&str> = ROUTES.iter().map(|r| r.service).collect();
        services.sort_unstable();
        services.dedup();
        loop {
            for service in &services {
                self.refresh(service).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    fn known(&self, service: &str) -> bool {
        self.instances.read().expect("instances lock").contains_key(service)
    }

    /// Next instance round-robin, skipping ejected ones and `exclude`.
    pub async fn pick(&self, service: &str, exclude: &[String]) -> Option<Instance> {
        if !self.known(service) {
            self.refresh(service).await;
        }
        let instances = self.instances.read().expect("instances lock");
        let list = instances.get(service)?;
        let ejected = self.ejected.lock().expect("ejected lock");
        let now = Instant::now();
        let candidates: Vec<&Instance> = list.iter().filter(|i| !exclude.contains(&i.authority())).collect();
        let healthy: Vec<&Instance> = candidates
            .iter()
            .copied()
            .filter(|i| ejected.get(&i.authority()).is_none_or(|until| *until <= now))
            .collect();
        // With every candidate ejected, trying one beats refusing outright
        // (a lone instance that blipped would otherwise be shut out).
        let usable = if healthy.is_empty() { candidates } else { healthy };
        if usable.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(usable[n % usable.len()].clone())
    }

    /// Skips an instance for a while after a connection failure.
    pub fn eject(&self, instance: &Instance) {
        tracing::warn!(instance = %instance.authority(), "ejecting failing instance");
        self.ejected.lock().expect("ejected lock").insert(instance.authority(), Instant::now() + EJECT_FOR);
    }

    pub fn has_any(&self) -> bool {
        self.instances.read().expect("instances lock").values().any(|list| !list.is_empty())
    }
}
