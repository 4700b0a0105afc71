//! Persistence: idempotent on redelivery, poison messages and quotes
//! dead-lettered.

use bytes::Bytes;
use lizards_shared::{
    broker::{Broker, DEAD_QUEUE, PERSIST_QUEUE, QUOTES_EXCHANGE},
    quote::encode_batch,
    store::QuoteStore,
};
use serde_json::{Value, json};

use crate::helpers::{quote, spawn, spawn_with, wait_for};

#[tokio::test]
async fn a_redelivered_quote_is_stored_exactly_once() {
    let provider = spawn().await;
    let q = quote("AMD", 155.0);
    for _ in 0..3 {
        provider.publish(&q).await;
    }
    let later = provider.seed("AMD", 156.0).await;
    wait_for(|| async { provider.metric("lizards_messages_consumed_total").await >= 4.0 }).await;
    assert_eq!(provider.store.count(&q.symbol).await.unwrap(), 2);
    assert_eq!(provider.store.latest(&q.symbol).await.unwrap().unwrap().ts, later.ts);
    assert_eq!(provider.metric("lizards_quotes_persisted_total").await, 2.0);
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_worker_goes_on() {
    let provider = spawn().await;
    provider
        .broker
        .publish(QUOTES_EXCHANGE, "quote.AAPL", Bytes::from_static(b"{\"v\":1,\"garbage\":true}"))
        .await
        .unwrap();
    provider.broker.publish(QUOTES_EXCHANGE, "quote.AAPL", Bytes::from_static(b"\xff\xfe")).await.unwrap();
    wait_for(|| async { provider.broker.queue_len(DEAD_QUEUE).await.unwrap() == 2 }).await;
    assert_eq!(provider.metric("lizards_messages_dead_lettered_total").await, 2.0);
    provider.seed("AAPL", 1.0).await;
}

#[tokio::test]
async fn the_queues_backlog_is_a_gauge_read_from_the_broker() {
    let provider = spawn().await;
    provider.broker.publish(QUOTES_EXCHANGE, "quote.AAPL", Bytes::from_static(b"\xff\xfe")).await.unwrap();
    wait_for(|| async { provider.broker.queue_len(DEAD_QUEUE).await.unwrap() == 1 }).await;
    // The stats worker reads the queues every STATS_INTERVAL: within two,
    // the gauge has seen the dead letter.
    let deadline = 2 * lizards_provider::stats::STATS_INTERVAL;
    lizards_testkit::eventually_within("the dead-letter backlog is 1", deadline, || async {
        provider.metric_where("lizards_queue_messages", "queue=\"dead\"").await == 1.0
    })
    .await;
    assert_eq!(provider.metric_where("lizards_queue_messages", "queue=\"provider.persist\"").await, 0.0);
}

#[tokio::test]
async fn the_dead_letter_view_is_for_admins_pages_and_leaves_the_queue_as_it_was() {
    let provider = spawn().await;
    for body in [&b"{\"v\":1,\"garbage\":true}"[..], b"\xff\xfe", b"third"] {
        provider.broker.publish(QUOTES_EXCHANGE, "quote.AAPL", Bytes::copy_from_slice(body)).await.unwrap();
    }
    wait_for(|| async { provider.broker.queue_len(DEAD_QUEUE).await.unwrap() == 3 }).await;

    let admin = provider.admin().await;
    let view = provider.get_as("/admin/dead-letters?limit=2", Some(&admin)).await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.body["queue"], "dead");
    assert_eq!(view.body["waiting"], 3);
    let messages = view.body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "limit honoured: {}", view.body);
    assert_eq!(messages[0]["body"], serde_json::json!({"v": 1, "garbage": true}), "JSON shown as JSON");
    assert_eq!(messages[1]["body"], "\u{fffd}\u{fffd}", "bytes shown as text");
    assert_eq!(messages[1]["bytes"], 2);

    // Looking again shows the same messages in the same order.
    let again = provider.get_as("/admin/dead-letters", Some(&admin)).await;
    let bodies: Vec<_> = again.body["messages"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies[0], messages[0]["body"]);
    assert_eq!(bodies[2], "third");
    assert_eq!(provider.broker.queue_len(DEAD_QUEUE).await.unwrap(), 3);

    let user = provider.user().await;
    assert_eq!(provider.get_as("/admin/dead-letters", Some(&user.token)).await.status, 403);
    assert_eq!(provider.get_as("/admin/dead-letters", None).await.status, 401);
    for bad in ["0", "abc", "100000"] {
        let refused = provider.get_as(&format!("/admin/dead-letters?limit={bad}"), Some(&admin)).await;
        assert_eq!(refused.status, 422, "limit={bad}: {}", refused.body);
    }
}

#[tokio::test]
async fn a_quote_the_database_refuses_is_dead_lettered_and_the_rest_of_its_batch_is_stored() {
    // A long linger gathers every quote below into one batch.
    let provider = spawn_with(|config| config.provider.persist_linger = std::time::Duration::from_millis(500)).await;
    provider.refuse_quotes_of("BAD").await;
    let good: Vec<_> = (0..7).map(|i| quote(&format!("GOOD{i}"), 10.0 + f64::from(i))).collect();
    for q in &good[..3] {
        provider.publish(q).await;
    }
    provider.publish(&quote("BAD", 666.0)).await;
    for q in &good[3..] {
        provider.publish(q).await;
    }
    wait_for(|| async { provider.broker.queue_len(DEAD_QUEUE).await.unwrap() == 1 }).await;
    for q in &good {
        wait_for(|| async { provider.store.count(&q.symbol).await.unwrap() == 1 }).await;
    }
    assert_eq!(provider.metric("lizards_messages_dead_lettered_total").await, 1.0);
    assert_eq!(provider.metric("lizards_quotes_persisted_total").await, 7.0);
    assert_eq!(provider.broker.queue_len(PERSIST_QUEUE).await.unwrap(), 0, "the queue drains");
    // An admin sees it, and seeing it leaves it there.
    let view = provider.get_as("/admin/dead-letters", Some(&provider.admin().await)).await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.body["waiting"], 1, "{}", view.body);
    assert_eq!(view.body["messages"][0]["routing_key"], "quote.BAD", "{}", view.body);
    assert_eq!(view.body["messages"][0]["body"]["symbol"], "BAD", "{}", view.body);
    assert_eq!(provider.broker.queue_len(DEAD_QUEUE).await.unwrap(), 1, "the view takes nothing away");
    // The worker goes on with later quotes.
    provider.seed("GOOD0", 20.0).await;
    provider.stop().await;
}

#[tokio::test]
async fn a_batch_message_is_stored_once_and_only_its_bad_quotes_are_dead_lettered_each_alone() {
    let provider = spawn().await;
    provider.refuse_quotes_of("BAD").await;
    let good: Vec<_> = (0..4).map(|i| quote(&format!("BATCH{i}"), 10.0 + f64::from(i))).collect();
    let mut quotes = good.clone();
    quotes.push(quote("BAD", 666.0));
    let mut body: Value = serde_json::from_slice(&encode_batch(&quotes)).unwrap();
    let mut unreadable = body["quotes"][0].clone();
    unreadable["price"] = json!(-1.0);
    body["quotes"].as_array_mut().unwrap().push(unreadable);
    let body = Bytes::from(body.to_string());
    // Twice, as a redelivery would: each good quote is stored once.
    for _ in 0..2 {
        provider.broker.publish(QUOTES_EXCHANGE, "quote.shard.0", body.clone()).await.unwrap();
    }
    wait_for(|| async { provider.metric("lizards_messages_consumed_total").await >= 2.0 }).await;
    wait_for(|| async { provider.broker.queue_len(DEAD_QUEUE).await.unwrap() == 4 }).await;
    for q in &good {
        assert_eq!(provider.store.count(&q.symbol).await.unwrap(), 1, "{}", q.symbol);
    }
    assert_eq!(provider.metric("lizards_quotes_persisted_total").await, 4.0);
    assert_eq!(provider.broker.queue_len(PERSIST_QUEUE).await.unwrap(), 0, "the queue drains");
    let view = provider.get_as("/admin/dead-letters", Some(&provider.admin().await)).await;
    let dead = view.body["messages"].as_array().unwrap();
    let refused = dead.iter().filter(|m| m["routing_key"] == "quote.BAD" && m["body"]["symbol"] == "BAD").count();
    let unread = dead.iter().filter(|m| m["routing_key"] == "quote.shard.0" && m["body"]["price"] == -1.0).count();
    assert_eq!((refused, unread), (2, 2), "each bad quote alone, once per delivery: {}", view.body);
    provider.stop().await;
}
