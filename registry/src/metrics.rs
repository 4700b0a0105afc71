//! The registry's own metrics, next to the HTTP metrics every service has.

use prometheus::{IntCounter, IntGaugeVec, Registry};

use lizards_shared::telemetry::{gauge_vec, register};

use crate::{model::Status, store::ServiceRecord};

#[derive(Clone)]
pub struct RegistryMetrics {
    instances: IntGaugeVec,
    evictions: IntCounter,
}

impl RegistryMetrics {
    pub fn new(registry: &Registry) -> RegistryMetrics {
        let instances =
            gauge_vec(registry, "lizards_registry_instances", "Registered instances by health status", &["status"]);
        let evictions =
            IntCounter::new("lizards_registry_evictions_total", "Instances evicted because their TTL ran out")
                .expect("valid counter");
        RegistryMetrics { instances, evictions: register(registry, evictions) }
    }

    /// Sets the instance gauges from a full listing; both statuses are
    /// always set so that a zero count is exported rather than missing.
    pub fn observe(&self, services: &[ServiceRecord]) {
        for status in [Status::Passing, Status::Critical] {
            let count = services.iter().flat_map(|s| &s.instances).filter(|i| i.status == status).count();
            self.instances.with_label_values(&[status.as_str()]).set(count.try_into().unwrap_or(i64::MAX));
        }
    }

    pub fn evicted(&self, count: usize) {
        self.evictions.inc_by(count.try_into().unwrap_or(u64::MAX));
    }
}
