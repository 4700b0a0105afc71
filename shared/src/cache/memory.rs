//! Embedded cache: a map with lazy expiry and an occasional sweep.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, CacheError, Quota, Throttle};

/// Writes between sweeps of expired keys.
const SWEEP_EVERY: u32 = 1024;

pub struct MemoryCache {
    /// Zero of the rate limiter's microsecond clock.
    epoch: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, (Bytes, Option<Instant>)>,
    writes: u32,
    /// Theoretical arrival time per throttled key, microseconds since
    /// `epoch`; one in the past is the same as none. A namespace of its own:
    /// `get` does not see these keys.
    arrivals: HashMap<String, u64>,
    throttles: u32,
    /// Lease holder and expiry per lease key.
    leases: HashMap<String, (String, Instant)>,
}

impl MemoryCache {
    pub fn new() -> MemoryCache {
        MemoryCache { epoch: Instant::now(), state: Mutex::default() }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

impl Default for MemoryCache {
    fn default() -> MemoryCache {
        MemoryCache::new()
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
        let state = self.state.lock().expect("cache lock");
        let now = Instant::now();
        Ok(state.entries.get(key).filter(|(_, exp)| live(exp, now)).map(|(v, _)| v.clone()))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut state = self.state.lock().expect("cache lock");
        let now = Instant::now();
        state.writes += 1;
        if state.writes.is_multiple_of(SWEEP_EVERY) {
            state.entries.retain(|_, (_, exp)| live(exp, now));
        }
        state.entries.insert(key.to_string(), (value, ttl.map(|ttl| now + ttl)));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut state = self.state.lock().expect("cache lock");
        let now = Instant::now();
        Ok(state.entries.remove(key).is_some_and(|(_, exp)| live(&exp, now)))
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

    #[test]
    fn an_idle_key_is_whole_again_after_the_window() {
        let outcomes = run(&[0, 0, 0, 0, 400]);
        assert!(outcomes[4].allowed);
        assert_eq!(outcomes[4].remaining, 3);
        assert_eq!(outcomes[4].reset_after, Duration::from_millis(100));
    }
}
