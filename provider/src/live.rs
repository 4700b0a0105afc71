//! Live feed of this provider instance: an exclusive, auto-delete queue bound
//! only to the symbols its clients watch, consumed into the hub.

use std::{collections::HashSet, sync::Arc};

use lizards_shared::{
    Quote, Symbol,
    broker::{ALERTS_EXCHANGE, Broker, BrokerError, ConsumeOptions, Consumer, QUOTES_EXCHANGE, QueueSpec},
    protocol::ServerFrame,
    shutdown::Shutdown,
};

use crate::{hub::Hub, metrics::Metrics};

/// Most quotes handed to the hub at once.
const MAX_BATCH: usize = 4096;
/// A stalled hub drops the oldest quotes beyond this (they are superseded by
/// newer prices anyway).
const MAX_QUEUE: usize = 100_000;
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
    match Quote::decode(&delivery.body) {
        Ok(quote) => quotes.push(quote),
        Err(error) => tracing::warn!(%error, "undecodable live quote skipped"),
    }
}

/// Keeps the queue's bindings equal to the symbols watched.
pub async fn bind(broker: Arc<dyn Broker>, hub: Arc<Hub>, metrics: Metrics, queue: String, shutdown: Shutdown) {
    let mut bound: HashSet<Symbol> = HashSet::new();
    let mut changes = hub.demand_changes();
    loop {
        let watched = hub.watched();
        let mut failed = false;
        for symbol in watched.difference(&bound).cloned().collect::<Vec<_>>() {
            match broker.bind(&queue, QUOTES_EXCHANGE, &symbol.routing_key()).await {
                Ok(()) => {
                    bound.insert(symbol);
                }
                Err(error) => {
                    tracing::warn!(%error, %symbol, "bind failed");
                    failed = true;
                }
            }
        }
        for symbol in bound.difference(&watched).cloned().collect::<Vec<_>>() {
            match broker.unbind(&queue, QUOTES_EXCHANGE, &symbol.routing_key()).await {
                Ok(()) => {
                    bound.remove(&symbol);
                }
                Err(error) => {
                    tracing::warn!(%error, %symbol, "unbind failed");
                    failed = true;
                }
            }
        }
        metrics.live_bindings.set(bound.len() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}
