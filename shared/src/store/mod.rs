//! The SQL store port (docs/architecture.md, "Persistence"): quotes and the latest quote per
//! symbol. Embedded adapter: SQLite; real adapter: PostgreSQL.

pub mod postgres;
pub mod sqlite;

use std::{fmt, str::FromStr};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// Rows one retention DELETE removes at most.
pub const DELETE_CHUNK: i64 = 10_000;

pub use postgres::PostgresStore;
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

/// The width of an OHLC candle. Buckets are aligned on the Unix epoch in
/// UTC, so a `1d` candle runs from midnight to midnight UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandleInterval {
    OneMinute,
    FiveMinutes,
    FifteenMinutes,
    OneHour,
    OneDay,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interval must be one of 1m, 5m, 15m, 1h, 1d")]
pub struct CandleIntervalError;

impl CandleInterval {
    pub const ALL: [CandleInterval; 5] = [
        CandleInterval::OneMinute,
        CandleInterval::FiveMinutes,
        CandleInterval::FifteenMinutes,
        CandleInterval::OneHour,
        CandleInterval::OneDay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CandleInterval::OneMinute => "1m",
            CandleInterval::FiveMinutes => "5m",
            CandleInterval::FifteenMinutes => "15m",
            CandleInterval::OneHour => "1h",
            CandleInterval::OneDay => "1d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            CandleInterval::OneMinute => 60,
            CandleInterval::FiveMinutes => 5 * 60,
            CandleInterval::FifteenMinutes => 15 * 60,
            CandleInterval::OneHour => 60 * 60,
            CandleInterval::OneDay => 24 * 60 * 60,
        }
    }

    pub fn micros(self) -> i64 {
        self.seconds() * 1_000_000
    }

    /// The start of the bucket holding `ts`.
    pub fn bucket_start(self, ts: DateTime<Utc>) -> DateTime<Utc> {
        let us = crate::time::micros(&ts);
        crate::time::from_micros(us - us.rem_euclid(self.micros()))
    }
}

impl FromStr for CandleInterval {
    type Err = CandleIntervalError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CandleInterval::ALL.into_iter().find(|i| i.as_str() == text).ok_or(CandleIntervalError)
    }
}

impl fmt::Display for CandleInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Open, high, low and close prices of one bucket; `volume` is the sum of
/// the quotes' volumes (`None` when none of them had one).
#[derive(Debug, Clone, PartialEq)]
pub struct Candle {
    pub start: DateTime<Utc>,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: Option<f64>,
    pub count: u32,
}

/// The earliest time a candle query reads: the start of the bucket
/// `limit - 1` buckets before the one holding `newest` (the newest quote in
/// range), or `from` if later. Bounding the scan by time keeps a query for
/// the last 500 candles from aggregating weeks of quotes.
fn candle_window_start(
    interval: CandleInterval,
    from: Option<DateTime<Utc>>,
    newest: DateTime<Utc>,
    limit: u32,
) -> DateTime<Utc> {
    let buckets_before = i64::from(limit.max(1) - 1);
    let first_bucket = crate::time::micros(&interval.bucket_start(newest)) - buckets_before * interval.micros();
    let first_bucket = crate::time::from_micros(first_bucket);
    from.map_or(first_bucket, |from| from.max(first_bucket))
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
    /// OHLC candles of the quotes within `[from, to]`, oldest first: those
    /// of the newest `limit` buckets, counted back from the bucket of the
    /// newest quote in range. Buckets without quotes have no candle; a
    /// bucket cut by `from` or `to` aggregates only the quotes inside.
    /// Open and close are the first and last prices by source time.
    async fn candles(
        &self,
        symbol: &Symbol,
        interval: CandleInterval,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Candle>, StoreError>;
    /// Rows stored for a symbol (tests and admin).
    async fn count(&self, symbol: &Symbol) -> Result<u64, StoreError>;
    /// Deletes quotes with a source time before `cutoff` (retention), in
    /// chunks so no statement runs long; how many went.
    async fn delete_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Drops from the tracked symbols (`latest_quotes`) those whose latest
    /// quote arrived before `idle_before`, except `keep`; the ones dropped.
    /// Their stored quotes stay until they age out.
    async fn untrack_idle(&self, idle_before: DateTime<Utc>, keep: &[Symbol]) -> Result<Vec<Symbol>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("valid time").to_utc()
    }

    #[test]
    fn candle_interval_parses_its_five_names_and_nothing_else() {
        for interval in CandleInterval::ALL {
            assert_eq!(interval.as_str().parse(), Ok(interval));
        }
        for text in ["", "1s", "2m", "1M", "1H", "1 m", "60", "1d "] {
            assert_eq!(text.parse::<CandleInterval>(), Err(CandleIntervalError), "{text:?}");
        }
    }

    #[test]
    fn buckets_are_aligned_on_the_epoch_in_utc() {
        let ts = at("2024-09-14T12:34:56.789012Z");
        let starts: Vec<String> =
            CandleInterval::ALL.iter().map(|i| crate::time::rfc3339(&i.bucket_start(ts))).collect();
        assert_eq!(
            starts,
            [
                "2024-09-14T12:34:00Z",
                "2024-09-14T12:30:00Z",
                "2024-09-14T12:30:00Z",
                "2024-09-14T12:00:00Z",
                "2024-09-14T00:00:00Z"
            ]
        );
        let before_epoch = at("1969-12-31T23:59:30Z");
        assert_eq!(CandleInterval::OneMinute.bucket_start(before_epoch), at("1969-12-31T23:59:00Z"));
    }

    #[test]
    fn candle_window_reaches_back_limit_buckets_from_the_newest_quote_unless_from_is_later() {
        let newest = at("2024-09-14T12:34:56Z");
        let minute = CandleInterval::OneMinute;
        assert_eq!(candle_window_start(minute, None, newest, 1), at("2024-09-14T12:34:00Z"));
        assert_eq!(candle_window_start(minute, None, newest, 3), at("2024-09-14T12:32:00Z"));
        let from = Some(at("2024-09-14T12:33:30Z"));
        assert_eq!(candle_window_start(minute, from, newest, 10), at("2024-09-14T12:33:30Z"));
        assert_eq!(candle_window_start(minute, from, newest, 1), at("2024-09-14T12:34:00Z"));
    }
}
