//! The SQL store port (SPEC §6 persistence): quotes and the latest quote per
//! symbol. Embedded adapter: SQLite; real adapter: PostgreSQL.

pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use sqlite::SqliteStore;

use crate::{Quote, Symbol};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot open database: {0}")]
    Open(String),
}

/// Mean of the last N prices, and how many were actually available.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mean {
    pub mean: f64,
    pub count: u32,
}

#[async_trait]
pub trait QuoteStore: Send + Sync + 'static {
    /// Inserts a batch in one transaction and upserts `latest_quotes`;
    /// quotes already stored (same symbol, source, ts) are skipped, so a
    /// redelivered batch is idempotent. Returns how many rows were new.
    async fn insert_batch(&self, quotes: &[Quote]) -> Result<u64, StoreError>;
    async fn latest(&self, symbol: &Symbol) -> Result<Option<Quote>, StoreError>;
    async fn latest_all(&self) -> Result<Vec<Quote>, StoreError>;
    /// Quotes newest first within `[from, to]`.
    async fn history(
        &self,
        symbol: &Symbol,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Quote>, StoreError>;
    async fn mean_of_last(&self, symbol: &Symbol, last: u32) -> Result<Option<Mean>, StoreError>;
    /// Rows stored for a symbol (tests and admin).
    async fn count(&self, symbol: &Symbol) -> Result<u64, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}
