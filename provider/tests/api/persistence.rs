//! Persistence: idempotent on redelivery, poison messages dead-lettered.

use bytes::Bytes;
use lizards_shared::{
    broker::{Broker, DEAD_QUEUE, PERSIST_QUEUE, QUOTES_EXCHANGE},
    store::QuoteStore,
};

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
    // The worker goes on with later quotes.
    provider.seed("GOOD0", 20.0).await;
    provider.stop().await;
}
