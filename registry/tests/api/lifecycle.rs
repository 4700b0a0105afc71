use std::{sync::Arc, time::Duration};

use lizards_registry::{MemoryRegistryStore, RegistryStore};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{eventually, seed_body, spawn_registry, spawn_registry_on, spawn_registry_with};

const SHORT_SWEEP: Duration = Duration::from_millis(100);

#[tokio::test]
async fn delete_unknown_is_404_and_known_is_204() {
    let registry = spawn_registry().await;
    let instance_id = registry.register_ok("service-a", &seed_body()).await;

    assert_eq!(registry.deregister("service-a", "no-such-instance").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(registry.deregister("no-such-service", &instance_id).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(registry.deregister("service-a", &instance_id).await.status(), StatusCode::NO_CONTENT);
    assert!(registry.service("service-a").await.is_none(), "a service without instances is gone");
    assert_eq!(registry.deregister("service-a", &instance_id).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn expired_instances_are_evicted() {
    let registry = spawn_registry_with(|config| config.registry.registry_sweep = SHORT_SWEEP).await;
    let short_lived =
        json!({"name": "Brief", "ip_address": "10.0.1.7", "port_number": 8042, "protocol": "TCP", "ttl_seconds": 1});
    registry.register_ok("brief", &short_lived).await;
    assert!(registry.service("brief").await.is_some(), "listed until its TTL runs out");

    eventually("the instance is evicted", Duration::from_secs(5), || async {
        registry.service("brief").await.is_none()
    })
    .await;

    eventually("the eviction is counted", Duration::from_secs(5), || async {
        registry.metrics().await.contains("lizards_registry_evictions_total{service=\"registry\"} 1")
    })
    .await;
}

#[tokio::test]
async fn heartbeat_keeps_instance_alive() {
    let registry = spawn_registry_with(|config| config.registry.registry_sweep = SHORT_SWEEP).await;
    let body =
        json!({"name": "Steady", "ip_address": "10.0.1.7", "port_number": 8042, "protocol": "TCP", "ttl_seconds": 2});
    let instance_id = registry.register_ok("steady", &body).await;

    // Renew well within the TTL for longer than the TTL itself.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let response = registry.heartbeat("steady", &instance_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        let renewed: Value = response.json().await.expect("JSON body");
        assert_eq!(renewed, json!({"service_id": "steady", "instance_id": instance_id, "ttl_seconds": 2}));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(registry.instance("steady", &instance_id).await.is_some(), "renewed instances stay");

    eventually("the instance is evicted once heartbeats stop", Duration::from_secs(5), || async {
        registry.service("steady").await.is_none()
    })
    .await;
    assert_eq!(registry.heartbeat("steady", &instance_id).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn heartbeat_of_unknown_instance_is_404() {
    let registry = spawn_registry().await;

    let response = registry.heartbeat("service-a", "no-such-instance").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registry_deregisters_itself_on_shutdown() {
    let store = Arc::new(MemoryRegistryStore::new());
    let registry = spawn_registry_on(store.clone()).await;
    eventually("the registry lists itself", Duration::from_secs(5), || async {
        registry.service("registry").await.is_some()
    })
    .await;

    registry.stop().await;

    let left = store.get("registry").await.expect("store answers");
    assert!(left.is_none(), "still registered after shutdown: {left:?}");
}
