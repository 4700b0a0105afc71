//! Embedded registry store: a map behind a std mutex. No lock is ever held
//! across an `.await` (every method body is synchronous).

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Evicted, InstanceRecord, RegistryStore, ServiceRecord, StoreError, Upserted};
use crate::model::{Registration, ServiceId, Status};

#[derive(Default)]
pub struct MemoryRegistryStore {
    services: Mutex<BTreeMap<ServiceId, ServiceRecord>>,
}

impl MemoryRegistryStore {
    pub fn new() -> MemoryRegistryStore {
        MemoryRegistryStore::default()
    }

    fn services(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServiceId, ServiceRecord>> {
        self.services.lock().expect("registry store lock")
    }

    /// Runs `change` on one instance, if it exists.
    fn with_instance<T>(
        &self,
        service_id: &str,
        instance_id: &str,
        change: impl FnOnce(&mut InstanceRecord) -> T,
    ) -> Option<T> {
        let mut services = self.services();
        let service = services.get_mut(service_id)?;
        let instance = service.instances.iter_mut().find(|i| i.instance_id == instance_id)?;
        Some(change(instance))
    }
}

#[async_trait]
impl RegistryStore for MemoryRegistryStore {
    async fn upsert(&self, registration: Registration, now: DateTime<Utc>) -> Result<Upserted, StoreError> {
        let mut services = self.services();
        let service =
            services.entry(registration.service_id.clone()).or_insert_with(|| ServiceRecord::empty(&registration, now));
        Ok(service.upsert(registration, now))
    }

    async fn renew(
        &self,
        service_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, StoreError> {
        Ok(self.with_instance(service_id, instance_id, |instance| {
            instance.last_seen = now;
            instance.ttl
        }))
    }

    async fn remove(&self, service_id: &str, instance_id: &str) -> Result<bool, StoreError> {
        let mut services = self.services();
        let Some(service) = services.get_mut(service_id) else {
            return Ok(false);
        };
        let before = service.instances.len();
        service.instances.retain(|i| i.instance_id != instance_id);
        let removed = service.instances.len() < before;
        if service.instances.is_empty() {
            services.remove(service_id);
        }
        Ok(removed)
    }

    async fn get(&self, service_id: &str) -> Result<Option<ServiceRecord>, StoreError> {
        Ok(self.services().get(service_id).cloned())
    }

    async fn list(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        Ok(self.services().values().cloned().collect())
    }

    async fn evict_expired(&self, now: DateTime<Utc>) -> Result<Vec<Evicted>, StoreError> {
        let mut services = self.services();
        let evicted = services.values_mut().flat_map(|service| service.evict_expired(now)).collect();
        services.retain(|_, service| !service.instances.is_empty());
        Ok(evicted)
    }

    async fn set_status(&self, service_id: &str, instance_id: &str, status: Status) -> Result<bool, StoreError> {
        Ok(self.with_instance(service_id, instance_id, |instance| instance.status = status).is_some())
    }
}
