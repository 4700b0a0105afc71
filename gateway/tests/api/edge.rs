//! The edge's manners: CORS, request ids, problem answers for unknown
//! services, and metrics.

use reqwest::{Method, StatusCode, header};

use crate::helpers::*;

#[tokio::test]
async fn cors_preflight_and_exposed_fields() {
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;

    let preflight = gateway
        .request(Method::OPTIONS, "/portfolio/orders")
        .header(header::ORIGIN, "https://app.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, idempotency-key, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let allowed = preflight.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("idempotency-key") && allowed.contains("authorization"), "{allowed}");

    let response = gateway.request(Method::GET, "/alerts/x").header(header::ORIGIN, "https://app.example").send();
    let response = response.await.unwrap();
    let exposed = response.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("ratelimit") && exposed.contains("x-cache"), "{exposed}");
}

#[tokio::test]
async fn cors_origins_can_be_restricted() {
    let registry = spawn_registry().await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |c| {
        c.gateway.cors_origins = vec!["https://app.example".to_string()];
    })
    .await;
    let from = |origin: &'static str| gateway.request(Method::GET, "/healthz").header(header::ORIGIN, origin).send();
    let allowed = from("https://app.example").await.unwrap();
    assert_eq!(allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
    let other = from("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn request_id_is_generated_or_propagated_to_the_upstream() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;

    let given = gateway.request(Method::GET, "/alerts/id").header("x-request-id", "trace-me-42").send();
    let given = given.await.unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    assert_eq!(upstream.last_header("x-request-id").as_deref(), Some("trace-me-42"));

    let generated = gateway.get("/alerts/id").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(upstream.last_header("x-request-id"), Some(id), "the generated id travels upstream");
    assert_eq!(upstream.last_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn missing_service_is_503_problem_and_registry_writes_are_refused() {
    let registry = spawn_registry().await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;

    let response = gateway.get("/alerts/none").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    let write = gateway.request(Method::POST, "/services/provider").body("{}").send().await.unwrap();
    assert_eq!(write.status(), StatusCode::METHOD_NOT_ALLOWED);
    let list = gateway.get("/services").await;
    assert_eq!(list.status(), StatusCode::OK, "the registry's GET routes are public");
}

#[tokio::test]
async fn large_bodies_stream_through_and_unknown_paths_are_404_problems() {
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;

    let body = vec![b'x'; 1024 * 1024];
    let response = gateway.request(Method::POST, "/portfolio/orders").body(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echoed["body_bytes"], 1024 * 1024, "the upstream got the whole body; its limits apply");

    let unknown = gateway.get("/no/such/thing").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(unknown.headers()[header::CONTENT_TYPE], "application/problem+json");
    let traversal = gateway.get("/quotes/..%2F..%2Fetc%2Fpasswd").await;
    assert_ne!(traversal.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn metrics_cover_routes_cache_limits_and_upstreams() {
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |_| {}).await;
    gateway.get("/quotes/AAPL").await;
    gateway.get("/quotes/AAPL").await;

    let metrics = gateway.metrics().await;
    let expected: [(&str, &[&str]); 4] = [
        ("lizards_gateway_requests_total", &["route=\"/quotes\"", "status=\"200\""]),
        ("lizards_gateway_cache_requests_total", &["route=\"/quotes\"", "result=\"hit\""]),
        ("lizards_gateway_upstream_duration_seconds_count", &["route=\"/quotes\""]),
        ("lizards_gateway_ratelimit_check_seconds_count", &["service=\"gateway\""]),
    ];
    for (name, labels) in expected {
        assert!(metric(&metrics, name, labels) >= 1.0, "{name}{labels:?} missing from /metrics:\n{metrics}");
    }
}
