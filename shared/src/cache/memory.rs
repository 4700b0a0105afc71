//! Embedded cache: keyed bytes in a map bounded by bytes (moka, least
//! recently used evicted first), each entry with its own expiry; rate-limit
//! arrivals and leases in small maps of their own, swept now and then.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use moka::{Expiry, notification::RemovalCause, policy::EvictionPolicy, sync::Cache as Map};
use prometheus::{
    IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::{Cache, CacheError, Quota, Throttle};

/// Writes between sweeps of expired rate-limit arrivals.
const SWEEP_EVERY: u32 = 1024;
/// Bytes an entry costs beyond its key and value: the map's node, the
/// expiry bookkeeping and the allocations' headers, rounded up.
const ENTRY_OVERHEAD: usize = 160;
/// Default bound of the embedded cache.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

pub struct MemoryCache {
    entries: Map<String, Entry>,
    metrics: CacheMetrics,
    /// Whether a role already reports this cache's metrics.
    reported: AtomicBool,
    /// Zero of the rate limiter's microsecond clock.
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Option<Duration>,
    expires: Option<Instant>,
}

/// Each entry lives for its own TTL from its last write; an overwrite
/// without one keeps it until evicted.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: std::time::Instant) -> Option<Duration> {
        entry.ttl
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        entry.ttl
    }
}

#[derive(Default)]
struct State {
    /// Theoretical arrival time per throttled key, microseconds since
    /// `epoch`; one in the past is the same as none. A namespace of its own:
    /// `get` does not see these keys.
    arrivals: HashMap<String, u64>,
    throttles: u32,
    /// Lease holder and expiry per lease key.
    leases: HashMap<String, (String, Instant)>,
}

impl MemoryCache {
    /// A cache that holds at most `max_bytes` of keys, values and their
    /// bookkeeping; past it, the least recently used entries go.
    pub fn new(max_bytes: u64) -> MemoryCache {
        let metrics = CacheMetrics::new(max_bytes);
        let evictions = metrics.evictions.clone();
        let entries = Map::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            // Recent entries stay: LRU admits every new entry, where the
            // default TinyLFU may refuse one seen only once.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_, _, cause| match cause {
                RemovalCause::Size => evictions.with_label_values(&["size"]).inc(),
                RemovalCause::Expired => evictions.with_label_values(&["expired"]).inc(),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        MemoryCache {
            entries: entries.clone(),
            metrics: CacheMetrics { map: Some(entries), ..metrics },
            reported: AtomicBool::new(false),
            epoch: Instant::now(),
            state: Mutex::default(),
        }
    }

    /// Bytes held now (keys, values and bookkeeping), after pending
    /// evictions have run.
    pub fn weighed_bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for MemoryCache {
    fn default() -> MemoryCache {
        MemoryCache::new(DEFAULT_MAX_BYTES)
    }
}

/// The embedded cache's size and evictions, read at scrape time.
#[derive(Clone)]
struct CacheMetrics {
    map: Option<Map<String, Entry>>,
    bytes: IntGauge,
    max_bytes: IntGauge,
    entries: IntGauge,
    evictions: IntCounterVec,
}

impl CacheMetrics {
    fn new(max_bytes: u64) -> CacheMetrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid gauge");
        let max = gauge("lizards_cache_max_bytes", "Bound of the embedded cache (CACHE_MAX_BYTES).");
        max.set(i64::try_from(max_bytes).unwrap_or(i64::MAX));
        let evictions = IntCounterVec::new(
            Opts::new(
                "lizards_cache_evictions_total",
                "Entries the embedded cache dropped, by reason (size, expired).",
            ),
            &["reason"],
        )
        .expect("valid counter");
        for reason in ["size", "expired"] {
            evictions.with_label_values(&[reason]);
        }
        CacheMetrics {
            map: None,
            bytes: gauge("lizards_cache_bytes", "Bytes the embedded cache holds (keys, values, bookkeeping)."),
            max_bytes: max,
            entries: gauge("lizards_cache_entries", "Entries in the embedded cache."),
            evictions,
        }
    }
}

impl Collector for CacheMetrics {
    fn desc(&self) -> Vec<&Desc> {
        [self.bytes.desc(), self.max_bytes.desc(), self.entries.desc(), self.evictions.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(map) = &self.map {
            map.run_pending_tasks();
            self.bytes.set(i64::try_from(map.weighted_size()).unwrap_or(i64::MAX));
            self.entries.set(i64::try_from(map.entry_count()).unwrap_or(i64::MAX));
        }
        [self.bytes.collect(), self.max_bytes.collect(), self.entries.collect(), self.evictions.collect()].concat()
    }
}

fn live(expires: &Option<Instant>, now: Instant) -> bool {
    expires.is_none_or(|at| at > now)
}

/// One GCRA step at `now` (microseconds) on the key's stored arrival time:
/// the outcome, and the arrival time to store when the request is allowed.
/// The Redis adapter's script is the same arithmetic.
fn gcra(stored: Option<u64>, now: u64, quota: Quota, cost: u32) -> (Throttle, Option<u64>) {
    let interval = quota.interval_micros();
    let window = interval * u64::from(quota.limit.max(1));
    let tat = stored.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(interval.saturating_mul(u64::from(cost.max(1))));
    // Saturating: the in-process clock starts at zero, before a first window.
    let allow_at = new_tat.saturating_sub(window);
    if now < allow_at {
        let denied = Throttle {
            allowed: false,
            remaining: 0,
            reset_after: Duration::from_micros(tat - now),
            retry_after: Duration::from_micros(allow_at - now),
        };
        return (denied, None);
    }
    let ahead = new_tat - now;
    let allowed = Throttle {
        allowed: true,
        remaining: u32::try_from((window - ahead) / interval).unwrap_or(u32::MAX),
        reset_after: Duration::from_micros(ahead),
        retry_after: Duration::ZERO,
    };
    (allowed, Some(new_tat))
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.entries.get(key).filter(|entry| live(&entry.expires, Instant::now())).map(|entry| entry.value))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let expires = ttl.map(|ttl| Instant::now() + ttl);
        self.entries.insert(key.to_string(), Entry { value, ttl, expires });
        // Evict now, not when the write log next fills: one cached
        // response may weigh megabytes.
        self.entries.run_pending_tasks();
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.entries.remove(key).is_some_and(|entry| live(&entry.expires, Instant::now())))
    }

    fn metrics(&self) -> Option<Box<dyn Collector>> {
        let first = !self.reported.swap(true, Ordering::Relaxed);
        first.then(|| Box::new(self.metrics.clone()) as Box<dyn Collector>)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    async fn throttle(&self, key: &str, quota: Quota, cost: u32) -> Result<Throttle, CacheError> {
        let mut state = self.state.lock().expect("cache lock");
        let now = self.now_micros();
        state.throttles += 1;
        if state.throttles.is_multiple_of(SWEEP_EVERY) {
            state.arrivals.retain(|_, tat| *tat > now);
        }
        let (throttle, new_tat) = gcra(state.arrivals.get(key).copied(), now, quota, cost);
        if let Some(new_tat) = new_tat {
            state.arrivals.insert(key.to_string(), new_tat);
        }
        Ok(throttle)
    }

    async fn lease(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut state = self.state.lock().expect("cache lock");
        let now = Instant::now();
        let free = state.leases.get(key).is_none_or(|(holder, until)| holder == owner || *until <= now);
        if free {
            state.leases.insert(key.to_string(), (owner.to_string(), now + ttl));
        }
        Ok(free)
    }

    async fn release(&self, key: &str, owner: &str) -> Result<(), CacheError> {
        let mut state = self.state.lock().expect("cache lock");
        if state.leases.get(key).is_some_and(|(holder, _)| holder == owner) {
            state.leases.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;

    /// 4 per 400 ms: one slot every 100 ms.
    fn quota() -> Quota {
        Quota::new(4, Duration::from_millis(400))
    }

    /// Runs `gcra` at each time in `times` (ms), threading the stored value.
    fn run(times: &[u64]) -> Vec<Throttle> {
        let mut stored = None;
        times
            .iter()
            .map(|&at| {
                let (throttle, new_tat) = gcra(stored, at * MS, quota(), 1);
                stored = new_tat.or(stored);
                throttle
            })
            .collect()
    }

    #[test]
    fn a_burst_of_limit_is_allowed_and_the_next_denied() {
        let outcomes = run(&[1000, 1000, 1000, 1000, 1000]);
        let remaining: Vec<u32> = outcomes[..4].iter().map(|t| t.remaining).collect();
        assert_eq!(remaining, [3, 2, 1, 0]);
        assert!(outcomes[..4].iter().all(|t| t.allowed && t.retry_after.is_zero()));
        let reset: Vec<u64> = outcomes[..4].iter().map(|t| t.reset_after.as_millis() as u64).collect();
        assert_eq!(reset, [100, 200, 300, 400]);
        let denied = outcomes[4];
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Duration::from_millis(100));
        assert_eq!(denied.reset_after, Duration::from_millis(400));
    }

    #[test]
    fn one_slot_comes_back_every_interval() {
        let outcomes = run(&[0, 0, 0, 0, 50, 100, 100, 150, 250]);
        let allowed: Vec<bool> = outcomes.iter().map(|t| t.allowed).collect();
        assert_eq!(allowed, [true, true, true, true, false, true, false, false, true]);
        assert_eq!(outcomes[4].retry_after, Duration::from_millis(50));
        assert_eq!(outcomes[7].retry_after, Duration::from_millis(50));
        assert_eq!(outcomes[8].remaining, 0, "the slot back at 200 ms went at 250 ms; the next is due at 300 ms");
    }

    #[tokio::test]
    async fn an_entry_read_often_outlives_newer_ones_read_never() {
        let cache = MemoryCache::new(64 * 1024);
        cache.set("session:kept", Bytes::from_static(b"s"), None).await.unwrap();
        for i in 0..2_000 {
            cache.set(&format!("other:{i}"), Bytes::from(vec![0; 100]), None).await.unwrap();
            if i % 50 == 0 {
                assert!(cache.get("session:kept").await.unwrap().is_some(), "used entry evicted at write {i}");
            }
        }
        assert!(cache.weighed_bytes() <= 64 * 1024);
    }

    #[test]
    fn an_idle_key_is_whole_again_after_the_window() {
        let outcomes = run(&[0, 0, 0, 0, 400]);
        assert!(outcomes[4].allowed);
        assert_eq!(outcomes[4].remaining, 3);
        assert_eq!(outcomes[4].reset_after, Duration::from_millis(100));
    }
}
