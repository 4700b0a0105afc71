//! The registry's state behind a small port: an embedded map, or Redis
//! shared by several registry replicas.

pub mod memory;
pub mod redis;

#[cfg(test)]
mod contract;

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

pub use self::redis::RedisRegistryStore;
pub use memory::MemoryRegistryStore;

use crate::model::{HealthPath, Host, Port, Protocol, Registration, ServiceId, Status};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("registry store unavailable: {0}")]
    Unavailable(String),
}

/// One registered instance of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// A UUID v4, stable across re-registrations of the same address.
    pub instance_id: String,
    pub host: Host,
    pub port: Port,
    pub protocol: Protocol,
    pub health_check_path: Option<HealthPath>,
    pub metadata: BTreeMap<String, String>,
    pub ttl: Duration,
    pub status: Status,
    pub last_seen: DateTime<Utc>,
}

impl InstanceRecord {
    /// A fresh instance for `registration`, passing until a probe says otherwise.
    pub fn new(registration: Registration, now: DateTime<Utc>) -> InstanceRecord {
        InstanceRecord {
            instance_id: uuid::Uuid::new_v4().to_string(),
            host: registration.host,
            port: registration.port,
            protocol: registration.protocol,
            health_check_path: registration.health_check_path,
            metadata: registration.metadata,
            ttl: registration.ttl,
            status: Status::Passing,
            last_seen: now,
        }
    }

    /// Takes the new settings of a re-registration of the same address.
    pub fn renew_from(&mut self, registration: Registration, now: DateTime<Utc>) {
        // Without a probe nothing could ever clear a critical status again.
        if registration.health_check_path.is_none() {
            self.status = Status::Passing;
        }
        self.protocol = registration.protocol;
        self.health_check_path = registration.health_check_path;
        self.metadata = registration.metadata;
        self.ttl = registration.ttl;
        self.last_seen = now;
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        let ttl = TimeDelta::from_std(self.ttl).unwrap_or(TimeDelta::MAX);
        self.last_seen.checked_add_signed(ttl).is_some_and(|expires| expires < now)
    }

    pub fn authority(&self) -> String {
        self.host.authority(self.port)
    }
}

/// A service id with its live instances (never empty: a service whose last
/// instance leaves is forgotten).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRecord {
    pub service_id: ServiceId,
    /// Display name from the most recent registration.
    pub name: String,
    /// First registration since the service last had no instances.
    pub registered_at: DateTime<Utc>,
    pub instances: Vec<InstanceRecord>,
}

impl ServiceRecord {
    /// A service about to get its first instance from `registration`.
    pub fn empty(registration: &Registration, now: DateTime<Utc>) -> ServiceRecord {
        ServiceRecord {
            service_id: registration.service_id.clone(),
            name: registration.name.clone(),
            registered_at: now,
            instances: Vec::new(),
        }
    }

    /// Adds an instance, or renews the one already at the same host and
    /// port, keeping its instance id; the display name follows the latest
    /// registration.
    pub fn upsert(&mut self, registration: Registration, now: DateTime<Utc>) -> Upserted {
        self.name.clone_from(&registration.name);
        let ttl = registration.ttl;
        let same_address = |i: &&mut InstanceRecord| i.host == registration.host && i.port == registration.port;
        if let Some(instance) = self.instances.iter_mut().find(same_address) {
            let instance_id = instance.instance_id.clone();
            instance.renew_from(registration, now);
            return Upserted { instance_id, ttl, created: false };
        }
        let instance = InstanceRecord::new(registration, now);
        let instance_id = instance.instance_id.clone();
        self.instances.push(instance);
        Upserted { instance_id, ttl, created: true }
    }

    /// Removes the instances whose TTL ran out before `now`.
    pub fn evict_expired(&mut self, now: DateTime<Utc>) -> Vec<Evicted> {
        let mut evicted = Vec::new();
        self.instances.retain(|instance| {
            let expired = instance.is_expired(now);
            if expired {
                evicted.push(Evicted {
                    service_id: self.service_id.clone(),
                    instance_id: instance.instance_id.clone(),
                    authority: instance.authority(),
                });
            }
            !expired
        });
        evicted
    }
}

/// Outcome of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub instance_id: String,
    pub ttl: Duration,
    /// False when an instance at the same address was renewed.
    pub created: bool,
}

/// An instance removed because its TTL ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    pub service_id: ServiceId,
    pub instance_id: String,
    pub authority: String,
}

#[async_trait]
pub trait RegistryStore: Send + Sync + 'static {
    /// Registers an instance, or renews the one already at the same
    /// (service id, host, port), keeping its instance id.
    async fn upsert(&self, registration: Registration, now: DateTime<Utc>) -> Result<Upserted, StoreError>;

    /// Renews `last_seen`; returns the instance's TTL, `None` when unknown.
    async fn renew(
        &self,
        service_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, StoreError>;

    /// Returns whether the instance existed.
    async fn remove(&self, service_id: &str, instance_id: &str) -> Result<bool, StoreError>;

    async fn get(&self, service_id: &str) -> Result<Option<ServiceRecord>, StoreError>;

    /// Every service, ordered by service id.
    async fn list(&self) -> Result<Vec<ServiceRecord>, StoreError>;

    /// Removes the instances whose TTL ran out before `now`.
    async fn evict_expired(&self, now: DateTime<Utc>) -> Result<Vec<Evicted>, StoreError>;

    /// Records a health-check result; returns whether the instance existed.
    async fn set_status(&self, service_id: &str, instance_id: &str, status: Status) -> Result<bool, StoreError>;
}
