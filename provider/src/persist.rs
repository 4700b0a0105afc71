//! Persistence worker: consumes `provider.persist`, writes batches in one
//! transaction and acknowledges only after the commit, so nothing confirmed
//! is lost and a redelivered batch is idempotent. Poison messages are
//! dead-lettered and counted; they never stop the worker.

use std::{sync::Arc, time::Duration};

use lizards_shared::{
    Quote,
    broker::{Broker, ConsumeOptions, Consumer, Delivery, PERSIST_QUEUE, consume_retrying},
    shutdown::Shutdown,
    store::QuoteStore,
};
use tokio::time::Instant;

use crate::{latest::LatestCache, metrics::Metrics};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
        let mut backoff = Duration::from_millis(100);
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
                backoff = Duration::from_millis(100);
            } else {
                // The database is down: the batch went back to the queue;
                // wait before trying again.
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(MAX_BACKOFF),
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

    /// Writes one batch; `false` when the store failed (batch requeued).
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
                    self.metrics.dead_lettered.with_label_values(&[PERSIST_QUEUE]).inc();
                    if let Err(error) = delivery.nack(false).await {
                        tracing::warn!(%error, "dead-lettering failed");
                    }
                }
            }
        }
        if quotes.is_empty() {
            return true;
        }
        let started = std::time::Instant::now();
        match self.store.insert_batch(&quotes).await {
            Ok(inserted) => {
                self.metrics.persist_duration.observe(started.elapsed().as_secs_f64());
                self.metrics.persist_batch_size.observe(quotes.len() as f64);
                self.metrics.persisted.inc_by(inserted);
                self.latest.update(&quotes);
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
                tracing::error!(%error, batch = quotes.len(), "batch not persisted; requeued");
                self.metrics.errors.with_label_values(&["database"]).inc();
                // Live prices keep flowing from memory meanwhile.
                self.latest.update(&quotes);
                for delivery in deliveries {
                    let _ = delivery.nack(true).await;
                }
                false
            }
        }
    }
}
