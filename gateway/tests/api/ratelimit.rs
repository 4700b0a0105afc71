//! Rate limits: one count shared by every gateway, the IETF response
//! fields, 429 with Retry-After, policies per caller and route, and fail
//! open while Redis is down.

use std::sync::Arc;

use futures::{StreamExt, stream};
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn two_gateways_sharing_redis_enforce_one_limit() {
    const LIMIT: usize = 200;
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let store = SharedStore::new();
    let quota = |config: &mut lizards_shared::config::Config| {
        config.gateway.rate_limit_anonymous = format!("{LIMIT}/1h").parse().unwrap();
    };
    let first = spawn_gateway(&registry, store.connect().await, quota).await;
    let second = spawn_gateway(&registry, store.connect().await, quota).await;

    let gateways = [&first, &second];
    let statuses: Vec<StatusCode> = stream::iter(0..LIMIT * 3)
        .map(|i| async move { gateways[i % 2].get("/alerts/burst").await.status() })
        .buffer_unordered(16)
        .collect()
        .await;

    let accepted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(accepted + limited, LIMIT * 3, "every request is either served or limited");
    let tolerance = LIMIT / 100;
    assert!(accepted.abs_diff(LIMIT) <= tolerance, "accepted {accepted}, policy {LIMIT} (±1 %)");
}

#[tokio::test]
async fn responses_carry_ratelimit_fields_and_the_excess_gets_429() {
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |config| {
        config.gateway.rate_limit_anonymous = "3/1m".parse().unwrap();
    })
    .await;

    let first = gateway.get("/alerts/x").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-policy"], "\"default\";q=3;w=60");
    assert_eq!(first.headers()["ratelimit"], "\"default\";r=2;t=20");
    gateway.get("/alerts/x").await;
    gateway.get("/alerts/x").await;

    let limited = gateway.get("/alerts/x").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after} s: one slot every 20 s");
    assert_eq!(limited.headers()[header::CONTENT_TYPE], "application/problem+json");
    assert!(limited.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert!(problem["detail"].as_str().unwrap().contains("3 requests per 60 s"), "{problem}");
    assert!(metric(&gateway.metrics().await, "lizards_gateway_rate_limited_total", &["policy=\"default\""]) >= 1.0);
}

#[tokio::test]
async fn each_user_has_a_quota_of_their_own_and_bad_tokens_are_401() {
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |config| {
        config.gateway.rate_limit_user = "2/1m".parse().unwrap();
    })
    .await;
    let as_user = |user: &str| gateway.request(Method::GET, "/alerts/mine").bearer_auth(token(user));

    for _ in 0..2 {
        assert_eq!(as_user("alice").send().await.unwrap().status(), StatusCode::OK);
    }
    let limited = as_user("alice").send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["ratelimit-policy"], "\"user\";q=2;w=60");
    assert_eq!(as_user("bob").send().await.unwrap().status(), StatusCode::OK, "bob counts apart from alice");

    let mut tampered = token("alice");
    tampered.pop();
    tampered.push('x');
    for bad in [tampered.as_str(), "not-a-jwt"] {
        let response = gateway.request(Method::GET, "/alerts/mine").bearer_auth(bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "token {bad}");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
    let expired = expired_token("alice");
    let response = gateway.request(Method::GET, "/alerts/mine").bearer_auth(&expired).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "expired token");
    assert_eq!(response.headers()["ratelimit-policy"], "\"default\";q=100000;w=60", "counted against the IP");
    let login = gateway.request(Method::POST, "/auth/login").bearer_auth(&expired).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK, "a stale token does not stop a new login");
}

#[tokio::test]
async fn auth_routes_and_websocket_connections_have_their_own_limits() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, SharedStore::new().connect().await, |config| {
        config.gateway.rate_limit_auth = "2/1m".parse().unwrap();
        config.gateway.rate_limit_ws = "2/1m".parse().unwrap();
    })
    .await;

    for _ in 0..2 {
        assert_eq!(gateway.request(Method::POST, "/auth/login").send().await.unwrap().status(), StatusCode::OK);
    }
    let limited = gateway.request(Method::POST, "/auth/login").send().await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["ratelimit-policy"], "\"auth\";q=2;w=60");
    assert_eq!(gateway.get("/alerts/x").await.status(), StatusCode::OK, "other routes are not affected");

    let ws_url = format!("{}/ws", gateway.url.replace("http://", "ws://"));
    let mut open = Vec::new();
    for _ in 0..2 {
        let (socket, response) = tokio_tungstenite::connect_async(&ws_url).await.expect("upgrade accepted");
        assert_eq!(response.headers()["ratelimit-policy"], "\"websocket\";q=2;w=60");
        open.push(socket);
    }
    let refused = tokio_tungstenite::connect_async(&ws_url).await.expect_err("third connection refused");
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
        other => panic!("expected a 429 answer, got {other}"),
    }
    assert!(upstream.requests() >= 3, "the refused upgrade never reached the upstream as a WebSocket");
}

#[tokio::test]
async fn redis_outage_fails_open_and_limits_return_with_redis() {
    let Some(redis) = redis_url() else { return };
    let relay = RedisRelay::start(&redis).await;
    let store: Arc<dyn lizards_shared::cache::Cache> = Arc::new(
        lizards_shared::cache::RedisCache::connect(&relay.url, &unique("gateway-outage")).await.expect("relay works"),
    );
    let registry = spawn_registry().await;
    let _upstream = spawn_upstream(&registry, None).await;
    let gateway = spawn_gateway(&registry, store, |config| {
        config.gateway.rate_limit_anonymous = "2/1h".parse().unwrap();
    })
    .await;
    gateway.get("/alerts/x").await;
    gateway.get("/alerts/x").await;
    assert_eq!(gateway.get("/alerts/x").await.status(), StatusCode::TOO_MANY_REQUESTS);

    relay.cut();
    for _ in 0..5 {
        let response = gateway.get("/alerts/x").await;
        assert_eq!(response.status(), StatusCode::OK, "served unlimited while Redis is down");
        assert!(!response.headers().contains_key("ratelimit"), "no count to report");
    }
    let cached = gateway.get("/quotes/AAPL").await;
    assert_eq!(cached.status(), StatusCode::OK, "the cache is bypassed, not an error");
    let metrics = gateway.metrics().await;
    assert!(metric(&metrics, "lizards_gateway_store_failures_total", &["use=\"ratelimit\""]) >= 5.0, "{metrics}");

    relay.restore();
    eventually("limits apply again once Redis is back", || async {
        gateway.get("/alerts/x").await.status() == StatusCode::TOO_MANY_REQUESTS
    })
    .await;
}
