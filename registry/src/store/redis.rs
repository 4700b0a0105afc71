//! Registry state in Redis, shared by every registry replica and kept
//! across their restarts.
//!
//! Layout, all under one hash tag so a script may touch every key (Redis
//! Cluster wants one slot per script):
//! - `{prefix}:service:<id>`: the service as one JSON document;
//! - `{prefix}:services`: the set of service ids, for listing.
//!
//! A change reads the document, applies the same rules as the embedded
//! store in Rust, and writes the result back with a compare-and-set script
//! that only succeeds if the document is still what was read; on a lost
//! race it starts over. WATCH/MULTI would need a connection per change,
//! while the multiplexed connection here is shared by concurrent requests.

use std::{collections::BTreeMap, time::Duration};

use ::redis::{AsyncCommands, Script, aio::ConnectionManager};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lizards_shared::cache::redis::{RedisUnavailable, bounded, connection_manager};
use serde::{Deserialize, Serialize};

use super::{Evicted, InstanceRecord, RegistryStore, ServiceRecord, StoreError, Upserted};
use crate::model::{HealthPath, Host, Port, Protocol, Registration, ServiceId, Status};

/// Lost races before a change gives up; only reached under a storm of
/// writes to one service.
const MAX_ATTEMPTS: usize = 32;

/// Writes `ARGV[2]` to the service key (deletes it when empty) only if it
/// still holds `ARGV[1]` (empty: absent), keeping the id set in step.
/// Returns 1 when written, 0 when the document changed meanwhile.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
return 1
";

impl From<RedisUnavailable> for StoreError {
    fn from(error: RedisUnavailable) -> StoreError {
        StoreError::Unavailable(error.to_string())
    }
}

/// [`RegistryStore`] on Redis. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisRegistryStore {
    connection: ConnectionManager,
    /// `{prefix}`, the hash tag every key starts with.
    tag: String,
    compare_and_set: Script,
}

impl std::fmt::Debug for RedisRegistryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistryStore").field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// What a change decided after looking at the current document.
enum Change<T> {
    /// Nothing to write.
    Keep(T),
    /// Store this service (forget it when `None` or without instances).
    Write(Option<ServiceRecord>, T),
}

impl RedisRegistryStore {
    /// Connects to `url`; registries sharing a `prefix` share their state.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisRegistryStore, StoreError> {
        let connection = connection_manager(url).await?;
        Ok(RedisRegistryStore {
            connection,
            tag: format!("{{{prefix}}}"),
            compare_and_set: Script::new(COMPARE_AND_SET),
        })
    }

    fn service_key(&self, service_id: &str) -> String {
        format!("{}:service:{service_id}", self.tag)
    }

    fn index_key(&self) -> String {
        format!("{}:services", self.tag)
    }

    async fn read(&self, service_id: &str) -> Result<Option<String>, StoreError> {
        let mut connection = self.connection.clone();
        Ok(bounded(connection.get(self.service_key(service_id))).await?)
    }

    /// Applies `change` to the current state of `service_id` atomically,
    /// starting over when another writer got there first.
    async fn update<T>(
        &self,
        service_id: &str,
        mut change: impl FnMut(Option<ServiceRecord>) -> Change<T>,
    ) -> Result<T, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read(service_id).await?;
            let record = current.as_deref().map(decode).transpose()?;
            let (next, outcome) = match change(record) {
                Change::Keep(outcome) => return Ok(outcome),
                Change::Write(next, outcome) => (next, outcome),
            };
            let next = match next.filter(|service| !service.instances.is_empty()) {
                Some(service) => encode(&service)?,
                None => String::new(),
            };
            let mut invocation = self.compare_and_set.key(self.service_key(service_id));
            invocation.key(self.index_key()).arg(current.unwrap_or_default()).arg(next).arg(service_id);
            let mut connection = self.connection.clone();
            let written: i64 = bounded(invocation.invoke_async(&mut connection)).await?;
            if written == 1 {
                return Ok(outcome);
            }
        }
        Err(StoreError::Unavailable(format!("service '{service_id}' kept changing under {MAX_ATTEMPTS} attempts")))
    }

    /// Runs `change` on one instance, if it exists, and stores the result.
    async fn with_instance<T>(
        &self,
        service_id: &str,
        instance_id: &str,
        change: impl Fn(&mut InstanceRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        self.update(service_id, |service| {
            let Some(mut service) = service else { return Change::Keep(None) };
            let Some(instance) = service.instances.iter_mut().find(|i| i.instance_id == instance_id) else {
                return Change::Keep(None);
            };
            let outcome = change(instance);
            Change::Write(Some(service), Some(outcome))
        })
        .await
    }
}

#[async_trait]
impl RegistryStore for RedisRegistryStore {
    async fn upsert(&self, registration: Registration, now: DateTime<Utc>) -> Result<Upserted, StoreError> {
        let service_id = registration.service_id.clone();
        self.update(service_id.as_str(), |service| {
            let mut service = service.unwrap_or_else(|| ServiceRecord::empty(&registration, now));
            let upserted = service.upsert(registration.clone(), now);
            Change::Write(Some(service), upserted)
        })
        .await
    }

    async fn renew(
        &self,
        service_id: &str,
        instance_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, StoreError> {
        self.with_instance(service_id, instance_id, |instance| {
            instance.last_seen = now;
            instance.ttl
        })
        .await
    }

    async fn remove(&self, service_id: &str, instance_id: &str) -> Result<bool, StoreError> {
        self.update(service_id, |service| {
            let Some(mut service) = service else { return Change::Keep(false) };
            let before = service.instances.len();
            service.instances.retain(|i| i.instance_id != instance_id);
            if service.instances.len() == before {
                return Change::Keep(false);
            }
            Change::Write(Some(service), true)
        })
        .await
    }

    async fn get(&self, service_id: &str) -> Result<Option<ServiceRecord>, StoreError> {
        self.read(service_id).await?.as_deref().map(decode).transpose()
    }

    async fn list(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let mut connection = self.connection.clone();
        let mut ids: Vec<String> = bounded(connection.smembers(self.index_key())).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.service_key(id)).collect();
        let documents: Vec<Option<String>> = bounded(connection.mget(keys)).await?;
        // A service removed between the two reads is simply gone; one that
        // cannot be read is left out (and logged) rather than hiding all
        // the others from discovery.
        let services = documents.iter().flatten().filter_map(|document| match decode(document) {
            Ok(service) => Some(service),
            Err(error) => {
                tracing::warn!(%error, "registry store: skipping a service");
                None
            }
        });
        Ok(services.collect())
    }

    async fn evict_expired(&self, now: DateTime<Utc>) -> Result<Vec<Evicted>, StoreError> {
        let mut evicted = Vec::new();
        for service in self.list().await? {
            if !service.instances.iter().any(|instance| instance.is_expired(now)) {
                continue;
            }
            // Decided again on the current document: another replica may
            // have renewed or evicted meanwhile, and each eviction is
            // reported by exactly one of them.
            let gone = self
                .update(service.service_id.as_str(), |service| {
                    let Some(mut service) = service else { return Change::Keep(Vec::new()) };
                    let gone = service.evict_expired(now);
                    if gone.is_empty() { Change::Keep(gone) } else { Change::Write(Some(service), gone) }
                })
                .await?;
            evicted.extend(gone);
        }
        Ok(evicted)
    }

    async fn set_status(&self, service_id: &str, instance_id: &str, status: Status) -> Result<bool, StoreError> {
        Ok(self.with_instance(service_id, instance_id, |instance| instance.status = status).await?.is_some())
    }
}

/// A service as stored: plain strings, parsed back with the model's own
/// parsers, so what Redis holds is readable and checked on the way in.
#[derive(Serialize, Deserialize)]
struct StoredService {
    service_id: String,
    name: String,
    registered_at: DateTime<Utc>,
    instances: Vec<StoredInstance>,
}

#[derive(Serialize, Deserialize)]
struct StoredInstance {
    instance_id: String,
    host: String,
    port: u16,
    protocol: String,
    health_check_path: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    ttl_ms: u64,
    status: String,
    last_seen: DateTime<Utc>,
}

fn encode(service: &ServiceRecord) -> Result<String, StoreError> {
    let stored = StoredService {
        service_id: service.service_id.to_string(),
        name: service.name.clone(),
        registered_at: service.registered_at,
        instances: service
            .instances
            .iter()
            .map(|instance| StoredInstance {
                instance_id: instance.instance_id.clone(),
                host: instance.host.as_str().to_string(),
                port: instance.port.get(),
                protocol: instance.protocol.as_str().to_string(),
                health_check_path: instance.health_check_path.as_ref().map(|path| path.as_str().to_string()),
                metadata: instance.metadata.clone(),
                ttl_ms: u64::try_from(instance.ttl.as_millis()).unwrap_or(u64::MAX),
                status: instance.status.as_str().to_string(),
                last_seen: instance.last_seen,
            })
            .collect(),
    };
    serde_json::to_string(&stored).map_err(|error| StoreError::Unavailable(format!("cannot encode service: {error}")))
}

fn decode(document: &str) -> Result<ServiceRecord, StoreError> {
    decode_service(document).map_err(|reason| StoreError::Unavailable(format!("unreadable service in Redis: {reason}")))
}

fn decode_service(document: &str) -> Result<ServiceRecord, String> {
    let stored: StoredService = serde_json::from_str(document).map_err(|error| error.to_string())?;
    let instances = stored.instances.into_iter().map(decode_instance).collect::<Result<_, _>>()?;
    Ok(ServiceRecord {
        service_id: ServiceId::parse(&stored.service_id)?,
        name: stored.name,
        registered_at: stored.registered_at,
        instances,
    })
}

fn decode_instance(stored: StoredInstance) -> Result<InstanceRecord, String> {
    Ok(InstanceRecord {
        instance_id: stored.instance_id,
        host: Host::parse(&stored.host)?,
        port: Port::parse(&stored.port.into())?,
        protocol: Protocol::parse(&stored.protocol)?,
        health_check_path: stored.health_check_path.as_deref().map(HealthPath::parse).transpose()?,
        metadata: stored.metadata,
        ttl: Duration::from_millis(stored.ttl_ms),
        status: match stored.status.as_str() {
            "passing" => Status::Passing,
            "critical" => Status::Critical,
            other => return Err(format!("unknown status '{other}'")),
        },
        last_seen: stored.last_seen,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn service() -> ServiceRecord {
        let registration = Registration {
            service_id: ServiceId::parse("quotes").expect("valid id"),
            name: "Quotes".to_string(),
            host: Host::parse("::1").expect("valid host"),
            port: Port::parse(&8042.into()).expect("valid port"),
            protocol: Protocol::Http,
            health_check_path: Some(HealthPath::parse("/healthz").expect("valid path")),
            ttl: Duration::from_secs(30),
            metadata: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        };
        let now = DateTime::UNIX_EPOCH + TimeDelta::microseconds(1_234_567);
        let mut service = ServiceRecord::empty(&registration, now);
        service.upsert(registration, now);
        service.instances[0].status = Status::Critical;
        service
    }

    #[test]
    fn a_service_reads_back_as_written() {
        let service = service();
        let encoded = encode(&service).expect("encodes");
        assert_eq!(decode(&encoded).expect("decodes"), service);
    }

    #[test]
    fn an_unreadable_document_is_reported_not_skipped() {
        let service = encode(&service()).expect("encodes").replace("critical", "sleepy");
        assert!(matches!(decode(&service), Err(StoreError::Unavailable(reason)) if reason.contains("sleepy")));
        assert!(decode("{").is_err());
    }
}
