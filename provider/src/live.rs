//! Live feed of this provider instance: an exclusive, auto-delete queue bound
//! only to the shards (and symbols) its clients watch, consumed into the hub.

use std::{collections::HashSet, sync::Arc};

use lizards_shared::{
    Quote, Symbol,
    broker::{ALERTS_EXCHANGE, Broker, BrokerError, ConsumeOptions, Consumer, QUOTES_EXCHANGE, QueueSpec},
    protocol::ServerFrame,
    quote::{decode_message, shard, shard_routing_key},
    shutdown::Shutdown,
};

use crate::{hub::Hub, metrics::Metrics};

/// Most quotes handed to the hub at once.
const MAX_BATCH: usize = 4096;
/// A stalled hub drops the oldest messages beyond this (they are superseded
/// by newer prices anyway). Messages, not quotes: one may carry a whole
/// publish round of a shard.
const MAX_QUEUE: usize = 10_000;
/// Wait before retrying failed (un)bindings.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

pub fn queue_spec(name: &str) -> QueueSpec {
    QueueSpec { name: name.to_string(), auto_delete: true, max_length: Some(MAX_QUEUE), ..QueueSpec::default() }
}

pub async fn consume(broker: &dyn Broker, queue: &str) -> Result<Box<dyn Consumer>, BrokerError> {
    broker.declare_queue(&queue_spec(queue)).await?;
    // Every fired alert: few, and the hub knows which sockets are whose.
    broker.bind(queue, ALERTS_EXCHANGE, "alert.#").await?;
    broker.consume(queue, ConsumeOptions { prefetch: 0, no_ack: true }).await
}

/// Feeds the hub until shutdown, in batches of whatever is ready.
pub async fn feed(mut consumer: Box<dyn Consumer>, hub: Arc<Hub>, metrics: Metrics, queue: String, shutdown: Shutdown) {
    let mut quotes = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            delivery = consumer.next() => match delivery {
                Some(delivery) => delivery,
                None => return,
            },
        };
        let mut count = 1;
        take(&hub, &mut quotes, &first);
        while quotes.len() < MAX_BATCH {
            let Some(delivery) = consumer.try_next() else { break };
            count += 1;
            take(&hub, &mut quotes, &delivery);
        }
        metrics.consumed.with_label_values(&[&queue]).inc_by(count);
        metrics.ops.operations.with_label_values(&["message"]).inc_by(count);
        hub.publish(&quotes);
        quotes.clear();
    }
}

/// A quote joins the batch; an alert goes to its user's sockets at once.
fn take(hub: &Hub, quotes: &mut Vec<Quote>, delivery: &lizards_shared::broker::Delivery) {
    if delivery.routing_key.starts_with("alert.") {
        match crate::alerts::decode(&delivery.body) {
            Ok(published) => {
                let frame = ServerFrame::Alert { alert: published.alert }.to_bytes();
                let sockets = hub.send_to_user(published.user_id, &frame);
                tracing::debug!(user = %published.user_id, sockets, "alert frame sent");
            }
            Err(error) => tracing::warn!(%error, "undecodable alert skipped"),
        }
        return;
    }
    match decode_message(&delivery.body) {
        Ok(decoded) => quotes.extend(decoded.quotes),
        Err(error) => tracing::warn!(%error, "undecodable live message skipped"),
    }
}

/// The routing keys that bring a symbol's quotes: its shard's batches,
/// and single-quote (version 1) messages.
fn keys(symbol: &Symbol) -> [String; 2] {
    [shard_routing_key(shard(symbol)), symbol.routing_key()]
}

/// Keeps the queue's bindings equal to what the watched symbols need. A
/// shard's batches also carry symbols nobody here watches; the hub drops
/// them.
pub async fn bind(broker: Arc<dyn Broker>, hub: Arc<Hub>, metrics: Metrics, queue: String, shutdown: Shutdown) {
    let mut bound: HashSet<String> = HashSet::new();
    let mut changes = hub.demand_changes();
    loop {
        let watched = hub.watched();
        let wanted: HashSet<String> = watched.iter().flat_map(keys).collect();
        let mut failed = false;
        for key in wanted.difference(&bound).cloned().collect::<Vec<_>>() {
            match broker.bind(&queue, QUOTES_EXCHANGE, &key).await {
                Ok(()) => {
                    bound.insert(key);
                }
                Err(error) => {
                    tracing::warn!(%error, %key, "bind failed");
                    failed = true;
                }
            }
        }
        for key in bound.difference(&wanted).cloned().collect::<Vec<_>>() {
            match broker.unbind(&queue, QUOTES_EXCHANGE, &key).await {
                Ok(()) => {
                    bound.remove(&key);
                }
                Err(error) => {
                    tracing::warn!(%error, %key, "unbind failed");
                    failed = true;
                }
            }
        }
        let covered = watched.iter().filter(|symbol| keys(symbol).iter().all(|key| bound.contains(key)));
        metrics.live_bindings.set(covered.count() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}
