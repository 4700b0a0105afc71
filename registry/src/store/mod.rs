//! The registry's state behind a small port, so the embedded map can be
//! swapped for Redis (shared by several registry replicas) later.

pub mod memory;

#[cfg(test)]
mod contract;

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};

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
