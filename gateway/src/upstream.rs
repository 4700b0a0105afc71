//! Instances per service, from the registry: cached, refreshed in the
//! background (a registry outage keeps the last known list), picked
//! round-robin or by power of two choices, with passive ejection of
//! instances that just failed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lizards_shared::{
    config::Balancer,
    discovery::{Instance, RegistryClient},
    shutdown::Shutdown,
};
use prometheus::IntGaugeVec;
use rand::Rng;

use crate::routes::ROUTES;

/// How long a failed instance is skipped.
const EJECT_FOR: Duration = Duration::from_secs(10);

/// One known instance (`host:port`) and the requests (or bridged
/// WebSockets) it is serving through this gateway right now.
struct Slot {
    authority: Arc<str>,
    in_flight: Arc<AtomicUsize>,
}

/// An instance chosen for one request; counts as in flight until dropped.
pub struct Picked {
    pub authority: Arc<str>,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Upstreams {
    registry: RegistryClient,
    balancer: Balancer,
    services: RwLock<HashMap<String, Vec<Slot>>>,
    next: AtomicUsize,
    ejected: Mutex<HashMap<String, Instant>>,
    /// Healthy instances per service as of the last refresh.
    known: IntGaugeVec,
}

impl Upstreams {
    pub fn new(registry: RegistryClient, balancer: Balancer, known: IntGaugeVec) -> Upstreams {
        Upstreams {
            registry,
            balancer,
            services: RwLock::new(HashMap::new()),
            next: AtomicUsize::new(0),
            ejected: Mutex::new(HashMap::new()),
            known,
        }
    }

    /// Fetches one service's instances; keeps the old list on failure.
    /// In-flight counts survive a refresh for instances still listed.
    pub async fn refresh(&self, service: &str) -> bool {
        let list = match self.registry.instances(service).await {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, service, "registry refresh failed; keeping the last known instances");
                return false;
            }
        };
        let mut services = self.services.write().expect("services lock");
        let previous = services.remove(service).unwrap_or_default();
        let slots = list
            .into_iter()
            .filter(Instance::is_healthy)
            .map(|instance| {
                let authority: Arc<str> = instance.authority().into();
                let in_flight = previous
                    .iter()
                    .find(|slot| slot.authority == authority)
                    .map_or_else(Default::default, |slot| slot.in_flight.clone());
                Slot { authority, in_flight }
            })
            .collect::<Vec<_>>();
        self.known.with_label_values(&[service]).set(i64::try_from(slots.len()).unwrap_or(i64::MAX));
        services.insert(service.to_string(), slots);
        true
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
        self.services.read().expect("services lock").contains_key(service)
    }

    /// An instance of `service` other than those in `exclude`, skipping
    /// ejected ones while any other is left.
    pub async fn pick(&self, service: &str, exclude: &[Arc<str>]) -> Option<Picked> {
        if !self.known(service) {
            self.refresh(service).await;
        }
        let services = self.services.read().expect("services lock");
        let slots = services.get(service)?;
        let candidates: Vec<&Slot> = slots.iter().filter(|slot| !exclude.contains(&slot.authority)).collect();
        let healthy: Vec<&Slot> = {
            let ejected = self.ejected.lock().expect("ejected lock");
            let now = Instant::now();
            candidates
                .iter()
                .copied()
                .filter(|slot| ejected.get(&*slot.authority).is_none_or(|until| *until <= now))
                .collect()
        };
        // With every candidate ejected, trying one beats refusing outright
        // (a lone instance that blipped would otherwise be shut out).
        let usable = if healthy.is_empty() { candidates } else { healthy };
        let slot = self.choose(&usable)?;
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked { authority: slot.authority.clone(), in_flight: slot.in_flight.clone() })
    }

    fn choose<'a>(&self, usable: &[&'a Slot]) -> Option<&'a Slot> {
        match (usable.len(), self.balancer) {
            (0, _) => None,
            (1, _) => Some(usable[0]),
            (n, Balancer::RoundRobin) => Some(usable[self.next.fetch_add(1, Ordering::Relaxed) % n]),
            (n, Balancer::P2c) => {
                let mut rng = rand::rng();
                let first = rng.random_range(0..n);
                let second = (first + rng.random_range(1..n)) % n;
                let load = |i: usize| usable[i].in_flight.load(Ordering::Relaxed);
                Some(if load(second) < load(first) { usable[second] } else { usable[first] })
            }
        }
    }

    /// Skips an instance for a while after a connection failure.
    pub fn eject(&self, authority: &str) {
        tracing::warn!(instance = %authority, "ejecting failing instance");
        self.ejected.lock().expect("ejected lock").insert(authority.to_string(), Instant::now() + EJECT_FOR);
    }

    pub fn has_any(&self) -> bool {
        self.services.read().expect("services lock").values().any(|list| !list.is_empty())
    }
}
