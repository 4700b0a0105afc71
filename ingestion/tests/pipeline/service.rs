//! The whole ingestion service, spawned on port 0 with the synthetic source
//! and the embedded broker, talked to over real HTTP.

use std::time::Duration;

use lizards_shared::quote::{shard, shard_routing_key};
use reqwest::{StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{SYNTHETIC_RATE, TestIngestion, eventually, spawn_ingestion, within};

const PROBLEM_JSON: &str = "application/problem+json";

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn content_type(response: &reqwest::Response) -> &str {
    response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test]
async fn sources_lists_the_enabled_source_urls() {
    let app = spawn_ingestion().await;
    let response = app.get("/sources").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, json!({"sources": ["synthetic://gbm"]}));
}

#[tokio::test]
async fn lookup_of_a_known_symbol_names_the_sources_that_quote_it() {
    let app = spawn_ingestion().await;
    for path in ["/sources/lookup/AAPL", "/sources/lookup/aapl"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(json_of(response).await, json!({"symbol": "AAPL", "sources": ["synthetic"]}), "{path}");
    }
}

#[tokio::test]
async fn lookup_of_an_unknown_symbol_is_a_404_problem() {
    let app = spawn_ingestion().await;
    let response = app.get("/sources/lookup/XYZ").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(content_type(&response), PROBLEM_JSON);
    let problem = json_of(response).await;
    assert_eq!(
        (problem["status"].as_u64(), problem["detail"].as_str()),
        (Some(404), Some("Invalid stock symbol: XYZ"))
    );
}

#[tokio::test]
async fn lookup_of_an_invalid_symbol_is_a_400_problem() {
    let app = spawn_ingestion().await;
    let response = app.get("/sources/lookup/AA%20PL").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(content_type(&response), PROBLEM_JSON);
    assert_eq!(json_of(response).await["status"], 400);
}

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let app = spawn_ingestion().await;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn metrics_count_published_quotes_of_the_ingestion_service() {
    let app = spawn_ingestion().await;
    let app = &app;
    eventually("/metrics counts published synthetic quotes", || async move {
        let text = app.get("/metrics").await.text().await.expect("metrics text");
        text.lines().any(|line| {
            line.starts_with("lizards_quotes_published_total{")
                && line.contains(r#"service="ingestion""#)
                && line.contains(r#"source="synthetic""#)
        })
    })
    .await;
}

#[tokio::test]
async fn synthetic_quotes_arrive_at_about_the_configured_rate() {
    const SAMPLE: usize = 200;
    let app = spawn_ingestion().await;
    let mut observer = app.observe_quotes().await;
    TestIngestion::next_quotes(observer.as_mut()).await;

    let started = Instant::now();
    let mut seen = 0;
    while seen < SAMPLE {
        let (routing_key, quotes) = TestIngestion::next_quotes(observer.as_mut()).await;
        for quote in &quotes {
            assert_eq!(routing_key, shard_routing_key(shard(&quote.symbol)), "a message holds one shard");
            assert_eq!(quote.source, "synthetic");
            assert!(!quote.ingest_id.is_empty());
        }
        seen += quotes.len();
    }
    let rate = seen as f64 / started.elapsed().as_secs_f64();
    // Wide bounds: the machine may be busy; this catches a wrong unit or a stall.
    assert!((0.5 * SYNTHETIC_RATE..=1.5 * SYNTHETIC_RATE).contains(&rate), "{rate:.0} quotes/s");
}

#[tokio::test]
async fn cancelling_the_shutdown_token_stops_the_service() {
    let app = spawn_ingestion().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let (url, http) = (app.url("/healthz"), app.http.clone());
    app.stop().await;
    let after = within("a refused request", http.get(url).timeout(Duration::from_secs(2)).send()).await;
    assert!(after.is_err(), "the listener is closed");
}
