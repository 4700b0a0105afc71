//! The cache port (Redis): keyed bytes with optional expiry, used for
//! sessions, caching, rate-limit and lease state.
//!
//! Rate limiting is GCRA (the generic cell rate algorithm): per key the
//! store keeps one number, the theoretical arrival time (TAT) of the next
//! request if requests came exactly one emission interval `T = window /
//! limit` apart. A request is allowed while the TAT it would push out lies
//! at most `limit * T` (the window) ahead of now, so a burst of `limit` is
//! allowed at once and one slot comes back every `T`. Both adapters do the
//! same integer arithmetic in microseconds, on the store's own clock.

pub mod memory;
pub mod redis;

use std::{fmt, str::FromStr, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;

pub use self::redis::RedisCache;
pub use memory::MemoryCache;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Stores `value`; it expires after `ttl` when given.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError>;
    /// Returns whether the key existed.
    async fn delete(&self, key: &str) -> Result<bool, CacheError>;
    async fn ping(&self) -> Result<(), CacheError>;
    /// Counts `cost` requests at once (all or none) against `quota` under
    /// `key` (GCRA, atomic across every client of the same store). A cost
    /// above one lets a caller take a batch of slots in one round trip.
    async fn throttle(&self, key: &str, quota: Quota, cost: u32) -> Result<Throttle, CacheError>;
    /// Takes the lease `key` for `owner` until `ttl` from now, or extends it
    /// when `owner` already holds it; `false` while another owner holds it.
    /// Atomic across every client of the same store (one poller per source
    /// across ingestion instances). Leases live in a namespace of their own.
    async fn lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CacheError>;
    /// Gives the lease up if `owner` holds it, so another owner can take it
    /// at once instead of after its expiry.
    async fn release(&self, key: &str, owner: &str) -> Result<(), CacheError>;
    /// The store's own size metrics, handed out once per process so the
    /// roles sharing an embedded cache report it once; `None` for a store
    /// that reports itself (Redis has its own exporter).
    fn metrics(&self) -> Option<Box<dyn prometheus::core::Collector>> {
        None
    }
}

/// Longest quota window: keeps the stores' microsecond timestamps exact
/// (Redis scripts compute in doubles) with a wide margin.
pub const MAX_QUOTA_WINDOW: Duration = Duration::from_secs(366 * 86_400);

/// `limit` requests per `window`, bursts up to `limit` allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

/// Why a quota (`120/1m`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("quota {0:?} is not LIMIT/WINDOW, e.g. 120/1m")]
    Format(String),
    #[error("quota limit {0:?} is not a whole number of requests")]
    Limit(String),
    #[error("quota window {window:?} is not a duration such as 1m, 60s or 1h: {reason}")]
    Window { window: String, reason: String },
    #[error("quota limit must be at least 1 request")]
    ZeroLimit,
    #[error("quota window must be longer than zero")]
    ZeroWindow,
    #[error("quota window must be at most {}", humantime::format_duration(MAX_QUOTA_WINDOW))]
    WindowTooLong,
    #[error("quota allows more than one request per microsecond")]
    TooFine,
}

impl Quota {
    /// Panics unless `limit` and `window` are positive, the window is at
    /// most [`MAX_QUOTA_WINDOW`] and requests are at least a microsecond
    /// apart; [`Quota::try_new`] or parsing report those as errors.
    pub fn new(limit: u32, window: Duration) -> Quota {
        match Quota::try_new(limit, window) {
            Ok(quota) => quota,
            Err(error) => panic!("invalid quota {limit}/{window:?}: {error}"),
        }
    }

    pub fn try_new(limit: u32, window: Duration) -> Result<Quota, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if window.is_zero() {
            return Err(QuotaError::ZeroWindow);
        }
        if window > MAX_QUOTA_WINDOW {
            return Err(QuotaError::WindowTooLong);
        }
        if window.as_micros() < u128::from(limit) {
            return Err(QuotaError::TooFine);
        }
        Ok(Quota { limit, window })
    }

    /// The emission interval `T` in whole microseconds (at least one, even
    /// for a hand-built quota that `new` would refuse). Rounding down makes
    /// the effective window `limit * T` at most a microsecond per request
    /// shorter than `window`; a burst of exactly `limit` stays allowed.
    pub(crate) fn interval_micros(&self) -> u64 {
        let window = self.window.min(MAX_QUOTA_WINDOW).as_micros() as u64;
        (window / u64::from(self.limit.max(1))).max(1)
    }
}

impl FromStr for Quota {
    type Err = QuotaError;

    /// `LIMIT/WINDOW` with a humantime window: `120/1m`, `10/60s`,
    /// `1000/1h`; a bare unit means one of it (`10/min`).
    fn from_str(text: &str) -> Result<Quota, QuotaError> {
        let (limit, window) = text.split_once('/').ok_or_else(|| QuotaError::Format(text.to_string()))?;
        let (limit, window) = (limit.trim(), window.trim());
        let limit: u32 = limit.parse().map_err(|_| QuotaError::Limit(limit.to_string()))?;
        let parsed = if window.starts_with(|c: char| c.is_ascii_alphabetic()) {
            humantime::parse_duration(&format!("1{window}"))
        } else {
            humantime::parse_duration(window)
        };
        let window =
            parsed.map_err(|error| QuotaError::Window { window: window.to_string(), reason: error.to_string() })?;
        Quota::try_new(limit, window)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, humantime::format_duration(self.window))
    }
}

/// The outcome of one [`Cache::throttle`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub allowed: bool,
    /// Requests that would still be allowed right now, after this one.
    pub remaining: u32,
    /// Until the quota is whole again (all `limit` requests available).
    pub reset_after: Duration,
    /// When denied: until the next request can be allowed; zero when allowed.
    pub retry_after: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(text: &str) -> Result<Quota, QuotaError> {
        text.parse()
    }

    #[test]
    fn quotas_parse_from_limit_slash_window() {
        assert_eq!(quota("120/1m"), Ok(Quota::new(120, Duration::from_secs(60))));
        assert_eq!(quota("10/60s"), Ok(Quota::new(10, Duration::from_secs(60))));
        assert_eq!(quota("1000/1h"), Ok(Quota::new(1000, Duration::from_secs(3600))));
        assert_eq!(quota("10/500ms"), Ok(Quota::new(10, Duration::from_millis(500))));
        assert_eq!(quota(" 30 / 1m 30s "), Ok(Quota::new(30, Duration::from_secs(90))));
        assert_eq!(quota("10/min"), Ok(Quota::new(10, Duration::from_secs(60))));
    }

    #[test]
    fn bad_quotas_are_refused_with_the_reason() {
        assert!(matches!(quota("120"), Err(QuotaError::Format(_))));
        assert!(matches!(quota(""), Err(QuotaError::Format(_))));
        assert!(matches!(quota("many/1m"), Err(QuotaError::Limit(_))));
        assert!(matches!(quota("-1/1m"), Err(QuotaError::Limit(_))));
        assert!(matches!(quota("/1m"), Err(QuotaError::Limit(_))));
        assert!(matches!(quota("99999999999/1m"), Err(QuotaError::Limit(_))));
        assert!(matches!(quota("10/"), Err(QuotaError::Window { .. })));
        assert!(matches!(quota("10/soon"), Err(QuotaError::Window { .. })));
        assert!(matches!(quota("10/1m/2"), Err(QuotaError::Window { .. })));
        assert_eq!(quota("0/1m"), Err(QuotaError::ZeroLimit));
        assert_eq!(quota("10/0s"), Err(QuotaError::ZeroWindow));
        assert_eq!(quota("10/2years"), Err(QuotaError::WindowTooLong));
        assert_eq!(quota("2000000/1s"), Err(QuotaError::TooFine));
        let message = quota("10/soon").unwrap_err().to_string();
        assert!(message.contains("\"soon\"") && message.contains("1m"), "{message}");
    }

    #[test]
    fn quotas_display_as_they_parse() {
        for text in ["120/1m", "10/1s", "1000/1h", "10/500ms", "30/1m 30s"] {
            assert_eq!(quota(text).expect("valid").to_string(), text);
        }
    }

    #[test]
    #[should_panic(expected = "at least 1 request")]
    fn a_zero_limit_quota_cannot_be_built() {
        Quota::new(0, Duration::from_secs(1));
    }

    #[test]
    #[should_panic(expected = "longer than zero")]
    fn a_zero_window_quota_cannot_be_built() {
        Quota::new(1, Duration::ZERO);
    }

    #[test]
    fn the_emission_interval_is_window_over_limit_in_microseconds() {
        assert_eq!(Quota::new(120, Duration::from_secs(60)).interval_micros(), 500_000);
        assert_eq!(Quota::new(7, Duration::from_secs(1)).interval_micros(), 142_857);
        assert_eq!(Quota { limit: 0, window: Duration::ZERO }.interval_micros(), 1);
    }
}
