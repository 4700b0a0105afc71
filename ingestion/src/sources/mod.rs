//! Quote sources. Each source is a module implementing [`Source`]; the
//! pipeline does not know which kind of source a record came from.

pub mod synthetic;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lizards_shared::{Symbol, shutdown::Shutdown};
use serde_json::Value;
use tokio::sync::mpsc;

/// A record as a source produced it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub source: String,
    /// Symbol text as the source gave it (mapped to Lizards' naming).
    pub symbol: String,
    pub price: f64,
    /// The source's time of the observation.
    pub ts: DateTime<Utc>,
    pub volume: Option<f64>,
    /// The document as received, kept in the raw store.
    pub body: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Short id used in metrics and quotes (`synthetic`, `yahoo`, ...).
    fn id(&self) -> &str;
    /// Base URL of the source (`GET /sources`).
    fn base_url(&self) -> &str;
    /// Whether this source can quote `symbol`.
    async fn lookup(&self, symbol: &Symbol) -> Result<bool, SourceError>;
    /// Produces records into `out` until `shutdown`.
    async fn run(&self, out: mpsc::Sender<RawRecord>, shutdown: Shutdown);
}
