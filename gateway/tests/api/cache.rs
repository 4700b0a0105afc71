//! The response cache: HIT with a growing Age, Cache-Control both ways,
//! entries per user for authenticated requests, and concurrent misses
//! coalesced into one upstream call.

use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use crate::helpers::*;

async fn cached_gateway(registry: &TestRegistry) -> TestGateway {
    spawn_gateway(registry, SharedStore::new().connect().await, |config| {
        config.gateway.cache_ttls = "/quotes/*=30s".parse().unwrap();
    })
    .await
}

fn x_cache(response: &reqwest::Response) -> &str {
    response.headers()["x-cache"].to_str().unwrap()
}

#[tokio::test]
async fn second_get_is_a_hit_with_a_growing_age() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = cached_gateway(&registry).await;

    let first = gateway.get("/quotes/AAPL").await;
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.headers()[header::CACHE_CONTROL], "public, max-age=30");
    let body: Value = first.json().await.unwrap();

    let second = gateway.get("/quotes/AAPL").await;
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(second.json::<Value>().await.unwrap(), body, "the stored body");
    assert_eq!(upstream.requests(), 1);

    eventually("Age grows", || async {
        let response = gateway.get("/quotes/AAPL").await;
        x_cache(&response) == "HIT" && response.headers()[header::AGE].to_str().unwrap().parse::<u64>().unwrap() >= 1
    })
    .await;
    assert_eq!(upstream.requests(), 1, "every later GET was a hit");
    let metrics = gateway.metrics().await;
    assert!(metric(&metrics, "lizards_gateway_cache_requests_total", &["result=\"hit\"", "route=\"/quotes\""]) >= 2.0);
    assert_eq!(
        metric(&metrics, "lizards_gateway_cache_requests_total", &["result=\"miss\"", "route=\"/quotes\""]),
        1.0
    );
}

#[tokio::test]
async fn request_cache_control_is_honoured() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = cached_gateway(&registry).await;
    let get = |directive: &'static str| {
        gateway.request(Method::GET, "/quotes/MSFT").header(header::CACHE_CONTROL, directive).send()
    };
    gateway.get("/quotes/MSFT").await;

    let bypass = get("no-store").await.unwrap();
    assert_eq!(x_cache(&bypass), "MISS");
    assert_eq!(upstream.requests(), 2, "no-store goes to the upstream");

    let refreshed = get("no-cache").await.unwrap();
    assert_eq!(x_cache(&refreshed), "MISS");
    let refreshed_n = refreshed.json::<Value>().await.unwrap()["n"].clone();
    assert_eq!(upstream.requests(), 3, "no-cache fetches again");
    let hit = gateway.get("/quotes/MSFT").await;
    assert_eq!(hit.json::<Value>().await.unwrap()["n"], refreshed_n, "and stores the fresh answer");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let too_old = get("max-age=0").await.unwrap();
    assert_eq!(x_cache(&too_old), "MISS", "max-age=0 accepts no stored copy");
    assert_eq!(x_cache(&get("max-age=60").await.unwrap()), "HIT");
}

#[tokio::test]
async fn response_cache_control_keeps_answers_out() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = cached_gateway(&registry).await;

    for path in ["/quotes/NOSTORE", "/quotes/PRIVATE"] {
        gateway.get(path).await;
        let again = gateway.get(path).await;
        assert_eq!(x_cache(&again), "MISS", "{path} is not stored for everyone");
    }
    let missing = gateway.get("/quotes/XYZ/missing").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(x_cache(&gateway.get("/quotes/XYZ/missing").await), "MISS", "only 200s are stored");
    assert_eq!(upstream.requests(), 6, "non-cacheable answers reach the upstream each time");
}

#[tokio::test]
async fn authenticated_responses_are_never_shared_across_users() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = cached_gateway(&registry).await;
    let as_user = |user: &str| gateway.request(Method::GET, "/quotes/PRIVATE").bearer_auth(token(user)).send();

    assert_eq!(x_cache(&as_user("alice").await.unwrap()), "MISS");
    assert_eq!(x_cache(&as_user("bob").await.unwrap()), "MISS", "bob never gets alice's copy");
    let alice_again = as_user("alice").await.unwrap();
    assert_eq!(x_cache(&alice_again), "HIT", "a private answer is kept for its own user");
    assert_eq!(x_cache(&gateway.get("/quotes/PRIVATE").await), "MISS", "nor does an anonymous client");
    assert_eq!(upstream.requests(), 3);
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let registry = spawn_registry().await;
    let upstream = spawn_upstream(&registry, None).await;
    let gateway = cached_gateway(&registry).await;
    gateway.wait_for_upstreams(1).await;
    let before = upstream.requests();
    upstream.set_delay(Duration::from_millis(500));

    let responses = join_all((0..100).map(|_| gateway.get("/quotes/TSLA"))).await;

    assert_eq!(upstream.requests() - before, 1, "100 concurrent misses, one upstream call");
    let mut bodies = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]), "everyone got the one answer");
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(&metrics, "lizards_gateway_cache_requests_total", &["result=\"coalesced\"", "route=\"/quotes\""]),
        99.0
    );
}
