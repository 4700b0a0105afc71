//! Faults survived with the real RabbitMQ and PostgreSQL (docs/testing.md):
//! nothing confirmed is lost, nothing is stored twice, live prices
//! come back, readiness follows the dependencies.

mod helpers;

use std::time::Duration;

use helpers::*;
use lizards_shared::broker::{Broker, DEAD_QUEUE};
use tokio::time::Instant;

/// Quotes published through each restart.
const QUOTES: u32 = 10_000;

/// Publishes `QUOTES` quotes in the background, about 2,000 a second.
fn publish_all(publisher: &Publisher, symbol: &lizards_shared::Symbol) -> tokio::task::JoinHandle<()> {
    let (publisher, symbol, base) = (publisher.clone(), symbol.clone(), now());
    tokio::spawn(async move {
        for i in 1..=QUOTES {
            publisher.publish(&quote(&symbol, base, i)).await;
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}

/// A provider with a client watching a fresh, seeded symbol.
async fn watched(env: &Env) -> (Provider, Publisher, lizards_shared::Symbol, Seen) {
    let provider = Provider::start(env).await;
    let publisher = Publisher::connect(env).await;
    let symbol = symbol();
    let store = store(env).await;
    publisher.publish(&quote(&symbol, now(), 0)).await;
    wait_for("the seed quote is stored", Duration::from_secs(20), || async { count(&store, &symbol).await == 1 }).await;
    let seen = watch(provider.ws().await, &symbol).await;
    (provider, publisher, symbol, seen)
}

#[tokio::test]
async fn confirmed_quotes_survive_a_rabbitmq_restart_exactly_once_and_live_updates_resume() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let (provider, publisher, symbol, seen) = watched(&env).await;
    let store = store(&env).await;
    let publishing = publish_all(&publisher, &symbol);
    wait_for("some quotes are confirmed", Duration::from_secs(30), || async { publisher.confirmed() > 2_000 }).await;

    let outage = RabbitOutage::begin();
    wait_for("readiness reports the broker down", Duration::from_secs(15), || async {
        provider.status("/readyz").await == 503
    })
    .await;
    outage.restore();
    let recovered = Instant::now();
    wait_for("readiness recovers", Duration::from_secs(30), || async { provider.status("/readyz").await == 200 }).await;

    publishing.await.expect("publisher finished");
    wait_for("every confirmed quote is stored", Duration::from_secs(90), || async {
        count(&store, &symbol).await > u64::from(QUOTES)
    })
    .await;
    assert_eq!(count(&store, &symbol).await, u64::from(QUOTES) + 1, "each quote exactly once");
    wait_for("live updates resume after the restart", Duration::from_secs(30), || async {
        updated_after(&seen, recovered)
    })
    .await;
}

#[tokio::test]
async fn confirmed_quotes_survive_a_postgres_restart_and_live_prices_keep_flowing() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let (provider, publisher, symbol, seen) = watched(&env).await;
    let publishing = publish_all(&publisher, &symbol);
    wait_for("some quotes are confirmed", Duration::from_secs(30), || async { publisher.confirmed() > 2_000 }).await;

    let outage = PostgresOutage::begin();
    let down = Instant::now();
    wait_for("readiness reports the database down", Duration::from_secs(15), || async {
        provider.status("/readyz").await == 503
    })
    .await;
    // The live stream does not depend on the database.
    wait_for("live updates while PostgreSQL is down", Duration::from_secs(10), || async {
        updated_after(&seen, down + Duration::from_millis(500))
    })
    .await;
    outage.restore();
    wait_for("readiness recovers", Duration::from_secs(30), || async { provider.status("/readyz").await == 200 }).await;

    publishing.await.expect("publisher finished");
    let store = store(&env).await;
    wait_for("every confirmed quote is stored", Duration::from_secs(90), || async {
        count(&store, &symbol).await > u64::from(QUOTES)
    })
    .await;
    assert_eq!(count(&store, &symbol).await, u64::from(QUOTES) + 1, "each quote exactly once");
}

#[tokio::test]
async fn a_provider_killed_mid_batch_loses_nothing() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    // The victim holds a large batch open: whatever it took is unacked when it dies.
    let mut victim = ServiceProcess::provider(&env, &[("PERSIST_BATCH", "5000"), ("PERSIST_LINGER", "60s")]).await;
    let survivor = Provider::start(&env).await;
    let (publisher, symbol, store, base) = (Publisher::connect(&env).await, symbol(), store(&env).await, now());
    const TOTAL: u32 = 3_000;
    for i in 0..TOTAL {
        publisher.publish(&quote(&symbol, base, i)).await;
    }
    // The survivor persists its share; the victim's share waits in its batch.
    wait_for("the survivor stored its share", Duration::from_secs(30), || async { count(&store, &symbol).await > 0 })
        .await;
    let stored_before = count(&store, &symbol).await;
    assert!(stored_before < u64::from(TOTAL), "the victim held part of the stream ({stored_before} stored)");

    victim.kill();
    wait_for("the victim's share is redelivered and stored", Duration::from_secs(60), || async {
        count(&store, &symbol).await >= u64::from(TOTAL)
    })
    .await;
    assert_eq!(count(&store, &symbol).await, u64::from(TOTAL), "each quote exactly once");
    drop(survivor);
}

#[tokio::test]
async fn a_malformed_message_is_dead_lettered_counted_and_the_worker_goes_on() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let provider = Provider::start(&env).await;
    let publisher = Publisher::connect(&env).await;
    let dead_before = publisher.broker().queue_len(DEAD_QUEUE).await.expect("dead queue");
    publisher.publish_raw("quote.POISON", b"{\"v\":1,\"not\":\"a quote\"}").await;
    wait_for("the poison message is dead-lettered", Duration::from_secs(20), || async {
        provider.metric("lizards_messages_dead_lettered_total").await >= 1.0
    })
    .await;
    let dead_after = publisher.broker().queue_len(DEAD_QUEUE).await.expect("dead queue");
    assert!(dead_after > dead_before, "the message waits in '{DEAD_QUEUE}' ({dead_before} → {dead_after})");
    let (symbol, store) = (symbol(), store(&env).await);
    publisher.publish(&quote(&symbol, now(), 1)).await;
    wait_for("the next quote is stored", Duration::from_secs(20), || async { count(&store, &symbol).await == 1 }).await;
}

#[tokio::test]
async fn two_providers_behind_one_exchange_each_deliver_every_update_once() {
    let Some(env) = env() else { return };
    let _serial = SERIAL.lock().await;
    let (first, publisher, symbol, seen_first) = watched(&env).await;
    let second = Provider::start(&env).await;
    let seen_second = watch(second.ws().await, &symbol).await;
    // Both live queues must be bound before the counted quotes go out.
    wait_for("both instances bound the symbol", Duration::from_secs(20), || async {
        first.metric("lizards_live_bindings").await == 1.0 && second.metric("lizards_live_bindings").await == 1.0
    })
    .await;
    const UPDATES: u32 = 100;
    let base = now();
    let expected: Vec<i64> = (1..=UPDATES).map(|i| quote(&symbol, base, i).ts.timestamp_micros()).collect();
    for i in 1..=UPDATES {
        publisher.publish(&quote(&symbol, base, i)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for seen in [&seen_first, &seen_second] {
        wait_for("every update arrives", Duration::from_secs(20), || async {
            seen.lock().unwrap().iter().filter(|(ts, _)| expected.contains(ts)).count() >= expected.len()
        })
        .await;
        let received: Vec<i64> =
            seen.lock().unwrap().iter().map(|(ts, _)| *ts).filter(|ts| expected.contains(ts)).collect();
        assert_eq!(received, expected, "every update once, in order");
    }
}

/// The `yahoo` source's status on one ingestion process.
async fn yahoo_status(process: &ServiceProcess) -> serde_json::Value {
    let response = lizards_shared::http::client().get(process.url("/sources/status")).send().await;
    let body: serde_json::Value = response.expect("status answers").json().await.expect("JSON status");
    body["sources"].as_array().and_then(|s| s.iter().find(|s| s["id"] == "yahoo")).cloned().expect("yahoo listed")
}

fn fetched(status: &serde_json::Value) -> u64 {
    status["fetches"]["ok"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn two_ingestion_instances_poll_a_source_once_and_the_survivor_takes_over_within_the_lease() {
    let Some(env) = env() else { return };
    let Some(redis) = lizards_testkit::real_url("REDIS_URL") else { return };
    let _serial = SERIAL.lock().await;
    let fixture = lizards_testkit::fixture::Fixture::start().await;
    let yahoo = include_str!("../../ingestion/tests/fixtures/yahoo_chart.json")
        .replace(r#""regularMarketTime":1726257601"#, r#""regularMarketTime":{{now}}"#);
    fixture.route("/v8/finance/chart/", lizards_testkit::fixture::Reply::json(yahoo));
    let url = fixture.url();
    let settings = [
        ("REDIS_URL", redis.as_str()),
        ("SOURCES", "yahoo"),
        ("YAHOO_URL", url.as_str()),
        ("ALWAYS_ON_SYMBOLS", "AAPL"),
        ("POLL_INTERVAL_YAHOO", "100ms"),
        ("SOURCE_RATE_LIMITS", "yahoo=1000/1s"),
        ("SOURCE_LEASE_TTL", "2s"),
    ];
    let first = ServiceProcess::ingestion(&env, &settings).await;
    let second = ServiceProcess::ingestion(&env, &settings).await;
    wait_for("the source is polled", Duration::from_secs(10), || async {
        fetched(&yahoo_status(&first).await) + fetched(&yahoo_status(&second).await) >= 5
    })
    .await;
    let first_holds = yahoo_status(&first).await["lease"] == "held";
    let (mut holder, standby) = if first_holds { (first, second) } else { (second, first) };
    let idle = yahoo_status(&standby).await;
    assert_eq!((idle["lease"].as_str(), fetched(&idle)), (Some("standby"), 0), "only the lease holder polls");
    assert_eq!(yahoo_status(&holder).await["lease"], "held");

    holder.kill();
    let killed = Instant::now();
    wait_for("the survivor takes the lease and polls", Duration::from_secs(10), || async {
        fetched(&yahoo_status(&standby).await) > 0
    })
    .await;
    let took = killed.elapsed();
    // Lapse (2 s) + renewal check (a third of it) + a poll, with slack.
    assert!(took < Duration::from_secs(4), "took over after {took:?}");
    assert_eq!(yahoo_status(&standby).await["lease"], "held");
}
