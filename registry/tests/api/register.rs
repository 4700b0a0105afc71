use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{PROBLEM_JSON, TestRegistry, seed_body, spawn_registry};

#[tokio::test]
async fn register_returns_service_and_instance_id() {
    let registry = spawn_registry().await;

    let response = registry.register("service-a", &seed_body()).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["service_id"], "service-a");
    let instance_id = body["instance_id"].as_str().expect("instance_id is a string");
    let uuid = uuid::Uuid::parse_str(instance_id).expect("instance_id is a UUID");
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(body["ttl_seconds"], 30, "the default TTL applies");
}

#[tokio::test]
async fn port_number_as_number_is_returned_as_string() {
    let registry = spawn_registry().await;
    let body = json!({"name": "Service A", "ip_address": "10.0.1.7", "port_number": 8042, "protocol": "TCP"});

    let instance_id = registry.register_ok("service-a", &body).await;

    let instance = registry.instance("service-a", &instance_id).await.expect("instance listed");
    assert_eq!(instance["port_number"], "8042");
}

#[tokio::test]
async fn protocol_is_case_insensitive_and_returned_upper_case() {
    let registry = spawn_registry().await;
    let body = json!({"name": "Quotes", "ip_address": "quotes.internal", "port_number": "80", "protocol": "grpc"});

    let instance_id = registry.register_ok("quotes", &body).await;

    let instance = registry.instance("quotes", &instance_id).await.expect("instance listed");
    assert_eq!(instance["protocol"], "GRPC");
    assert_eq!(instance["ip_address"], "quotes.internal");
}

#[tokio::test]
async fn optional_fields_are_stored_and_returned() {
    let registry = spawn_registry().await;
    let body = json!({"name": "Quotes", "ip_address": "10.0.1.8", "port_number": "9000", "protocol": "TCP",
        "health_check_path": "/healthz", "ttl_seconds": 120, "metadata": {"zone": "eu-1"}});

    let response = registry.register("quotes", &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let registered: Value = response.json().await.expect("JSON body");
    assert_eq!(registered["ttl_seconds"], 120);

    let instance_id = registered["instance_id"].as_str().expect("instance_id");
    let instance = registry.instance("quotes", instance_id).await.expect("instance listed");
    assert_eq!(instance["health_check_path"], "/healthz");
    assert_eq!(instance["metadata"], json!({"zone": "eu-1"}));
}

/// Posts `body` and returns the `field` of each entry of the 400's `errors`.
async fn rejected_fields(registry: &TestRegistry, body: String) -> Vec<String> {
    let response = registry.register_raw("svc-invalid", body.clone()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body} is refused");
    let content_type = response.headers().get(header::CONTENT_TYPE).expect("content type");
    assert_eq!(content_type, PROBLEM_JSON);
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["status"], 400);
    let errors = problem["errors"].as_array().expect("errors array");
    assert!(errors.iter().all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())), "{problem}");
    assert!(registry.service("svc-invalid").await.is_none(), "nothing stored after {body}");
    errors.iter().map(|e| e["field"].as_str().expect("field name").to_string()).collect()
}

fn seed_with(field: &str, value: Value) -> String {
    let mut body = seed_body();
    body[field] = value;
    body.to_string()
}

#[tokio::test]
async fn invalid_payload_is_400_naming_each_bad_field() {
    let registry = spawn_registry().await;
    assert_eq!(rejected_fields(&registry, seed_with("ip_address", json!("10.0.1.300"))).await, ["ip_address"]);
    assert_eq!(rejected_fields(&registry, seed_with("ip_address", json!("not a host!"))).await, ["ip_address"]);
    assert_eq!(rejected_fields(&registry, seed_with("port_number", json!(0))).await, ["port_number"]);
    assert_eq!(rejected_fields(&registry, seed_with("port_number", json!(70000))).await, ["port_number"]);
    assert_eq!(rejected_fields(&registry, seed_with("port_number", json!("abc"))).await, ["port_number"]);
    assert_eq!(rejected_fields(&registry, seed_with("protocol", json!("SCTP"))).await, ["protocol"]);
    assert_eq!(rejected_fields(&registry, seed_with("name", json!(""))).await, ["name"]);
    assert_eq!(
        rejected_fields(&registry, seed_with("health_check_path", json!("healthz"))).await,
        ["health_check_path"]
    );
    assert_eq!(rejected_fields(&registry, seed_with("ttl_seconds", json!(0))).await, ["ttl_seconds"]);
    assert_eq!(rejected_fields(&registry, seed_with("metadata", json!({"zone": 1}))).await, ["metadata"]);

    let missing_name = json!({"ip_address": "10.0.1.7", "port_number": "8042", "protocol": "TCP"});
    assert_eq!(rejected_fields(&registry, missing_name.to_string()).await, ["name"]);
    assert_eq!(rejected_fields(&registry, "{\"name\": ".to_string()).await, ["body"]);
    assert_eq!(rejected_fields(&registry, "[]".to_string()).await, ["body"]);

    let all_bad = json!({"ip_address": 7, "port_number": "0", "protocol": "x"});
    assert_eq!(
        rejected_fields(&registry, all_bad.to_string()).await,
        ["name", "ip_address", "port_number", "protocol"]
    );
}

#[tokio::test]
async fn oversized_or_non_json_body_is_400_naming_body() {
    let registry = spawn_registry().await;
    let megabyte = 1024 * 1024;
    let huge_name = seed_with("name", json!("n".repeat(megabyte)));
    assert_eq!(rejected_fields(&registry, huge_name).await, ["body"]);
    assert_eq!(rejected_fields(&registry, "x".repeat(megabyte)).await, ["body"]);
    assert_eq!(rejected_fields(&registry, "hello".to_string()).await, ["body"]);

    let response = registry.register_raw("svc-invalid", "x".repeat(megabyte)).await;
    let problem: Value = response.json().await.expect("problem JSON");
    let message = problem["errors"][0]["message"].as_str().expect("a message");
    assert!(message.contains("too large") && message.contains("65536"), "{message}");

    // The limit is on the body, not on registrations that merely look big.
    let roomy = seed_with("metadata", json!({"note": "m".repeat(32 * 1024)}));
    assert_eq!(registry.register_raw("svc-roomy", roomy).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn invalid_service_id_is_400_naming_service_id() {
    let registry = spawn_registry().await;

    let response = registry.register("bad~id", &seed_body()).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["errors"][0]["field"], "service_id");
}

#[tokio::test]
async fn reregistering_same_address_returns_same_instance() {
    let registry = spawn_registry().await;
    let first = registry.register_ok("service-a", &seed_body()).await;
    let registered_at = registry.service("service-a").await.expect("service")["registered_at"].clone();

    let renamed = json!({"name": "Service A v2", "ip_address": "10.0.1.7", "port_number": 8042, "protocol": "http"});
    let second = registry.register_ok("service-a", &renamed).await;

    assert_eq!(first, second);
    let doc = registry.service("service-a").await.expect("service");
    assert_eq!(doc["instance_count"], 1);
    assert_eq!(doc["service_name"], "Service A v2", "the latest registration names the service");
    assert_eq!(doc["registered_at"], registered_at, "the first registration time is kept");
    assert_eq!(doc["instances"][0]["protocol"], "HTTP");

    let other_port = seed_with("port_number", json!("8043"));
    let third = registry.register_raw("service-a", other_port).await.json::<Value>().await.expect("JSON");
    assert_ne!(third["instance_id"], first.as_str(), "another address is another instance");
}
