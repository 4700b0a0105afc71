//! Every malformed, oversized, unauthorised or duplicate input gets its own
//! error frame, and the connection stays usable.

use serde_json::json;

use crate::helpers::{WAIT, is_update_for, spawn, spawn_with};

#[tokio::test]
async fn invalid_json_gets_an_error_frame_and_the_connection_stays_usable() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    client.send_text("{not json").await;
    client.expect_error("Invalid JSON").await;
    client.assert_usable().await;
}

#[tokio::test]
async fn unknown_type_and_missing_or_ill_typed_symbols_get_error_frames() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "dance"})).await;
    client.expect_error("Unknown message type: dance").await;
    client.send(json!({"type": "subscribe"})).await;
    client.expect_error("Missing 'symbols' field").await;
    client.send(json!({"type": "subscribe", "symbols": "AAPL"})).await;
    client.expect_error("'symbols' must be an array of strings").await;
    client.send(json!({"symbols": ["AAPL"]})).await;
    client.expect_error("Invalid message").await;
    client.assert_usable().await;
}

#[tokio::test]
async fn bad_symbols_get_one_error_each_and_good_ones_are_still_subscribed() {
    let provider = spawn().await;
    provider.seed("AAPL", 150.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["AAPL", "BAD SYMBOL", "XYZ"], "id": 3})).await;
    client.expect_error("Invalid stock symbol: BAD SYMBOL").await;
    let ack = client.recv_until(|f| f["type"] == "subscribed").await;
    assert_eq!(ack, json!({"type": "subscribed", "symbols": ["AAPL"], "id": 3}));
    // The AAPL snapshot and the failed lookup of XYZ (syntactically fine but
    // unknown to every source) race each other: accept either order.
    let (mut snapshot, mut unknown) = (None, false);
    while snapshot.is_none() || !unknown {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("price_update") => snapshot = Some(frame),
            Some("error") => {
                assert_eq!(frame["message"], "Invalid stock symbol: XYZ");
                unknown = true;
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(snapshot.unwrap()["data"]["AAPL"]["price"], 150.0);
    provider.wait_bound(1).await;
    provider.publish(&crate::helpers::quote("AAPL", 151.0)).await;
    let update = client.recv_until(|f| is_update_for(f, "AAPL")).await;
    assert_eq!(update["data"]["AAPL"]["price"], 151.0);
}

#[tokio::test]
async fn too_many_symbols_gets_an_error_frame() {
    let provider = spawn_with(|c| c.provider.ws_max_symbols = 3).await;
    for s in ["A", "B", "C", "D"] {
        provider.seed(s, 10.0).await;
    }
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["A", "B", "C", "D"]})).await;
    client.expect_error("Too many symbols: at most 3 per connection").await;
    client.send(json!({"type": "subscribe", "symbols": ["A", "B"]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    client.send(json!({"type": "subscribe", "symbols": ["C", "D"]})).await;
    client.expect_error("Too many symbols").await;
    client.send(json!({"type": "list"})).await;
    let list = client.recv_until(|f| f["type"] == "subscriptions").await;
    assert_eq!(list["symbols"], json!(["A", "B"]), "nothing of the refused request was subscribed");
}

#[tokio::test]
async fn oversized_frame_gets_an_error_frame_and_the_connection_stays_usable() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    let huge = json!({"type": "subscribe", "symbols": ["AAPL"], "pad": "x".repeat(70_000)});
    client.send(huge).await;
    client.expect_error("Frame too large: at most 65536 bytes").await;
    client.assert_usable().await;
}

#[tokio::test]
async fn a_message_over_one_mebibyte_is_closed_with_1009_and_counted() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    client.send_text(&"x".repeat(2 * 1024 * 1024)).await;
    let close = client.expect_close(WAIT).await;
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(close.reason.as_str(), "message too big: at most 1 MiB");
    assert_eq!(provider.metric_where("lizards_ws_closes_total", "reason=\"too_big\"").await, 1.0);
}

#[tokio::test]
async fn binary_frame_gets_an_error_frame() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    use futures::SinkExt;
    client.ws.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    client.expect_error("Binary frames are not supported").await;
    client.assert_usable().await;
}

#[tokio::test]
async fn message_rate_beyond_the_burst_gets_an_error_frame() {
    let provider = spawn_with(|c| {
        c.provider.ws_rate = 1;
        c.provider.ws_burst = 3;
    })
    .await;
    let mut client = provider.ws().await;
    for _ in 0..4 {
        client.send(json!({"type": "ping"})).await;
    }
    client.expect_error("Rate limit exceeded").await;
}

#[tokio::test]
async fn ten_errors_within_the_window_close_the_connection_with_1008() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    for _ in 0..9 {
        client.send_text("nope").await;
    }
    for _ in 0..9 {
        client.expect_error("Invalid JSON").await;
    }
    client.assert_usable().await;
    client.send_text("nope").await;
    let close = client.expect_close(WAIT * 4).await;
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "too many invalid messages");
}

#[tokio::test]
async fn duplicate_subscription_is_acknowledged_and_updates_arrive_once() {
    let provider = spawn().await;
    provider.seed("MSFT", 400.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "subscribe", "symbols": ["MSFT", "msft"], "id": 1})).await;
    let ack = client.recv_until(|f| f["type"] == "subscribed").await;
    assert_eq!(ack["symbols"], json!(["MSFT"]));
    client.send(json!({"type": "subscribe", "symbols": ["MSFT"], "id": 2})).await;
    let ack = client.recv_until(|f| f["type"] == "subscribed").await;
    assert_eq!(ack, json!({"type": "subscribed", "symbols": ["MSFT"], "id": 2}));
    provider.wait_bound(1).await;
    provider.publish(&crate::helpers::quote("MSFT", 401.0)).await;
    client.recv_until(|f| is_update_for(f, "MSFT") && f["data"]["MSFT"]["price"] == 401.0).await;
    provider.publish(&crate::helpers::quote("MSFT", 402.0)).await;
    let next = client.recv_until(|f| is_update_for(f, "MSFT")).await;
    assert_eq!(next["data"]["MSFT"]["price"], 402.0, "the 401 update was not delivered twice");
    assert_eq!(provider.metric("lizards_ws_subscriptions").await, 1.0);
}

#[tokio::test]
async fn ping_list_and_unsubscribe_are_acknowledged() {
    let provider = spawn().await;
    provider.seed("AAPL", 1.0).await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.recv().await, json!({"type": "pong"}));
    client.send(json!({"type": "subscribe", "symbols": ["AAPL"]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    client.send(json!({"type": "list"})).await;
    assert_eq!(client.recv_until(|f| f["type"] == "subscriptions").await["symbols"], json!(["AAPL"]));
    client.send(json!({"type": "unsubscribe", "symbols": ["AAPL"], "id": 9})).await;
    let ack = client.recv_until(|f| f["type"] == "unsubscribed").await;
    assert_eq!(ack, json!({"type": "unsubscribed", "symbols": ["AAPL"], "id": 9}));
    client.send(json!({"type": "list"})).await;
    assert_eq!(client.recv_until(|f| f["type"] == "subscriptions").await["symbols"], json!([]));
}

#[tokio::test]
async fn auth_with_a_bad_token_is_refused_with_an_error_frame() {
    let provider = spawn().await;
    let mut client = provider.ws().await;
    client.send(json!({"type": "auth", "token": "whatever"})).await;
    client.expect_error("Authentication failed: invalid token").await;
    client.send(json!({"type": "auth"})).await;
    client.expect_error("Missing or invalid 'token'").await;
    client.assert_usable().await;
}
