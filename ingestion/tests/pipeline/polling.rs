//! The web sources as the service runs them, against a fixture server:
//! demand decides what is polled, the circuit breaker walks its states,
//! lookups find fixture-only symbols, `/sources/status` tells it all.

use std::time::Duration;

use lizards_shared::{
    Symbol,
    broker::{Broker, CONTROL_EXCHANGE},
    config::Config,
    demand::DemandSet,
    quote::{shard, shard_routing_key},
};
use lizards_testkit::fixture::{Fixture, Reply};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestIngestion, eventually, spawn_with};

const YAHOO: &str = include_str!("../fixtures/yahoo_chart.json");

/// The Yahoo fixture for `symbol` with a fresh time and a moving price.
fn live_yahoo(symbol: &str) -> Reply {
    Reply::json(
        YAHOO
            .replace(r#""symbol":"AAPL""#, &format!(r#""symbol":"{symbol}""#))
            .replace(r#""regularMarketTime":1726257601"#, r#""regularMarketTime":{{now}}"#)
            .replace(r#""regularMarketPrice":222.5"#, r#""regularMarketPrice":{{price}}"#),
    )
}

/// Ingestion with only the Yahoo source, on `fixture`, polling fast.
async fn spawn_yahoo(fixture: &Fixture, tweak: impl FnOnce(&mut Config)) -> TestIngestion {
    let url = fixture.url();
    spawn_with(move |config| {
        let c = &mut config.ingestion;
        c.sources = vec!["yahoo".into()];
        c.yahoo_url = url;
        c.poll_interval_yahoo = Duration::from_millis(50);
        c.demand_grace = Duration::from_millis(300);
        c.source_rate_limits = Some("yahoo=1000/1s".parse().expect("valid limits"));
        tweak(config);
    })
    .await
}

async fn status(app: &TestIngestion, id: &str) -> Value {
    let body: Value = app.get("/sources/status").await.json().await.expect("JSON status");
    let sources = body["sources"].as_array().expect("a list of sources").clone();
    sources.into_iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("{id} in {body}"))
}

fn transitions(status: &Value) -> Vec<String> {
    let list = status["transitions"].as_array().expect("transitions");
    list.iter().map(|t| t["to"].as_str().expect("a state").to_string()).collect()
}

/// The value of the series of `name` with every label in `labels`.
async fn metric(app: &TestIngestion, name: &str, labels: &[&str]) -> Option<f64> {
    let text = app.get("/metrics").await.text().await.expect("metrics text");
    let line = text
        .lines()
        .find(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|label| l.contains(label)))?;
    line.rsplit(' ').next()?.parse().ok()
}

async fn publish_demand(app: &TestIngestion, instance: &str, symbols: &[&str]) {
    let symbols = symbols.iter().map(|s| Symbol::parse(s).expect("valid symbol")).collect();
    let set = DemandSet { instance: instance.into(), symbols };
    app.broker.publish(CONTROL_EXCHANGE, &set.routing_key(), set.encode()).await.expect("published");
}

#[tokio::test]
async fn breaker_opens_on_failures_half_opens_reopens_on_a_failed_trial_and_closes_on_success() {
    let fixture = Fixture::start().await;
    fixture.route("/v8/finance/chart/AAPL", live_yahoo("AAPL"));
    let app = spawn_yahoo(&fixture, |config| {
        let c = &mut config.ingestion;
        c.always_on_symbols = vec!["AAPL".into()];
        c.breaker_recovery_timeout = Duration::from_millis(300);
    })
    .await;
    eventually("AAPL is fetched", || async { status(&app, "yahoo").await["fetches"]["ok"].as_u64() >= Some(2) }).await;
    assert_eq!(status(&app, "yahoo").await["breaker"], "closed");

    fixture.fail_with(Reply::status(500, "{}"));
    eventually("the breaker opens, half-opens and opens again on a failed trial", || async {
        transitions(&status(&app, "yahoo").await).len() >= 3
    })
    .await;
    fixture.recover();
    eventually("three good trials close it", || async { status(&app, "yahoo").await["breaker"] == "closed" }).await;

    let yahoo = status(&app, "yahoo").await;
    assert_eq!(transitions(&yahoo), ["open", "half_open", "open", "half_open", "closed"]);
    assert!(yahoo["fetches"]["failed"].as_u64() >= Some(7), "5 to open, 2 failed trials: {yahoo}");
    assert!(yahoo["fetches"]["rejected"].as_u64() >= Some(1), "calls refused while open: {yahoo}");
    assert_eq!(yahoo["last_error"]["kind"], "http_status");
    let opened = metric(&app, "lizards_source_breaker_transitions_total", &[r#"source="yahoo""#, r#"to="open""#]);
    assert_eq!(opened.await, Some(2.0));
    assert_eq!(metric(&app, "lizards_source_breaker_state", &[r#"source="yahoo""#]).await, Some(0.0));
}

#[tokio::test]
async fn demanded_symbols_are_polled_and_published_until_the_grace_after_demand_ends() {
    let fixture = Fixture::start().await;
    fixture.route("/v8/finance/chart/ZZZZ", live_yahoo("ZZZZ"));
    let app = spawn_yahoo(&fixture, |_| {}).await;
    let mut observer = app.observe_quotes().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fixture.hits("/v8/finance/chart/ZZZZ"), 0, "nothing is polled without demand");

    publish_demand(&app, "provider-1", &["ZZZZ"]).await;
    let (key, quotes) = TestIngestion::next_quotes(observer.as_mut()).await;
    assert_eq!(key, shard_routing_key(shard(&quotes[0].symbol)));
    assert_eq!((quotes[0].symbol.as_str(), quotes[0].source.as_str()), ("ZZZZ", "yahoo"));
    assert_eq!(status(&app, "yahoo").await["symbols"], serde_json::json!(["ZZZZ"]));

    publish_demand(&app, "provider-1", &[]).await;
    eventually("polling stops after the grace period", || async {
        let before = fixture.hits("/v8/finance/chart/ZZZZ");
        tokio::time::sleep(Duration::from_millis(200)).await;
        fixture.hits("/v8/finance/chart/ZZZZ") == before
    })
    .await;
    assert_eq!(metric(&app, "lizards_demand_symbols", &[]).await, Some(0.0));
}

#[tokio::test]
async fn lookup_finds_a_fixture_only_symbol_publishes_it_at_once_and_keeps_polling_it() {
    let fixture = Fixture::start().await;
    fixture.route("/v8/finance/chart/ZZZZ", live_yahoo("ZZZZ"));
    fixture.route("/v8/finance/chart/NOPE", Reply::status(404, include_str!("../fixtures/yahoo_not_found.json")));
    let app = spawn_yahoo(&fixture, |config| config.ingestion.demand_grace = Duration::from_secs(60)).await;
    let mut observer = app.observe_quotes().await;

    let response = app.get("/sources/lookup/ZZZZ").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body, serde_json::json!({"symbol": "ZZZZ", "sources": ["yahoo"]}));
    let (_, first) = TestIngestion::next_quotes(observer.as_mut()).await;
    assert_eq!(first[0].symbol.as_str(), "ZZZZ");
    eventually("the symbol keeps being polled", || async { fixture.hits("/v8/finance/chart/ZZZZ") >= 3 }).await;

    let response = app.get("/sources/lookup/NOPE").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let problem: Value = response.json().await.expect("problem JSON");
    assert_eq!(problem["detail"], "Invalid stock symbol: NOPE");
}

#[tokio::test]
async fn lookup_while_every_source_fails_is_a_503_not_an_unknown_symbol() {
    let fixture = Fixture::start().await;
    fixture.fail_with(Reply::status(502, "{}"));
    let app = spawn_yahoo(&fixture, |_| {}).await;
    let response = app.get("/sources/lookup/ZZZZ").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = response.json().await.expect("problem JSON");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("yahoo"), "{problem}");
}

#[tokio::test]
async fn status_lists_every_kind_with_the_enabled_ones_state() {
    let fixture = Fixture::start().await;
    fixture.route("/v8/finance/chart/AAPL", live_yahoo("AAPL"));
    let app = spawn_yahoo(&fixture, |config| config.ingestion.always_on_symbols = vec!["AAPL".into()]).await;
    eventually("a fetch succeeded", || async { !status(&app, "yahoo").await["last_success"].is_null() }).await;
    let yahoo = status(&app, "yahoo").await;
    assert_eq!((yahoo["kind"].as_str(), yahoo["enabled"].as_bool()), (Some("yahoo"), Some(true)));
    assert_eq!((yahoo["breaker"].as_str(), yahoo["lease"].as_str()), (Some("closed"), Some("held")));
    assert_eq!(yahoo["symbols"], serde_json::json!(["AAPL"]));
    assert_eq!(yahoo["base_url"], fixture.url());
    for kind in ["synthetic", "coingecko", "alphavantage", "finnhub", "binance", "stooq", "html"] {
        assert_eq!(status(&app, kind).await["enabled"], false, "{kind}");
    }
    let sources: Value = app.get("/sources").await.json().await.expect("JSON");
    assert_eq!(sources, serde_json::json!({"sources": [fixture.url()]}));
}

#[tokio::test]
async fn an_invalid_price_from_a_source_is_kept_as_a_reject_and_not_published() {
    let fixture = Fixture::start().await;
    let bad = YAHOO.replace(r#""regularMarketPrice":222.5"#, r#""regularMarketPrice":-3"#);
    fixture.route("/v8/finance/chart/AAPL", Reply::json(bad));
    let app = spawn_yahoo(&fixture, |config| config.ingestion.always_on_symbols = vec!["AAPL".into()]).await;
    let mut observer = app.observe_quotes().await;
    eventually("the reject is counted", || async {
        let labels = [r#"reason="invalid_price""#, r#"source="yahoo""#];
        metric(&app, "lizards_quotes_rejected_total", &labels).await >= Some(1.0)
    })
    .await;
    assert!(app.published_before_fence(observer.as_mut()).await.is_empty(), "nothing invalid is published");
}
