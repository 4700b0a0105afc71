//! The raw-document store port (MongoDB `raw_quotes`): every record as it
//! arrived, unique on source + symbol + source time, with its outcome.

pub mod memory;
pub mod mongo;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use memory::MemoryRawStore;
pub use mongo::MongoRawStore;

#[derive(Debug, Clone, PartialEq)]
pub struct RawDocument {
    pub source: String,
    /// The symbol text as the source gave it (not yet validated).
    pub symbol: String,
    /// The source's time of the observation.
    pub source_ts: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The record as received.
    pub body: Value,
}

/// What validation decided for a raw document.
#[derive(Debug, Clone, PartialEq)]
pub enum RawOutcome {
    Accepted { flags: Vec<String> },
    Rejected { reason: String },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RawStoreError {
    #[error("duplicate raw record (same source, symbol and time)")]
    Duplicate,
    #[error("raw store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait RawStore: Send + Sync + 'static {
    /// Stores a document and returns its id (the quote's `ingest_id`).
    async fn insert(&self, doc: RawDocument) -> Result<String, RawStoreError>;
    async fn set_outcome(&self, id: &str, outcome: RawOutcome) -> Result<(), RawStoreError>;
    /// The id of the stored copy of `doc` (same source, symbol and time)
    /// when its outcome is `Rejected { reason }`, atomically cleared, so
    /// exactly one of several concurrent callers gets it: a record whose
    /// publish failed is published when it is sent again, not refused as a
    /// duplicate. `None` for any other outcome.
    async fn reclaim(&self, doc: &RawDocument, reason: &str) -> Result<Option<String>, RawStoreError>;
    /// A stored document and its outcome, if still kept.
    async fn get(&self, id: &str) -> Result<Option<(RawDocument, Option<RawOutcome>)>, RawStoreError>;
    async fn ping(&self) -> Result<(), RawStoreError>;
}
