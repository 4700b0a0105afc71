//! Live streaming: snapshot then updates, unsubscribe, conflation and
//! slow-client close, idle timeout, sessions, graceful shutdown.

use std::time::Duration;

use futures::SinkExt;
use lizards_shared::{
    broker::{Broker, CONTROL_EXCHANGE, ConsumeOptions, QUOTES_EXCHANGE, QueueSpec},
    demand::{DEMAND_PATTERN, DemandSet},
    quote::{encode_batch, shard_routing_key},
};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, WAIT, is_update_for, quote, spawn, spawn_with, wait_for};

#[tokio::test]
async fn subscribe_acknowledges_then_snapshots_then_streams_in_the_seed_format() {
    let provider = spawn().await;
    let seeded = provider.seed("TSLA", 742.56).await;
    let mut client = provider.ws_path("/").await; // the seed's URL had no path
    client.send(json!({"type": "subscribe", "symbols": ["tsla"], "id": 1})).await;
    assert_eq!(client.recv().await, json!({"type": "subscribed", "symbols": ["TSLA"], "id": 1}));
    let snapshot = client.recv().await;
    assert_eq!(snapshot["type"], "price_update");
    let timestamp = lizards_shared::time::rfc3339(&seeded.ts);
    assert_eq!(snapshot["data"]["TSLA"]["price"], 742.56);
    assert_eq!(snapshot["data"]["TSLA"]["timestamp"], timestamp);
    assert!(timestamp.ends_with('Z'));
    provider.wait_bound(1).await;
    for price in [743.0, 744.5] {
        provider.publish(&quote("TSLA", price)).await;
        let update = client.recv().await;
        assert_eq!(update["data"]["TSLA"]["price"], price);
    }
}

#[tokio::test]
async fn unsubscribing_stops_updates_for_that_symbol_only() {
    let provider = spawn().await;
    provider.seed("AAPL", 1.0).await;
    provider.seed("MSFT", 1.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["AAPL", "MSFT"]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    provider.wait_bound(2).await;
    client.send(json!({"type": "unsubscribe", "symbols": ["AAPL"]})).await;
    client.recv_until(|f| f["type"] == "unsubscribed").await;
    for i in 0..20 {
        provider.publish(&quote("AAPL", 2.0 + i as f64)).await;
    }
    // MSFT still flows and, published after AAPL, arrives after any AAPL would.
    provider.publish(&quote("MSFT", 99.0)).await;
    let frame = client.recv_until(|f| is_update_for(f, "MSFT") && f["data"]["MSFT"]["price"] == 99.0).await;
    assert!(frame["data"].get("AAPL").is_none(), "{frame}");
}

#[tokio::test]
async fn a_client_that_never_reads_is_conflated_and_closed_after_the_slow_timeout() {
    let provider = spawn_with(|c| c.provider.ws_slow_close = Duration::from_secs(1)).await;
    let symbols: Vec<String> = (0..20).map(|i| format!("S{i}")).collect();
    for s in &symbols {
        provider.seed(s, 100.0).await;
    }
    // A tiny receive window so the server's socket fills quickly.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(provider.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", provider.addr), stream).await.unwrap();
    let subscribe = json!({"type": "subscribe", "symbols": symbols}).to_string();
    ws.send(Message::Text(subscribe.into())).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while provider.metric("lizards_ws_slow_closes_total").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "slow client never closed");
        for _ in 0..50 {
            round += 1;
            for s in &symbols {
                provider.publish(&quote(s, 100.0 + round as f64)).await;
            }
        }
        tokio::task::yield_now().await;
    }
    assert!(provider.metric("lizards_ws_updates_conflated_total").await > 0.0, "updates were conflated");
    // The server is fine for everyone else.
    let mut other = provider.ws().await;
    other.assert_usable().await;
    wait_for(|| async { provider.metric("lizards_ws_connections").await == 1.0 }).await;
    drop(ws);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let provider = spawn_with(|c| c.provider.ws_idle_timeout = Duration::from_millis(300)).await;
    let mut client = provider.ws().await;
    let close = client.expect_close(WAIT * 4).await;
    assert_eq!(u16::from(close.code), 1000);
    assert_eq!(close.reason.as_str(), "idle timeout");
}

/// Publishes a quote for `symbol` every 20 ms until the token is cancelled.
fn stream(
    provider: &std::sync::Arc<crate::helpers::TestProvider>,
    symbol: &'static str,
) -> lizards_shared::shutdown::Shutdown {
    let stop = lizards_shared::shutdown::Shutdown::new();
    let (provider, token) = (provider.clone(), stop.clone());
    tokio::spawn(async move {
        let mut price = 100.0;
        while !token.is_cancelled() {
            price += 0.01;
            provider.publish(&quote(symbol, price)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    stop
}

#[tokio::test]
async fn a_client_that_only_listens_to_a_busy_stream_is_pinged_and_stays_open() {
    let provider = std::sync::Arc::new(
        spawn_with(|c| {
            c.provider.ws_ping_interval = Duration::from_millis(100);
            c.provider.ws_idle_timeout = Duration::from_millis(500);
        })
        .await,
    );
    provider.seed("AAPL", 100.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["AAPL"]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    let stop = stream(&provider, "AAPL");
    // Three idle timeouts long, the client sends nothing but automatic pongs.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut updates = 0;
    while tokio::time::Instant::now() < until {
        updates += is_update_for(&client.recv().await, "AAPL") as u32;
    }
    stop.cancel();
    assert!(updates > 20, "the stream kept flowing ({updates} updates)");
}

#[tokio::test]
async fn shutdown_closes_a_busy_connection_with_1001() {
    let provider = std::sync::Arc::new(spawn().await);
    provider.seed("AAPL", 100.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["AAPL"]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    let stop = stream(&provider, "AAPL");
    client.recv_until(|f| is_update_for(f, "AAPL")).await;
    provider.shutdown();
    assert_eq!(u16::from(client.expect_close(WAIT * 4).await.code), 1001);
    stop.cancel();
}

#[tokio::test]
async fn shutdown_closes_connections_with_1001() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    client.assert_usable().await;
    provider.shutdown();
    let close = client.expect_close(WAIT * 4).await;
    assert_eq!(u16::from(close.code), 1001);
    provider.stop().await;
}

async fn session(provider: &crate::helpers::TestProvider) -> serde_json::Value {
    let response = provider
        .http
        .post(provider.url("/session"))
        .header("x-forwarded-host", "prices.example")
        .json(&json!({"websocket_url": "ignored"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn post_session_returns_a_websocket_url_on_the_public_host() {
    let provider = spawn().await;
    let body = session(&provider).await;
    let id = body["session_id"].as_str().unwrap();
    assert_eq!(body["websocket_url"], format!("ws://prices.example/ws?session={id}"));
    assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
    // No body at all is fine too.
    let response = provider.http.post(provider.url("/session")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_session_resumes_its_subscriptions_on_reconnect() {
    let provider = spawn().await;
    provider.seed("AAPL", 5.0).await;
    let id = session(&provider).await["session_id"].as_str().unwrap().to_string();
    let mut first = provider.ws_path(&format!("/ws?session={id}")).await;
    first.send(json!({"type": "subscribe", "symbols": ["AAPL"]})).await;
    first.recv_until(|f| f["type"] == "subscribed").await;
    drop(first);
    wait_for(|| async { provider.metric("lizards_ws_connections").await == 0.0 }).await;

    let mut again: Client = provider.ws_path(&format!("/ws?session={id}")).await;
    assert_eq!(again.recv().await, json!({"type": "subscribed", "symbols": ["AAPL"]}));
    assert_eq!(again.recv().await["data"]["AAPL"]["price"], 5.0);
}

#[tokio::test]
async fn an_unknown_session_gets_an_error_frame_and_a_fresh_start() {
    let provider = spawn().await;
    let mut client = provider.ws_path("/ws?session=00000000-0000-0000-0000-000000000000").await;
    client.expect_error("Unknown or expired session").await;
    client.assert_usable().await;
}

/// The next demand set on `consumer`, decoded.
async fn next_demand(consumer: &mut Box<dyn lizards_shared::broker::Consumer>) -> DemandSet {
    let delivery = lizards_testkit::within("a demand set", consumer.next()).await.expect("the queue is there");
    assert!(delivery.routing_key.starts_with("demand.provider-"), "{}", delivery.routing_key);
    DemandSet::decode(&delivery.body).expect("a valid demand set")
}

#[tokio::test]
async fn the_watched_symbols_are_published_as_this_instances_demand_set() {
    let provider = spawn().await;
    let queue = QueueSpec { name: "test.demand".into(), ..QueueSpec::default() };
    provider.broker.declare_queue(&queue).await.unwrap();
    provider.broker.bind("test.demand", CONTROL_EXCHANGE, DEMAND_PATTERN).await.unwrap();
    let mut demand =
        provider.broker.consume("test.demand", ConsumeOptions { prefetch: 0, no_ack: true }).await.unwrap();
    provider.seed("AAPL", 1.0).await;
    provider.seed("MSFT", 1.0).await;

    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["MSFT", "AAPL"]})).await;
    let mut set = next_demand(&mut demand).await;
    while set.symbols.len() < 2 {
        set = next_demand(&mut demand).await;
    }
    let names: Vec<&str> = set.symbols.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["AAPL", "MSFT"], "the full, sorted set");
    let instance = set.instance.clone();

    client.send(json!({"type": "unsubscribe", "symbols": ["AAPL"]})).await;
    let mut set = next_demand(&mut demand).await;
    while set.symbols.len() != 1 {
        set = next_demand(&mut demand).await;
    }
    assert_eq!((set.instance.as_str(), set.symbols[0].as_str()), (instance.as_str(), "MSFT"));
}

#[tokio::test]
async fn a_shard_batch_reaches_the_watchers_of_its_symbols_only() {
    let provider = spawn().await;
    provider.seed("NVDA", 119.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["NVDA"]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    provider.wait_bound(1).await;
    // A symbol of the same shard that nobody watches rides along.
    let nvda = quote("NVDA", 120.0);
    let shard = lizards_shared::quote::shard(&nvda.symbol);
    let neighbour =
        (0..).map(|i| quote(&format!("N{i}"), 1.0)).find(|q| lizards_shared::quote::shard(&q.symbol) == shard).unwrap();
    let body = encode_batch(&[neighbour, nvda.clone(), quote("NVDA", 121.0)]);
    provider.broker.publish(QUOTES_EXCHANGE, &shard_routing_key(shard), body).await.unwrap();
    let frame = client.recv_until(|f| is_update_for(f, "NVDA") && f["data"]["NVDA"]["price"] != 119.0).await;
    // The newest of the batch, and nothing of the neighbour.
    assert_eq!(frame["data"]["NVDA"]["price"], 121.0, "{frame}");
    assert_eq!(frame["data"].as_object().unwrap().len(), 1, "{frame}");
}
