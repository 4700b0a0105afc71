use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lizards_registry::{HEALTH_INTERVAL, HEALTH_TIMEOUT};
use serde_json::{Value, json};

use crate::helpers::{TestRegistry, eventually, spawn_health_server, spawn_registry};

/// Long enough for two probe rounds, whatever the phase of the first one.
const PROBE_DEADLINE: Duration = Duration::from_secs(2 * (HEALTH_INTERVAL.as_secs() + HEALTH_TIMEOUT.as_secs()) + 1);

fn probed(addr: SocketAddr) -> Value {
    json!({"name": "Flaky", "ip_address": "127.0.0.1", "port_number": addr.port(), "protocol": "http",
        "health_check_path": "/health"})
}

async fn wait_for_status(registry: &TestRegistry, instance_id: &str, status: &str) {
    eventually(&format!("the instance is {status}"), PROBE_DEADLINE, || async {
        let instance = registry.instance("flaky", instance_id).await.expect("instance still registered");
        instance["status"] == status
    })
    .await;
}

async fn is_a_target(registry: &TestRegistry, instance_id: &str) -> bool {
    registry.prometheus_targets().await.iter().any(|t| t["labels"]["instance_id"] == instance_id)
}

#[tokio::test]
async fn failing_health_check_marks_instance_critical() {
    let registry = spawn_registry().await;
    let upstream = spawn_health_server(Arc::new(AtomicBool::new(false))).await;
    let instance_id = registry.register_ok("flaky", &probed(upstream)).await;
    assert_eq!(registry.instance("flaky", &instance_id).await.expect("listed")["status"], "passing");

    wait_for_status(&registry, &instance_id, "critical").await;

    assert!(!is_a_target(&registry, &instance_id).await, "critical instances are not scrape targets");
}

#[tokio::test]
async fn recovered_instance_is_passing_again() {
    let registry = spawn_registry().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let upstream = spawn_health_server(healthy.clone()).await;
    let instance_id = registry.register_ok("flaky", &probed(upstream)).await;
    wait_for_status(&registry, &instance_id, "critical").await;

    healthy.store(true, Ordering::SeqCst);

    wait_for_status(&registry, &instance_id, "passing").await;
    assert!(is_a_target(&registry, &instance_id).await);
}

#[tokio::test]
async fn unreachable_instance_is_marked_critical() {
    let registry = spawn_registry().await;
    // Bind then drop a listener: its port is now (almost surely) closed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("address");
    let instance_id = registry.register_ok("flaky", &probed(closed)).await;

    wait_for_status(&registry, &instance_id, "critical").await;
}
