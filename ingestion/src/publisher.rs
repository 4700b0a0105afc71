//! Publishes quotes in batches, one message per symbol shard, each with a
//! publisher confirm. A broker message costs RabbitMQ the same whether it
//! carries one quote or a thousand (routing, a disk write per durable queue,
//! a delivery per queue, acks, the confirm), so quotes that arrive while
//! earlier ones await their confirm travel together in the next message.
//!
//! There is no timer and no background task: the caller holding one of the
//! [`ROUNDS`] permits takes every waiting quote and publishes them. At a low
//! rate a quote goes alone, at once; under load batches grow by themselves.
//! `publish` returns once the quote's own message is confirmed, as a single
//! publish did, so the ingestion APIs answer only for confirmed quotes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use futures::future::join_all;
use lizards_shared::{
    Quote,
    broker::{Broker, BrokerError, QUOTES_EXCHANGE},
    quote::{encode_batch, shard, shard_routing_key},
};
use prometheus::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Publish rounds awaiting their confirms at once. A round is every quote
/// waiting when it starts, so this bounds messages in flight to
/// `ROUNDS × SHARDS` while quotes keep flowing during a confirm's wait.
pub const ROUNDS: usize = 4;
/// Most quotes one round takes (a message stays under ~300 KB).
pub const MAX_ROUND: usize = 2048;

#[derive(Clone)]
pub struct QuotePublisher {
    broker: Arc<dyn Broker>,
    waiting: Arc<Mutex<Vec<Pending>>>,
    rounds: Arc<Semaphore>,
    /// Quotes per message.
    batch_size: Histogram,
}

struct Pending {
    quote: Quote,
    confirmed: oneshot::Sender<Result<(), BrokerError>>,
}

impl QuotePublisher {
    pub fn new(broker: Arc<dyn Broker>, batch_size: Histogram) -> QuotePublisher {
        QuotePublisher { broker, waiting: Arc::default(), rounds: Arc::new(Semaphore::new(ROUNDS)), batch_size }
    }

    /// Returns once the broker confirmed the message holding `quote`.
    pub async fn publish(&self, quote: Quote) -> Result<(), BrokerError> {
        let (confirmed, mut outcome) = oneshot::channel();
        self.waiting.lock().expect("waiting quotes").push(Pending { quote, confirmed });
        loop {
            tokio::select! {
                biased;
                result = &mut outcome => return result.unwrap_or_else(|_| Err(lost())),
                permit = self.rounds.clone().acquire_owned() => {
                    let permit = permit.expect("the semaphore is never closed");
                    let round = self.take_round();
                    if round.is_empty() {
                        // Our quote is in a round already.
                        return outcome.await.unwrap_or_else(|_| Err(lost()));
                    }
                    // Spawned: a caller that goes away must not take the
                    // other quotes of its round with it.
                    tokio::spawn(publish_round(self.clone(), round, permit));
                }
            }
        }
    }

    fn take_round(&self) -> Vec<Pending> {
        let mut waiting = self.waiting.lock().expect("waiting quotes");
        let take = waiting.len().min(MAX_ROUND);
        waiting.drain(..take).collect()
    }
}

fn lost() -> BrokerError {
    BrokerError::Unavailable("the publish of this quote was abandoned".into())
}

/// One message per shard of the round, all awaited together.
async fn publish_round(publisher: QuotePublisher, round: Vec<Pending>, _permit: OwnedSemaphorePermit) {
    let mut shards: BTreeMap<u16, Vec<Pending>> = BTreeMap::new();
    for pending in round {
        shards.entry(shard(&pending.quote.symbol)).or_default().push(pending);
    }
    join_all(shards.into_iter().map(|(shard, pending)| {
        let publisher = publisher.clone();
        async move {
            let (quotes, waiters): (Vec<Quote>, Vec<_>) = pending.into_iter().map(|p| (p.quote, p.confirmed)).unzip();
            publisher.batch_size.observe(quotes.len() as f64);
            let result =
                publisher.broker.publish(QUOTES_EXCHANGE, &shard_routing_key(shard), encode_batch(&quotes)).await;
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::Utc;
    use lizards_shared::{
        Symbol,
        broker::{ConsumeOptions, ExchangeKind, MemoryBroker, QueueSpec},
        quote::decode_message,
    };
    use prometheus::HistogramOpts;

    use super::*;

    fn quote(i: usize) -> Quote {
        let now = Utc::now();
        Quote {
            symbol: Symbol::parse(&format!("S{}", i % 40)).unwrap(),
            price: 1.0 + i as f64,
            ts: now,
            volume: None,
            source: "test".into(),
            ingest_id: format!("q{i}"),
            ingested_at: now,
        }
    }

    fn histogram() -> Histogram {
        Histogram::with_opts(HistogramOpts::new("batch", "quotes per message")).unwrap()
    }

    #[tokio::test]
    async fn concurrent_quotes_share_messages_of_one_shard_each_and_each_goes_once() {
        let broker = Arc::new(MemoryBroker::new());
        broker.declare_exchange(QUOTES_EXCHANGE, ExchangeKind::Topic).await.unwrap();
        broker.declare_queue(&QueueSpec::durable("seen")).await.unwrap();
        broker.bind("seen", QUOTES_EXCHANGE, "#").await.unwrap();
        let sizes = histogram();
        let publisher = QuotePublisher::new(broker.clone(), sizes.clone());
        const QUOTES: usize = 1000;
        let results = join_all((0..QUOTES).map(|i| publisher.publish(quote(i)))).await;
        assert!(results.iter().all(Result::is_ok));

        let mut consumer = broker.consume("seen", ConsumeOptions { prefetch: 0, no_ack: true }).await.unwrap();
        let (mut ids, mut messages) = (HashSet::new(), 0);
        while let Some(delivery) = consumer.try_next() {
            messages += 1;
            for quote in decode_message(&delivery.body).unwrap().quotes {
                assert_eq!(delivery.routing_key, shard_routing_key(shard(&quote.symbol)), "{}", quote.symbol);
                assert!(ids.insert(quote.ingest_id), "each quote once");
            }
        }
        assert_eq!(ids.len(), QUOTES);
        assert!(messages < QUOTES / 4, "quotes waiting together share messages: {messages}");
        assert_eq!(sizes.get_sample_count(), messages as u64);
        assert_eq!(sizes.get_sample_sum(), QUOTES as f64);
    }

    #[tokio::test]
    async fn a_refused_publish_fails_every_quote_of_its_message_and_the_next_ones_still_go() {
        // No exchange declared: the broker refuses every publish.
        let broker = Arc::new(MemoryBroker::new());
        let publisher = QuotePublisher::new(broker.clone(), histogram());
        let results = join_all((0..50).map(|i| publisher.publish(quote(i)))).await;
        assert!(results.iter().all(|r| matches!(r, Err(BrokerError::UnknownExchange(_)))), "{results:?}");
        broker.declare_exchange(QUOTES_EXCHANGE, ExchangeKind::Topic).await.unwrap();
        assert!(publisher.publish(quote(0)).await.is_ok(), "every permit came back");
    }
}
