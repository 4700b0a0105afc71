use std::{collections::BTreeSet, time::Duration};

use chrono::DateTime;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{PROBLEM_JSON, eventually, seed_body, spawn_registry};

fn keys(doc: &Value) -> BTreeSet<&str> {
    doc.as_object().expect("an object").keys().map(String::as_str).collect()
}

#[tokio::test]
async fn get_unknown_service_is_404() {
    let registry = spawn_registry().await;

    let response = registry.get("/services/no-such-service").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers().get(header::CONTENT_TYPE).expect("content type"), PROBLEM_JSON);
}

#[tokio::test]
async fn get_service_has_seed_shape() {
    let registry = spawn_registry().await;
    let instance_id = registry.register_ok("service-a", &seed_body()).await;

    let doc = registry.service("service-a").await.expect("service registered");

    assert_eq!(keys(&doc), BTreeSet::from(["service_name", "instance_count", "registered_at", "instances"]));
    assert_eq!(doc["service_name"], "Service A");
    assert_eq!(doc["instance_count"], 1);
    let registered_at = doc["registered_at"].as_str().expect("registered_at is a string");
    DateTime::parse_from_rfc3339(registered_at).expect("registered_at is RFC 3339");
    assert!(registered_at.len() == 20 && registered_at.ends_with('Z'), "{registered_at} is UTC to the second");

    let instance = &doc["instances"][0];
    let expected = ["instance_id", "ip_address", "port_number", "protocol", "status", "last_seen"];
    assert_eq!(keys(instance), BTreeSet::from(expected));
    assert_eq!(instance["instance_id"], instance_id.as_str());
    assert_eq!(instance["ip_address"], "10.0.1.7");
    assert_eq!(instance["port_number"], "8042");
    assert_eq!(instance["protocol"], "TCP");
    assert_eq!(instance["status"], "passing");
    DateTime::parse_from_rfc3339(instance["last_seen"].as_str().expect("last_seen")).expect("last_seen is RFC 3339");
}

#[tokio::test]
async fn list_services_includes_each_service_with_its_id() {
    let registry = spawn_registry().await;
    registry.register_ok("service-a", &seed_body()).await;
    registry.register_ok("service-b", &seed_body()).await;

    let response = registry.get("/services").await;

    assert_eq!(response.status(), StatusCode::OK);
    let list: Value = response.json().await.expect("JSON body");
    let services = list["services"].as_array().expect("services array");
    let b = services.iter().find(|s| s["service_id"] == "service-b").expect("service-b listed");
    assert_eq!(b["service_name"], "Service A");
    assert_eq!(b["instance_count"], 1);
    assert_eq!(b["instances"][0]["port_number"], "8042");
    assert!(services.iter().any(|s| s["service_id"] == "service-a"));
}

#[tokio::test]
async fn prometheus_targets_lists_healthy_instances() {
    let registry = spawn_registry().await;
    let ipv4 = registry.register_ok("quotes", &seed_body()).await;
    let ipv6 = json!({"name": "Quotes", "ip_address": "::1", "port_number": 9000, "protocol": "TCP"});
    let ipv6 = registry.register_ok("quotes", &ipv6).await;

    let targets = registry.prometheus_targets().await;

    let quotes: Vec<&Value> = targets.iter().filter(|t| t["labels"]["service"] == "quotes").collect();
    assert!(
        quotes.contains(&&json!({"targets": ["10.0.1.7:8042"], "labels": {"service": "quotes", "instance_id": ipv4}}))
    );
    assert!(
        quotes.contains(&&json!({"targets": ["[::1]:9000"], "labels": {"service": "quotes", "instance_id": ipv6}}))
    );
    assert_eq!(quotes.len(), 2);
}

#[tokio::test]
async fn registry_registers_itself() {
    let registry = spawn_registry().await;

    eventually("the registry lists itself", Duration::from_secs(5), || async {
        registry.service("registry").await.is_some()
    })
    .await;

    let doc = registry.service("registry").await.expect("registry registered");
    assert_eq!(doc["service_name"], "Lizards registry");
    let instance = &doc["instances"][0];
    assert_eq!(instance["ip_address"], "127.0.0.1");
    assert_eq!(instance["port_number"], registry.addr.port().to_string());
    assert_eq!(instance["protocol"], "HTTP");
    assert_eq!(instance["health_check_path"], "/healthz");
}

#[tokio::test]
async fn ops_routes_are_served() {
    let registry = spawn_registry().await;

    assert_eq!(registry.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(registry.get("/readyz").await.status(), StatusCode::OK);
    let metrics = registry.metrics().await;
    assert!(metrics.contains("lizards_registry_evictions_total"), "{metrics}");
}
