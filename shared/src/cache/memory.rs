//! Embedded cache: a map with lazy expiry and an occasional sweep.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, CacheError};

/// Writes between sweeps of expired keys.
const SWEEP_EVERY: u32 = 1024;

#[derive(Default)]
pub struct MemoryCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, (Bytes, Option<Instant>)>,
    writes: u32,
}

impl MemoryCache {
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }
}

fn live(expires: &Option<Instant>, now: Instant) -> bool {
    expires.is_none_or(|at| at > now)
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
}
