//! Behaviour every `RegistryStore` adapter must show; run against the
//! embedded store here, and against Redis once that adapter exists.

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
