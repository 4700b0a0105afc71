//! The shared discovery client every service uses works against this server.

use std::time::Duration;

use lizards_shared::{
    discovery::{Registration, RegistryClient, keep_registered},
    shutdown::Shutdown,
};

use crate::helpers::{eventually, spawn_registry};

#[tokio::test]
async fn keep_registered_registers_then_deregisters_on_shutdown() {
    let registry = spawn_registry().await;
    let client = RegistryClient::new(&registry.base, None);
    let registration = Registration::http("quotes", "Quotes", "127.0.0.1", 9999);
    let stop = Shutdown::new();

    let task = tokio::spawn(keep_registered(client.clone(), registration, Duration::from_millis(200), stop.clone()));
    eventually("the service is visible", Duration::from_secs(5), || async {
        client.instances("quotes").await.is_ok_and(|instances| instances.len() == 1)
    })
    .await;
    let instance = client.instances("quotes").await.expect("lookup").remove(0);
    assert_eq!(instance.authority(), "127.0.0.1:9999");
    assert_eq!(instance.protocol, "HTTP");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("client stops").expect("no panic");

    assert!(client.instances("quotes").await.expect("lookup").is_empty(), "deregistered on shutdown");
}
