//! The ingestion pipeline: store raw → validate → publish with confirm.
//! Rejected records stay in the raw store with their reason.

use std::{collections::HashMap, sync::Arc, time::Instant};

use chrono::{Duration, SubsecRound, Utc};
use lizards_shared::{
    Quote, Symbol,
    broker::{Broker, BrokerError, QUOTES_EXCHANGE},
    rawstore::{RawDocument, RawOutcome, RawStore, RawStoreError},
};
use tokio::sync::Mutex;

use crate::{
    metrics::Metrics,
    publisher::QuotePublisher,
    sources::{ItemError, RawRecord},
    validate::{self, Reject},
};

/// Raw-store reason of a record the broker did not confirm.
pub const PUBLISH_FAILED: &str = "publish_failed";

/// What happened to one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Published { ingest_id: String, flags: Vec<String> },
    Rejected(Reject),
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("broker did not confirm the quote: {0}")]
    Publish(#[from] BrokerError),
}

pub struct Pipeline {
    publisher: QuotePublisher,
    raw: Arc<dyn RawStore>,
    metrics: Metrics,
    retention: Duration,
    jump_pct: f64,
    /// Last published price per symbol, for jump flags; also the set of
    /// symbols published, at most `max_symbols`.
    last: Mutex<HashMap<Symbol, f64>>,
    max_symbols: usize,
}

/// INGEST_MAX_SYMBOLS' default.
pub const DEFAULT_MAX_SYMBOLS: usize = 10_000;

impl Pipeline {
    pub fn new(
        broker: Arc<dyn Broker>,
        raw: Arc<dyn RawStore>,
        metrics: Metrics,
        retention_days: u32,
        jump_pct: f64,
    ) -> Pipeline {
        Pipeline {
            publisher: QuotePublisher::new(broker, metrics.publish_batch_size.clone()),
            raw,
            metrics,
            retention: Duration::days(retention_days.into()),
            jump_pct,
            last: Mutex::new(HashMap::new()),
            max_symbols: DEFAULT_MAX_SYMBOLS,
        }
    }

    /// Publishes at most `max` distinct symbols.
    pub fn with_max_symbols(mut self, max: usize) -> Pipeline {
        self.max_symbols = max;
        self
    }

    pub async fn process(&self, mut record: RawRecord) -> Result<Outcome, PipelineError> {
        // Microseconds: the precision every store and wire format keeps.
        let received_at = Utc::now().trunc_subsecs(6);
        let doc = RawDocument {
            source: record.source.clone(),
            symbol: record.symbol.clone(),
            source_ts: record.ts,
            received_at,
            // The record's body is the raw document's alone from here on.
            body: std::mem::take(&mut record.body),
        };
        let raw_id = match self.raw.insert(doc.clone()).await {
            Ok(id) => Some(id),
            Err(RawStoreError::Duplicate) => match self.raw.reclaim(&doc, PUBLISH_FAILED).await {
                // Its first attempt was never published: this one is.
                Ok(Some(id)) => Some(id),
                Ok(None) => return Ok(self.reject(&record, None, Reject::Duplicate).await),
                Err(error) => {
                    tracing::warn!(%error, "raw store lookup of a duplicate failed; refused as a duplicate");
                    return Ok(self.reject(&record, None, Reject::Duplicate).await);
                }
            },
            Err(error) => {
                // A raw-store outage must not stop live prices: publish with
                // a fresh id and count the miss.
                tracing::warn!(%error, "raw store insert failed; publishing without raw copy");
                self.metrics.raw_store_errors.with_label_values(&["insert"]).inc();
                self.metrics.ops.errors.with_label_values(&["raw_store"]).inc();
                None
            }
        };
        let symbol = match validate::validate(&record, received_at, self.retention) {
            Ok(symbol) => symbol,
            Err(reason) => return Ok(self.reject(&record, raw_id.as_deref(), reason).await),
        };
        if !self.has_room_for(&symbol).await {
            return Ok(self.reject(&record, raw_id.as_deref(), Reject::TooManySymbols).await);
        }
        let flags = self.flags(&symbol, record.price).await;
        let price = record.price;
        let ingest_id = raw_id.clone().unwrap_or_else(|| uuid_like(&record));
        let quote = Quote {
            symbol,
            price: record.price,
            // A quote from the future is ordered as now: the latest price
            // never moves back in time, so a far-future timestamp would pin
            // it until the clock caught up. The raw document keeps the time
            // the source sent.
            ts: record.ts.min(received_at).trunc_subsecs(6),
            volume: record.volume,
            source: record.source.clone(),
            ingest_id: ingest_id.clone(),
            ingested_at: received_at,
        };
        let symbol = quote.symbol.clone();
        let started = Instant::now();
        if let Err(error) = self.publisher.publish(quote).await {
            self.metrics.publish_failures.with_label_values(&[self.metrics.source_label(&record.source)]).inc();
            self.metrics.ops.errors.with_label_values(&["publish"]).inc();
            if let Some(id) = raw_id {
                self.set_outcome(&id, RawOutcome::Rejected { reason: PUBLISH_FAILED.to_string() }).await;
            }
            return Err(error.into());
        }
        // Only a published price is the baseline for the next jump check.
        self.last.lock().await.insert(symbol, price);
        self.metrics.delivery_time.with_label_values(&[QUOTES_EXCHANGE]).observe(started.elapsed().as_secs_f64());
        self.metrics.published.with_label_values(&[self.metrics.source_label(&record.source)]).inc();
        self.metrics.ops.operations.with_label_values(&["quote"]).inc();
        for flag in &flags {
            self.metrics.flagged.with_label_values(&[self.metrics.source_label(&record.source), flag]).inc();
        }
        if let Some(id) = raw_id {
            self.set_outcome(&id, RawOutcome::Accepted { flags: flags.clone() }).await;
        }
        Ok(Outcome::Published { ingest_id, flags })
    }

    /// Keeps what a source answered for a symbol that could not become a
    /// record (missing field, wrong type, invalid price) with its reason.
    pub async fn reject_item(&self, source: &str, item: &ItemError) {
        let reason = item.error.label();
        tracing::debug!(source, symbol = %item.symbol, reason, error = %item.error, "source item rejected");
        self.metrics.rejected.with_label_values(&[self.metrics.source_label(source), reason]).inc();
        let now = Utc::now().trunc_subsecs(6);
        let doc = RawDocument {
            source: source.to_string(),
            symbol: item.symbol.to_string(),
            source_ts: now,
            received_at: now,
            body: item.body.clone(),
        };
        match self.raw.insert(doc).await {
            Ok(id) => self.set_outcome(&id, RawOutcome::Rejected { reason: reason.to_string() }).await,
            Err(RawStoreError::Duplicate) => {}
            Err(error) => {
                tracing::warn!(%error, "raw store insert of a reject failed");
                self.metrics.raw_store_errors.with_label_values(&["insert"]).inc();
                self.metrics.ops.errors.with_label_values(&["raw_store"]).inc();
            }
        }
    }

    async fn reject(&self, record: &RawRecord, raw_id: Option<&str>, reason: Reject) -> Outcome {
        tracing::debug!(source = %record.source, symbol = %record.symbol, reason = reason.label(), "record rejected");
        self.metrics.rejected.with_label_values(&[self.metrics.source_label(&record.source), reason.label()]).inc();
        if let Some(id) = raw_id {
            self.set_outcome(id, RawOutcome::Rejected { reason: reason.label().to_string() }).await;
        }
        Outcome::Rejected(reason)
    }

    async fn set_outcome(&self, id: &str, outcome: RawOutcome) {
        if let Err(error) = self.raw.set_outcome(id, outcome).await {
            tracing::warn!(%error, "raw store outcome update failed");
            self.metrics.raw_store_errors.with_label_values(&["set_outcome"]).inc();
            self.metrics.ops.errors.with_label_values(&["raw_store"]).inc();
        }
    }

    /// Whether `symbol` is published already or there is room for one more.
    async fn has_room_for(&self, symbol: &Symbol) -> bool {
        let last = self.last.lock().await;
        last.contains_key(symbol) || last.len() < self.max_symbols
    }

    async fn flags(&self, symbol: &Symbol, price: f64) -> Vec<String> {
        let previous = self.last.lock().await.get(symbol).copied();
        match previous {
            Some(previous) if validate::is_jump(previous, price, self.jump_pct) => vec!["jump".to_string()],
            _ => Vec::new(),
        }
    }
}

/// An id for a record the raw store could not keep.
fn uuid_like(record: &RawRecord) -> String {
    format!("unstored-{}-{}-{}", record.source, record.symbol, record.ts.timestamp_micros())
}
