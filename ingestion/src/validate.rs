//! Validation of raw records into quotes, with a reason label per rejection.

use chrono::{DateTime, Duration, Utc};
use lizards_shared::Symbol;

use crate::sources::RawRecord;

/// How far in the future a source time may be.
pub const MAX_FUTURE: Duration = Duration::minutes(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("price must be finite and greater than zero")]
    InvalidPrice,
    #[error("timestamp is more than 5 minutes in the future")]
    FutureTimestamp,
    #[error("timestamp is older than the retention window")]
    TooOld,
    #[error("invalid symbol")]
    InvalidSymbol,
    #[error("duplicate (same symbol, source and timestamp)")]
    Duplicate,
    #[error("volume must be finite and not negative")]
    InvalidVolume,
    #[error("a new symbol, and ingestion already publishes as many as INGEST_MAX_SYMBOLS allows")]
    TooManySymbols,
}

impl Reject {
    pub const ALL: [Reject; 7] = [
        Reject::InvalidPrice,
        Reject::FutureTimestamp,
        Reject::TooOld,
        Reject::InvalidSymbol,
        Reject::Duplicate,
        Reject::InvalidVolume,
        Reject::TooManySymbols,
    ];

    /// Metric label and stored reason.
    pub fn label(self) -> &'static str {
        match self {
            Reject::InvalidPrice => "invalid_price",
            Reject::FutureTimestamp => "future_timestamp",
            Reject::TooOld => "too_old",
            Reject::InvalidSymbol => "invalid_symbol",
            Reject::Duplicate => "duplicate",
            Reject::InvalidVolume => "invalid_volume",
            Reject::TooManySymbols => "too_many_symbols",
        }
    }
}

/// Checks everything but duplicates (the raw store's unique key decides those).
pub fn validate(record: &RawRecord, now: DateTime<Utc>, retention: Duration) -> Result<Symbol, Reject> {
    let symbol = Symbol::parse(&record.symbol).map_err(|_| Reject::InvalidSymbol)?;
    if !record.price.is_finite() || record.price <= 0.0 {
        return Err(Reject::InvalidPrice);
    }
    if record.volume.is_some_and(|v| !v.is_finite() || v < 0.0) {
        return Err(Reject::InvalidVolume);
    }
    if record.ts > now + MAX_FUTURE {
        return Err(Reject::FutureTimestamp);
    }
    if record.ts < now - retention {
        return Err(Reject::TooOld);
    }
    Ok(symbol)
}

/// Whether `price` moved more than `pct` % against `last`.
pub fn is_jump(last: f64, price: f64, pct: f64) -> bool {
    last > 0.0 && ((price - last) / last).abs() * 100.0 > pct
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(symbol: &str, price: f64, ts: DateTime<Utc>) -> RawRecord {
        RawRecord { source: "t".into(), symbol: symbol.into(), price, ts, volume: None, body: serde_json::Value::Null }
    }

    #[test]
    fn each_problem_has_its_reason() {
        let now = Utc::now();
        let keep = Duration::days(14);
        assert!(validate(&record("AAPL", 1.0, now), now, keep).is_ok());
        assert_eq!(validate(&record("AA PL", 1.0, now), now, keep), Err(Reject::InvalidSymbol));
        for price in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(validate(&record("AAPL", price, now), now, keep), Err(Reject::InvalidPrice));
        }
        let future = now + Duration::minutes(6);
        assert_eq!(validate(&record("AAPL", 1.0, future), now, keep), Err(Reject::FutureTimestamp));
        let old = now - Duration::days(15);
        assert_eq!(validate(&record("AAPL", 1.0, old), now, keep), Err(Reject::TooOld));
        let mut r = record("AAPL", 1.0, now);
        r.volume = Some(-5.0);
        assert_eq!(validate(&r, now, keep), Err(Reject::InvalidVolume));
    }

    #[test]
    fn jumps_are_relative_moves_beyond_the_threshold() {
        assert!(is_jump(100.0, 121.0, 20.0));
        assert!(is_jump(100.0, 79.0, 20.0));
        assert!(!is_jump(100.0, 119.0, 20.0));
        assert!(!is_jump(0.0, 119.0, 20.0));
    }
}
