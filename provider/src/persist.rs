//! Persistence worker: consumes `provider.persist`, writes batches in one
//! transaction and acknowledges only after the commit, so nothing confirmed
//! is lost and a redelivered batch is idempotent. Poison (an unreadable
//! message, an unreadable quote of a batch message, or a quote the database
//! refuses) is dead-lettered alone and counted; it never stops the worker
//! or holds back the rest of its batch.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use lizards_shared::{
    Quote,
    broker::{Broker, ConsumeOptions, Consumer, DEAD_LETTER_EXCHANGE, Delivery, PERSIST_QUEUE, consume_retrying},
    quote::{self, DecodeError, decode_message},
    retry::Backoff,
    shutdown::Shutdown,
    store::{QuoteStore, StoreError},
};
use tokio::time::Instant;

use crate::{latest::LatestCache, metrics::Metrics};

/// How often a quote the database refused within a batch is tried on its
/// own before it is dead-lettered.
const SINGLE_ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub struct Persister {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn QuoteStore>,
    pub latest: Arc<LatestCache>,
    pub metrics: Metrics,
    pub batch: usize,
    pub linger: Duration,
}

impl Persister {
    pub async fn run(self, shutdown: Shutdown) {
        let prefetch = self.batch.clamp(1, u16::MAX as usize) as u16;
        let Some(mut consumer) = consume_retrying(
            self.broker.as_ref(),
            PERSIST_QUEUE,
            ConsumeOptions { prefetch, no_ack: false },
            &shutdown,
        )
        .await
        else {
            return;
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                delivery = consumer.next() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let batch = self.fill(first, consumer.as_mut()).await;
            if self.write(batch).await {
                backoff.reset();
            } else {
                // The database is down: the batch went back to the queue;
                // wait before trying again.
                if !backoff.wait(&shutdown).await {
                    break;
                }
            }
        }
        // Unacked deliveries go back to the queue before this returns.
        consumer.cancel().await;
        tracing::info!("persistence worker stopped");
    }

    /// Collects deliveries up to `batch` quotes, waiting at most `linger`.
    async fn fill(&self, first: Delivery, consumer: &mut dyn Consumer) -> Vec<Taken> {
        let mut quotes = 0;
        let mut batch = Vec::new();
        let mut take = |delivery: Delivery| {
            let decoded = decode_message(&delivery.body);
            quotes += decoded.as_ref().map_or(1, |d| d.quotes.len() + d.poison.len());
            batch.push((delivery, decoded));
            quotes
        };
        let deadline = Instant::now() + self.linger;
        let mut next = Some(first);
        while let Some(delivery) = next.take() {
            if take(delivery) >= self.batch {
                break;
            }
            next = match consumer.try_next() {
                Some(delivery) => Some(delivery),
                None => tokio::time::timeout_at(deadline, consumer.next()).await.ok().flatten(),
            };
        }
        batch
    }

    /// Writes one batch; `false` when the database or the broker is down
    /// (batch requeued, the caller backs off).
    async fn write(&self, batch: Vec<Taken>) -> bool {
        self.metrics.consumed.with_label_values(&[PERSIST_QUEUE]).inc_by(batch.len() as u64);
        self.metrics.ops.operations.with_label_values(&["message"]).inc_by(batch.len() as u64);
        let mut quotes = Vec::with_capacity(batch.len());
        let mut deliveries: Vec<Delivery> = Vec::with_capacity(batch.len());
        let mut poison = Vec::new();
        for (delivery, decoded) in batch {
            match decoded {
                Ok(decoded) => {
                    quotes.extend(decoded.quotes);
                    poison.extend(decoded.poison.into_iter().map(|p| (delivery.routing_key.clone(), p)));
                    deliveries.push(delivery);
                }
                Err(error) => {
                    tracing::warn!(%error, routing_key = %delivery.routing_key, "poison message dead-lettered");
                    self.metrics.dead_lettered.with_label_values(&[PERSIST_QUEUE]).inc();
                    if let Err(error) = delivery.nack(false).await {
                        tracing::warn!(%error, "dead-lettering failed");
                    }
                }
            }
        }
        if !quotes.is_empty() {
            // Live prices keep flowing from memory whatever the database does.
            self.latest.update(&quotes);
            if let Err(error) = self.commit(&quotes).await {
                tracing::warn!(%error, batch = quotes.len(), "batch not persisted");
                self.metrics.errors.with_label_values(&["database"]).inc();
                if !self.isolate(quotes).await {
                    return requeue(deliveries).await;
                }
            }
        }
        // After the commit: a batch requeued because the database is down
        // does not dead-letter its poison twice.
        for (routing_key, quote) in poison {
            tracing::warn!(error = %quote.error, %routing_key, "poison quote of a batch dead-lettered");
            if !self.dead_letter(&routing_key, quote.body).await {
                return requeue(deliveries).await;
            }
        }
        // One ack for the batch: every delivery taken so far is either in
        // it or was dead-lettered already.
        if let Some(last) = deliveries.pop()
            && let Err(error) = last.ack_through().await
        {
            tracing::warn!(%error, "ack failed; the batch will be redelivered and skipped");
        }
        true
    }

    /// A batch failed. With the database down (`false`), it goes back to
    /// the queue whole; what committed meanwhile is skipped when it comes
    /// back. With the database up, it refused some quote: the batch is
    /// retried in halves down to single quotes, so everything else commits
    /// and only a quote refused [`SINGLE_ATTEMPTS`] times on its own is
    /// dead-lettered (a batch the database always rejects would otherwise
    /// be requeued forever and wedge the queue).
    async fn isolate(&self, quotes: Vec<Quote>) -> bool {
        let mut parts = split(quotes);
        while let Some(quotes) = parts.pop() {
            let committed = match quotes.len() {
                1 => self.commit_alone(&quotes).await,
                _ => self.commit(&quotes).await,
            };
            match committed {
                Ok(()) => {}
                Err(_) if self.store.ping().await.is_err() => {
                    tracing::error!("database unavailable; batch requeued");
                    return false;
                }
                Err(error) if quotes.len() == 1 => {
                    let quote = &quotes[0];
                    tracing::error!(%error, symbol = %quote.symbol, ts = %quote.ts, "quote refused by the database; dead-lettered");
                    if !self.dead_letter(&quote.symbol.routing_key(), quote.encode()).await {
                        return false;
                    }
                }
                Err(_) => parts.extend(split(quotes)),
            }
        }
        true
    }

    /// A single quote, tried a few times before it counts as refused.
    async fn commit_alone(&self, quote: &[Quote]) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match self.commit(quote).await {
                Err(_) if attempt < SINGLE_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    async fn commit(&self, quotes: &[Quote]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let inserted = self.store.insert_batch(quotes).await?;
        self.metrics.persist_duration.observe(started.elapsed().as_secs_f64());
        self.metrics.persist_batch_size.observe(quotes.len() as f64);
        self.metrics.persisted.inc_by(inserted);
        Ok(())
    }

    /// Sends one quote's body to the dead-letter exchange, alone: a batch
    /// message holds other, good quotes. `false` when the broker is away.
    async fn dead_letter(&self, routing_key: &str, body: Bytes) -> bool {
        match self.broker.publish(DEAD_LETTER_EXCHANGE, routing_key, body).await {
            Ok(()) => {
                self.metrics.dead_lettered.with_label_values(&[PERSIST_QUEUE]).inc();
                true
            }
            Err(error) => {
                tracing::warn!(%error, "dead-lettering failed; batch requeued");
                false
            }
        }
    }
}

/// A delivery and what its body held.
type Taken = (Delivery, Result<quote::Decoded, DecodeError>);

/// Hands a batch back to the queue; `false` for the caller's backoff.
async fn requeue(deliveries: Vec<Delivery>) -> bool {
    for delivery in deliveries {
        let _ = delivery.nack(true).await;
    }
    false
}

/// The two halves of a batch, the first half last (it is popped first).
fn split(mut quotes: Vec<Quote>) -> Vec<Vec<Quote>> {
    let half = quotes.len().div_ceil(2);
    let second = quotes.split_off(half);
    vec![second, quotes]
}
