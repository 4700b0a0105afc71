//! REST over quotes: shapes and problem+json errors.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use lizards_shared::{Quote, store::QuoteStore, time::rfc3339};
use serde_json::{Value, json};

use crate::helpers::{TestProvider, quote, spawn, wait_for};

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
        "/quotes/AAPL/candles?interval=2m",
        "/quotes/AAPL/candles?interval=",
        "/quotes/AAPL/candles?interval=1M",
        "/quotes/AAPL/candles?limit=0",
        "/quotes/AAPL/candles?limit=5001",
        "/quotes/AAPL/candles?to=soon",
        "/quotes/AAPL/candles?interval=1h&from=2024-02-01T00:00:00Z&to=2024-01-01T00:00:00Z",
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

/// Publishes quotes (price, seconds after `start`) and waits until all are
/// stored.
async fn publish_at(provider: &TestProvider, symbol: &str, start: DateTime<Utc>, quotes: &[(f64, i64)]) {
    for &(price, seconds) in quotes {
        let quote = Quote { ts: start + TimeDelta::seconds(seconds), ..quote(symbol, price) };
        provider.publish(&quote).await;
    }
    let symbol = lizards_shared::Symbol::parse(symbol).expect("valid symbol");
    wait_for(|| async { provider.store.count(&symbol).await.ok() == Some(quotes.len() as u64) }).await;
}

#[tokio::test]
async fn candles_are_ohlc_per_interval_oldest_first() {
    let provider = spawn().await;
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).expect("a whole hour") - TimeDelta::hours(2);
    let minute = |m: i64| rfc3339(&(hour + TimeDelta::minutes(m)));
    // Minutes 0, 1 and 3 of the hour, published out of time order.
    publish_at(&provider, "CNDL", hour, &[(5.0, 10), (3.0, 90), (4.0, 0), (9.0, 185), (6.0, 59), (8.0, 61), (7.0, 30)])
        .await;

    let (status, _, body) = get(&provider, "/quotes/cndl/candles?interval=1m").await;
    assert_eq!(status, 200);
    let expected = json!({"symbol": "CNDL", "interval": "1m", "candles": [
        {"start": minute(0), "open": 4.0, "high": 7.0, "low": 4.0, "close": 6.0, "volume": 40.0, "count": 4},
        {"start": minute(1), "open": 8.0, "high": 8.0, "low": 3.0, "close": 3.0, "volume": 20.0, "count": 2},
        {"start": minute(3), "open": 9.0, "high": 9.0, "low": 9.0, "close": 9.0, "volume": 10.0, "count": 1},
    ]});
    assert_eq!(body, expected);

    let (_, _, body) = get(&provider, "/quotes/CNDL/candles?interval=1h").await;
    let whole_hour = json!([
        {"start": minute(0), "open": 4.0, "high": 9.0, "low": 3.0, "close": 9.0, "volume": 70.0, "count": 7},
    ]);
    assert_eq!(body["candles"], whole_hour);
    let (_, _, body) = get(&provider, "/quotes/CNDL/candles").await;
    assert_eq!(body["interval"], "1m", "one minute unless asked");
}

#[tokio::test]
async fn candles_honour_limit_and_range() {
    let provider = spawn().await;
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).expect("a whole hour") - TimeDelta::hours(2);
    let at = |seconds: i64| rfc3339(&(hour + TimeDelta::seconds(seconds)));
    publish_at(&provider, "RNGE", hour, &[(1.0, 0), (2.0, 30), (3.0, 60), (4.0, 120), (5.0, 150)]).await;
    let starts = |body: &Value| -> Vec<String> {
        body["candles"]
            .as_array()
            .expect("candles")
            .iter()
            .map(|c| c["start"].as_str().expect("start").to_string())
            .collect()
    };

    let (_, _, body) = get(&provider, "/quotes/RNGE/candles?interval=1m&limit=2").await;
    assert_eq!(starts(&body), [at(60), at(120)], "the newest two minutes, oldest first");

    let path = format!("/quotes/RNGE/candles?interval=1m&from={}&to={}", at(30), at(60));
    let (status, _, body) = get(&provider, &path).await;
    assert_eq!(status, 200);
    let expected = json!([
        {"start": at(0), "open": 2.0, "high": 2.0, "low": 2.0, "close": 2.0, "volume": 10.0, "count": 1},
        {"start": at(60), "open": 3.0, "high": 3.0, "low": 3.0, "close": 3.0, "volume": 10.0, "count": 1},
    ]);
    assert_eq!(body["candles"], expected, "bounds are inclusive and cut the first minute");

    let (status, _, body) = get(&provider, "/quotes/NOPE/candles?interval=5m").await;
    assert_eq!((status, body["candles"].clone()), (200, json!([])), "no quotes, no candles");
}
