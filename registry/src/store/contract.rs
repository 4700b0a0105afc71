//! Behaviour every `RegistryStore` adapter must show; run against the
//! embedded store always, and against Redis when `REDIS_URL` is set (each
//! run under a key prefix of its own), where replicas sharing the state
//! must also agree.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{MemoryRegistryStore, RegistryStore};
use crate::model::{Host, Port, Protocol, Registration, ServiceId, Status};

fn registration(service: &str, name: &str, port: u16, ttl_seconds: u64) -> Registration {
    Registration {
        service_id: ServiceId::parse(service).expect("valid id"),
        name: name.to_string(),
        host: Host::parse("10.0.1.7").expect("valid host"),
        port: Port::parse(&port.into()).expect("valid port"),
        protocol: Protocol::Tcp,
        health_check_path: None,
        ttl: Duration::from_secs(ttl_seconds),
        metadata: Default::default(),
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
}

async fn same_address_keeps_instance_id_and_first_registration_time(store: &dyn RegistryStore) {
    let first = store.upsert(registration("a", "Old", 80, 30), at(0)).await.expect("upsert");
    let again = store.upsert(registration("a", "New", 80, 30), at(5)).await.expect("upsert");
    assert!(first.created && !again.created);
    assert_eq!(first.instance_id, again.instance_id);
    let service = store.get("a").await.expect("get").expect("known");
    assert_eq!((service.name.as_str(), service.registered_at, service.instances.len()), ("New", at(0), 1));
    assert_eq!(service.instances[0].last_seen, at(5));
}

async fn removing_the_last_instance_forgets_the_service(store: &dyn RegistryStore) {
    let one = store.upsert(registration("b", "B", 80, 30), at(0)).await.expect("upsert");
    let two = store.upsert(registration("b", "B", 81, 30), at(0)).await.expect("upsert");
    assert_ne!(one.instance_id, two.instance_id);
    assert!(store.remove("b", &one.instance_id).await.expect("remove"));
    assert!(!store.remove("b", &one.instance_id).await.expect("remove"));
    assert!(store.get("b").await.expect("get").is_some());
    assert!(store.remove("b", &two.instance_id).await.expect("remove"));
    assert!(store.get("b").await.expect("get").is_none());
}

async fn expired_instances_are_evicted_unless_renewed(store: &dyn RegistryStore) {
    let stale = store.upsert(registration("c", "C", 80, 10), at(0)).await.expect("upsert");
    let fresh = store.upsert(registration("c", "C", 81, 10), at(0)).await.expect("upsert");
    assert_eq!(store.renew("c", &fresh.instance_id, at(8)).await.expect("renew"), Some(Duration::from_secs(10)));
    assert!(store.evict_expired(at(10)).await.expect("evict").is_empty(), "a TTL is inclusive");
    let evicted = store.evict_expired(at(11)).await.expect("evict");
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        (evicted[0].instance_id.as_str(), evicted[0].authority.as_str()),
        (stale.instance_id.as_str(), "10.0.1.7:80")
    );
    assert!(store.evict_expired(at(30)).await.expect("evict").len() == 1);
    assert!(store.get("c").await.expect("get").is_none());
    assert_eq!(store.renew("c", &fresh.instance_id, at(30)).await.expect("renew"), None);
}

async fn status_is_recorded_per_instance(store: &dyn RegistryStore) {
    let one = store.upsert(registration("d", "D", 80, 30), at(0)).await.expect("upsert");
    assert!(store.set_status("d", &one.instance_id, Status::Critical).await.expect("status"));
    assert!(!store.set_status("d", "no-such-instance", Status::Critical).await.expect("status"));
    let service = store.get("d").await.expect("get").expect("known");
    assert_eq!(service.instances[0].status, Status::Critical);
}

async fn list_is_ordered_by_service_id(store: &dyn RegistryStore) {
    for id in ["z", "e", "m"] {
        store.upsert(registration(id, id, 80, 30), at(0)).await.expect("upsert");
    }
    let ids: Vec<String> = store.list().await.expect("list").into_iter().map(|s| s.service_id.to_string()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

async fn run_contract(store: &dyn RegistryStore) {
    same_address_keeps_instance_id_and_first_registration_time(store).await;
    removing_the_last_instance_forgets_the_service(store).await;
    expired_instances_are_evicted_unless_renewed(store).await;
    status_is_recorded_per_instance(store).await;
    list_is_ordered_by_service_id(store).await;
}

#[tokio::test]
async fn memory_store_meets_the_contract() {
    run_contract(&MemoryRegistryStore::new()).await;
}

/// The contract on Redis, plus what sharing one Redis between registry
/// replicas promises: they see each other's writes, concurrent writes are
/// not lost, and the state outlives any one of them.
mod redis {
    use std::sync::Arc;

    use futures::future::join_all;
    use tokio::time::Instant;

    use super::*;
    use crate::store::{RedisRegistryStore, StoreError};

    fn real_url() -> Option<String> {
        lizards_testkit::real_url("REDIS_URL")
    }

    /// A fresh key prefix on the test Redis, as replicas sharing it see it.
    struct Shared {
        url: String,
        prefix: String,
    }

    impl Shared {
        fn new() -> Option<Shared> {
            let prefix = format!("lizards-test.registry.{}", uuid::Uuid::new_v4().simple());
            Some(Shared { url: real_url()?, prefix })
        }

        /// One replica's store (a registry process, started or restarted).
        async fn replica(&self) -> RedisRegistryStore {
            RedisRegistryStore::connect(&self.url, &self.prefix).await.expect("Redis at REDIS_URL answers")
        }

        /// Removes the test's keys once it passed.
        async fn clean_up(self) {
            let client = ::redis::Client::open(self.url).expect("a valid URL");
            let mut connection = client.get_multiplexed_async_connection().await.expect("Redis answers");
            let pattern = format!("{{{}}}:*", self.prefix);
            let keys: Vec<String> =
                ::redis::cmd("KEYS").arg(pattern).query_async(&mut connection).await.expect("KEYS answers");
            if !keys.is_empty() {
                let _: () = ::redis::cmd("DEL").arg(keys).query_async(&mut connection).await.expect("DEL answers");
            }
        }
    }

    #[tokio::test]
    async fn redis_store_meets_the_contract() {
        let Some(shared) = Shared::new() else { return };
        run_contract(&shared.replica().await).await;
        shared.clean_up().await;
    }

    #[tokio::test]
    async fn replicas_see_each_others_writes() {
        let Some(shared) = Shared::new() else { return };
        let (one, two) = (shared.replica().await, shared.replica().await);
        let registered = one.upsert(registration("quotes", "Quotes", 80, 30), at(0)).await.expect("upsert");
        let seen = two.get("quotes").await.expect("get").expect("registered through the other replica");
        assert_eq!(seen.instances[0].instance_id, registered.instance_id);
        assert_eq!(two.list().await.expect("list"), vec![seen]);

        let again = two.upsert(registration("quotes", "Quotes", 80, 30), at(5)).await.expect("upsert");
        assert_eq!((again.instance_id.as_str(), again.created), (registered.instance_id.as_str(), false));
        assert!(two.set_status("quotes", &registered.instance_id, Status::Critical).await.expect("status"));
        assert_eq!(one.get("quotes").await.expect("get").expect("known").instances[0].status, Status::Critical);

        assert!(two.remove("quotes", &registered.instance_id).await.expect("remove"));
        assert_eq!(one.get("quotes").await.expect("get"), None);
        assert!(one.list().await.expect("list").is_empty());
        shared.clean_up().await;
    }

    #[tokio::test]
    async fn state_outlives_the_replica_that_wrote_it() {
        let Some(shared) = Shared::new() else { return };
        let first = shared.replica().await;
        let registered = first.upsert(registration("quotes", "Quotes", 80, 30), at(0)).await.expect("upsert");
        drop(first);

        let restarted = shared.replica().await;
        let service = restarted.get("quotes").await.expect("get").expect("still registered");
        assert_eq!(service.instances[0].instance_id, registered.instance_id);
        assert_eq!(service.registered_at, at(0));
        shared.clean_up().await;
    }

    #[tokio::test]
    async fn concurrent_registrations_on_two_replicas_are_all_kept() {
        let Some(shared) = Shared::new() else { return };
        let one: Arc<dyn RegistryStore> = Arc::new(shared.replica().await);
        let two: Arc<dyn RegistryStore> = Arc::new(shared.replica().await);
        let registrations = (0..20u16).map(|n| {
            let store = if n % 2 == 0 { one.clone() } else { two.clone() };
            async move { store.upsert(registration("busy", "Busy", 8000 + n, 30), at(0)).await.expect("upsert") }
        });
        let upserted = join_all(registrations).await;
        assert!(upserted.iter().all(|u| u.created));
        let service = one.get("busy").await.expect("get").expect("known");
        assert_eq!(service.instances.len(), 20, "no registration lost to a concurrent one");
        shared.clean_up().await;
    }

    #[tokio::test]
    async fn concurrent_sweeps_report_each_eviction_once() {
        let Some(shared) = Shared::new() else { return };
        let (one, two) = (shared.replica().await, shared.replica().await);
        for port in 80..85 {
            one.upsert(registration("stale", "Stale", port, 10), at(0)).await.expect("upsert");
        }
        let (by_one, by_two) = tokio::join!(one.evict_expired(at(60)), two.evict_expired(at(60)));
        let mut evicted: Vec<String> =
            by_one.expect("evict").into_iter().chain(by_two.expect("evict")).map(|e| e.instance_id).collect();
        assert_eq!(evicted.len(), 5, "each instance reported by one replica only");
        evicted.sort();
        evicted.dedup();
        assert_eq!(evicted.len(), 5);
        assert_eq!(one.get("stale").await.expect("get"), None);
        shared.clean_up().await;
    }

    #[tokio::test]
    async fn unreachable_redis_is_reported_within_seconds() {
        if real_url().is_none() {
            return;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let started = Instant::now();
        let result = RedisRegistryStore::connect(&format!("redis://127.0.0.1:{port}"), "unused").await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "gave {result:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    }
}
