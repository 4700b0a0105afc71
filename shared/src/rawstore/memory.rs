//! Embedded raw store: capped (oldest dropped first) with a TTL.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{RawDocument, RawOutcome, RawStore, RawStoreError};

type Key = (String, String, DateTime<Utc>);

pub struct MemoryRawStore {
    cap: usize,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Insertion order, for the cap and the TTL.
    order: VecDeque<(String, DateTime<Utc>)>,
    docs: HashMap<String, (RawDocument, Option<RawOutcome>)>,
    keys: HashMap<Key, String>,
}

impl MemoryRawStore {
    pub fn new(cap: usize, ttl: Duration) -> MemoryRawStore {
        MemoryRawStore { cap: cap.max(1), ttl, state: Mutex::new(State::default()) }
    }
}

fn key(doc: &RawDocument) -> Key {
    (doc.source.clone(), doc.symbol.clone(), doc.source_ts)
}

impl State {
    fn evict(&mut self, cap: usize, ttl: Duration) {
        // A TTL reaching before the calendar's start keeps everything
        // (subtracting it would overflow and panic).
        let oldest_kept = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| Utc::now().checked_sub_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        while let Some((id, received_at)) = self.order.front() {
            if self.order.len() < cap && *received_at >= oldest_kept {
                break;
            }
            if let Some((doc, _)) = self.docs.remove(id) {
                self.keys.remove(&key(&doc));
            }
            self.order.pop_front();
        }
    }
}

#[async_trait]
impl RawStore for MemoryRawStore {
    async fn insert(&self, doc: RawDocument) -> Result<String, RawStoreError> {
        let mut state = self.state.lock().expect("raw store lock");
        state.evict(self.cap, self.ttl);
        let key = key(&doc);
        if state.keys.contains_key(&key) {
            return Err(RawStoreError::Duplicate);
        }
        state.next_id += 1;
        let id = format!("raw-{:016x}", state.next_id);
        state.order.push_back((id.clone(), doc.received_at));
        state.keys.insert(key, id.clone());
        state.docs.insert(id.clone(), (doc, None));
        Ok(id)
    }

    async fn set_outcome(&self, id: &str, outcome: RawOutcome) -> Result<(), RawStoreError> {
        if let Some(entry) = self.state.lock().expect("raw store lock").docs.get_mut(id) {
            entry.1 = Some(outcome);
        }
        Ok(())
    }

    async fn reclaim(&self, doc: &RawDocument, reason: &str) -> Result<Option<String>, RawStoreError> {
        let mut state = self.state.lock().expect("raw store lock");
        let Some(id) = state.keys.get(&key(doc)).cloned() else { return Ok(None) };
        let Some((_, outcome)) = state.docs.get_mut(&id) else { return Ok(None) };
        if !matches!(outcome, Some(RawOutcome::Rejected { reason: stored }) if stored == reason) {
            return Ok(None);
        }
        *outcome = None;
        Ok(Some(id))
    }

    async fn get(&self, id: &str) -> Result<Option<(RawDocument, Option<RawOutcome>)>, RawStoreError> {
        Ok(self.state.lock().expect("raw store lock").docs.get(id).cloned())
    }

    async fn ping(&self) -> Result<(), RawStoreError> {
        Ok(())
    }
}
