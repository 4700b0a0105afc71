//! Persistence worker: consumes `provider.persist`, writes batches in one
//! transaction and acknowledges only after the commit, so nothing confirmed
//! is lost and a redelivered batch is idempotent. Poison messages (unreadable,
//! or a quote the database refuses) are dead-lettered and counted; they
//! never stop the worker or hold back the rest of their batch.

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    Quote,
    broker::{Broker, ConsumeOptions, Consumer, Delivery, PERSIST_QUEUE, consume_retrying},
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

    /// Collects up to `batch` deliveries, waiting at most `linger`.
    async fn fill(&self, first: Delivery, consumer: &mut dyn Consumer) -> Vec<Delivery> {
        let mut batch = vec![first];
        let deadline = Instant::now() + self.linger;
        while batch.len() < self.batch {
            if let Some(delivery) = consumer.try_next() {
                batch.push(delivery);
                continue;
            }
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(delivery)) => batch.push(delivery),
                _ => break,
            }
        }
        batch
    }

    /// Writes one batch; `false` when the database is down (batch
    /// requeued, the caller backs off).
    async fn write(&self, batch: Vec<Delivery>) -> bool {
        self.metrics.consumed.with_label_values(&[PERSIST_QUEUE]).inc_by(batch.len() as u64);
        self.metrics.ops.operations.with_label_values(&["message"]).inc_by(batch.len() as u64);
        let mut quotes = Vec::with_capacity(batch.len());
        let mut deliveries: Vec<Delivery> = Vec::with_capacity(batch.len());
        for delivery in batch {
            match Quote::decode(&delivery.body) {
                Ok(quote) => {
                    quotes.push(quote);
                    deliveries.push(delivery);
                }
                Err(error) => {
                    tracing::warn!(%error, routing_key = %delivery.routing_key, "poison message dead-lettered");
                    self.dead_letter(delivery).await;
                }
            }
        }
        if quotes.is_empty() {
            return true;
        }
        // Live prices keep flowing from memory whatever the database does.
        self.latest.update(&quotes);
        match self.commit(&quotes).await {
            Ok(()) => {
                // One ack for the batch: every delivery taken so far is
                // either in it or was dead-lettered already.
                if let Some(last) = deliveries.pop()
                    && let Err(error) = last.ack_through().await
                {
                    tracing::warn!(%error, "ack failed; the batch will be redelivered and skipped");
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, batch = quotes.len(), "batch not persisted");
                self.metrics.errors.with_label_values(&["database"]).inc();
                self.isolate(split(quotes, deliveries)).await
            }
        }
    }

    /// A batch failed. With the database down, every part goes back to
    /// the queue. With the database up, it refused some quote: the batch is
    /// retried in halves down to single quotes, so everything else commits
    /// and only a quote refused [`SINGLE_ATTEMPTS`] times on its own is
    /// dead-lettered (a batch the database always rejects would otherwise
    /// be requeued forever and wedge the queue).
    async fn isolate(&self, mut parts: Vec<Part>) -> bool {
        while let Some((quotes, deliveries)) = parts.pop() {
            let committed = match quotes.len() {
                1 => self.commit_alone(&quotes).await,
                _ => self.commit(&quotes).await,
            };
            match committed {
                Ok(()) => {
                    for delivery in deliveries {
                        if let Err(error) = delivery.ack().await {
                            tracing::warn!(%error, "ack failed; the quote will be redelivered and skipped");
                        }
                    }
                }
                Err(_) if self.store.ping().await.is_err() => {
                    tracing::error!(parts = parts.len() + 1, "database unavailable; batch requeued");
                    for delivery in parts.into_iter().flat_map(|(_, d)| d).chain(deliveries) {
                        let _ = delivery.nack(true).await;
                    }
                    return false;
                }
                Err(error) if quotes.len() == 1 => {
                    let quote = &quotes[0];
                    tracing::error!(%error, symbol = %quote.symbol, ts = %quote.ts, "quote refused by the database; dead-lettered");
                    self.dead_letter(deliveries.into_iter().next().expect("one delivery per quote")).await;
                }
                Err(_) => parts.extend(split(quotes, deliveries)),
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

    async fn dead_letter(&self, delivery: Delivery) {
        self.metrics.dead_lettered.with_label_values(&[PERSIST_QUEUE]).inc();
        if let Err(error) = delivery.nack(false).await {
            tracing::warn!(%error, "dead-lettering failed");
        }
    }
}

/// Quotes with their deliveries, in the same order.
type Part = (Vec<Quote>, Vec<Delivery>);

/// The two halves of a part, the first half last (it is popped first).
fn split(mut quotes: Vec<Quote>, mut deliveries: Vec<Delivery>) -> Vec<Part> {
    let half = quotes.len().div_ceil(2);
    let second = (quotes.split_off(half), deliveries.split_off(half));
    vec![second, (quotes, deliveries)]
}
