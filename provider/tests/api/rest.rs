//! REST over quotes: shapes and problem+json errors.

use serde_json::Value;

use crate::helpers::{TestProvider, spawn};

async fn get(provider: &TestProvider, path: &str) -> (u16, String, Value) {
    let response = provider.http.get(provider.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, content_type, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn latest_quote_and_symbols_list() {
    let provider = spawn().await;
    let quote = provider.seed("BRK.B", 452.5).await;
    let (status, _, body) = get(&provider, "/quotes/brk.b").await;
    assert_eq!(status, 200);
    assert_eq!(body["symbol"], "BRK.B");
    assert_eq!(body["price"], 452.5);
    assert_eq!(body["timestamp"], lizards_shared::time::rfc3339(&quote.ts));
    let (_, _, body) = get(&provider, "/symbols").await;
    assert_eq!(body["symbols"][0]["symbol"], "BRK.B");
}

#[tokio::test]
async fn errors_are_problem_json() {
    let provider = spawn().await;
    let (status, content_type, body) = get(&provider, "/quotes/NONE").await;
    assert_eq!((status, content_type.as_str()), (404, "application/problem+json"));
    assert_eq!(body["status"], 404);
    let (status, content_type, body) = get(&provider, "/quotes/AA%20PL").await;
    assert_eq!((status, content_type.as_str()), (400, "application/problem+json"));
    assert_eq!(body["detail"], "Invalid stock symbol: AA PL");
    for path in [
        "/quotes/AAPL/history?limit=0",
        "/quotes/AAPL/history?limit=10001",
        "/quotes/AAPL/history?limit=abc",
        "/quotes/AAPL/history?from=yesterday",
        "/quotes/AAPL/history?from=2024-02-01T00:00:00Z&to=2024-01-01T00:00:00Z",
        "/quotes/AAPL/mean?last=0",
        "/quotes/AAPL/mean?last=10001",
    ] {
        let (status, content_type, _) = get(&provider, path).await;
        assert_eq!((status, content_type.as_str()), (400, "application/problem+json"), "{path}");
    }
}

#[tokio::test]
async fn history_is_newest_first_and_mean_reports_the_count_used() {
    let provider = spawn().await;
    for price in [10.0, 20.0, 30.0] {
        provider.seed("IBM", price).await;
    }
    let (_, _, body) = get(&provider, "/quotes/IBM/history?limit=2").await;
    let prices: Vec<f64> = body["quotes"].as_array().unwrap().iter().map(|q| q["price"].as_f64().unwrap()).collect();
    assert_eq!(prices, vec![30.0, 20.0]);
    let (_, _, body) = get(&provider, "/quotes/IBM/mean?last=2").await;
    assert_eq!((body["mean"].as_f64(), body["count"].as_u64()), (Some(25.0), Some(2)));
    let (_, _, body) = get(&provider, "/quotes/IBM/mean?last=10").await;
    assert_eq!((body["mean"].as_f64(), body["count"].as_u64()), (Some(20.0), Some(3)));
    let (status, _, _) = get(&provider, "/quotes/NOPE/mean").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let provider = spawn().await;
    assert_eq!(get(&provider, "/healthz").await.0, 200);
    let response = provider.http.get(provider.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let metrics = provider.http.get(provider.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("lizards_ws_connections{service=\"provider\"}"), "{metrics}");
}
