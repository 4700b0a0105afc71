//! The fan-out hub: which connection watches which symbol, and the latest
//! price per watched symbol. Each quote is serialized once; connections
//! watching the same symbols of a batch share one frame.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use lizards_shared::{
    Quote, Symbol,
    accounts::UserId,
    protocol::{PriceFragment, price_update},
    quote::newest_per_symbol,
};
use tokio::sync::watch;

use crate::{metrics::Metrics, ws::outbox::Outbox};

pub type ConnId = u64;

pub struct Hub {
    state: Mutex<HubState>,
    /// Bumped when a symbol gains its first or loses its last watcher;
    /// every task that follows demand (broker bindings, the demand set)
    /// holds a receiver.
    demand: watch::Sender<u64>,
    metrics: Metrics,
}

#[derive(Default)]
struct HubState {
    slots: HashMap<Symbol, Slot>,
    /// Authenticated connections by user, for `alert` frames.
    users: HashMap<UserId, HashMap<ConnId, Arc<Outbox>>>,
    next_conn: ConnId,
}

struct Slot {
    /// The copy of the symbol every subscriber's outbox and every fragment
    /// shares, so outboxes find a fragment's symbol by its pointer.
    symbol: Symbol,
    subscribers: HashMap<ConnId, Arc<Outbox>>,
    latest: Option<PriceFragment>,
}

impl Hub {
    pub fn new(metrics: Metrics) -> Hub {
        Hub { state: Mutex::new(HubState::default()), demand: watch::Sender::new(0), metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().expect("hub lock")
    }

    pub fn next_conn_id(&self) -> ConnId {
        let mut state = self.lock();
        state.next_conn += 1;
        state.next_conn
    }

    /// Adds `conn` as a watcher of `symbols` and offers it their latest
    /// prices; returns the symbols that had none yet (the caller looks their
    /// snapshot up elsewhere).
    pub fn subscribe(&self, conn: ConnId, outbox: &Arc<Outbox>, symbols: &[Symbol]) -> Vec<Symbol> {
        let mut snapshot = Vec::new();
        let mut missing = Vec::new();
        let mut changed = false;
        {
            let mut state = self.lock();
            let mut shared = Vec::with_capacity(symbols.len());
            for symbol in symbols {
                let slot = state.slots.entry(symbol.clone()).or_insert_with(|| Slot {
                    symbol: symbol.clone(),
                    subscribers: HashMap::new(),
                    latest: None,
                });
                shared.push(slot.symbol.clone());
                if slot.subscribers.insert(conn, outbox.clone()).is_none() {
                    self.metrics.ws_subscriptions.inc();
                    changed |= slot.subscribers.len() == 1;
                }
                match &slot.latest {
                    Some(fragment) => snapshot.push(fragment.as_snapshot()),
                    None => missing.push(symbol.clone()),
                }
            }
            // Under the hub's lock, so no price reaches the outbox before
            // it knows the symbols (the lock order is hub, then outbox).
            outbox.watch(&shared);
        }
        self.metrics.ws_updates_conflated.inc_by(outbox.offer_fragments(&snapshot));
        if changed {
            self.demand.send_modify(|version| *version = version.wrapping_add(1));
        }
        missing
    }

    pub fn unsubscribe(&self, conn: ConnId, symbols: &[Symbol]) {
        let mut changed = false;
        {
            let mut state = self.lock();
            for symbol in symbols {
                if let Some(slot) = state.slots.get_mut(symbol)
                    && slot.subscribers.remove(&conn).is_some()
                {
                    self.metrics.ws_subscriptions.dec();
                    if slot.subscribers.is_empty() {
                        // Unwatched, the symbol's queue binding goes away and
                        // its price would go stale: forget it.
                        state.slots.remove(symbol);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.demand.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Takes a snapshot found outside the live feed (SQL or the latest
    /// cache). If it is newer than what the hub has, it becomes the symbol's
    /// latest price and goes to every current subscriber: they all
    /// registered while no newer price was known (anyone registering later
    /// gets the hub's price at once, and a live update would be newer). So
    /// concurrent lookups for one symbol never leave a subscriber without.
    pub fn offer_snapshot(&self, quote: &Quote) {
        let mut fragment = PriceFragment::from_quote(quote).as_snapshot();
        let subscribers: Vec<Arc<Outbox>> = {
            let mut state = self.lock();
            let Some(slot) = state.slots.get_mut(&quote.symbol) else { return };
            if slot.latest.as_ref().is_some_and(|l| l.ts_micros >= fragment.ts_micros) {
                return;
            }
            fragment.symbol = slot.symbol.clone();
            slot.latest = Some(fragment.clone());
            slot.subscribers.values().cloned().collect()
        };
        let fragments = [fragment];
        for outbox in subscribers {
            self.metrics.ws_updates_conflated.inc_by(outbox.offer_fragments(&fragments));
        }
    }

    /// Symbols with at least one watcher.
    pub fn watched(&self) -> HashSet<Symbol> {
        let state = self.lock();
        state.slots.iter().filter(|(_, slot)| !slot.subscribers.is_empty()).map(|(s, _)| s.clone()).collect()
    }

    /// Wakes its holder after each change of the watched set
    /// (`changed().await`), however many tasks follow it.
    pub fn demand_changes(&self) -> watch::Receiver<u64> {
        self.demand.subscribe()
    }

    /// Connection `conn` now belongs to `user` (alerts reach it).
    pub fn attach_user(&self, user: UserId, conn: ConnId, outbox: &Arc<Outbox>) {
        self.lock().users.entry(user).or_default().insert(conn, outbox.clone());
    }

    pub fn detach_user(&self, user: UserId, conn: ConnId) {
        let mut state = self.lock();
        if let Some(conns) = state.users.get_mut(&user) {
            conns.remove(&conn);
            if conns.is_empty() {
                state.users.remove(&user);
            }
        }
    }

    /// Sends one (already serialized) frame to every connection of `user`;
    /// how many got it.
    pub fn send_to_user(&self, user: UserId, frame: &Bytes) -> usize {
        let outboxes: Vec<Arc<Outbox>> =
            self.lock().users.get(&user).map(|conns| conns.values().cloned().collect()).unwrap_or_default();
        for outbox in &outboxes {
            outbox.push_control(frame.clone());
        }
        outboxes.len()
    }

    /// Fans a batch of quotes out to their watchers.
    pub fn publish(&self, quotes: &[Quote]) {
        // Quotes of symbols nobody here watches come with their shard's.
        let newest = newest_per_symbol(quotes);
        let watched: Vec<&Quote> = {
            let state = self.lock();
            newest.into_iter().filter(|quote| state.slots.contains_key(&quote.symbol)).collect()
        };
        // One fragment per symbol: the batch's newest quote, serialized once.
        let mut fresh: Vec<PriceFragment> = watched.into_iter().map(PriceFragment::from_quote).collect();
        // Connection → indexes into `fresh` of the symbols it gets.
        let mut routes: HashMap<ConnId, (Arc<Outbox>, Vec<u32>)> = HashMap::new();
        {
            let mut state = self.lock();
            for (index, fragment) in fresh.iter_mut().enumerate() {
                // Quotes for symbols nobody watches (a binding being removed).
                let Some(slot) = state.slots.get_mut(&fragment.symbol) else { continue };
                // Redelivered or out-of-order quotes never move a price back.
                if slot.latest.as_ref().is_some_and(|l| l.ts_micros >= fragment.ts_micros) {
                    continue;
                }
                fragment.symbol = slot.symbol.clone();
                slot.latest = Some(fragment.clone());
                for (conn, outbox) in &slot.subscribers {
                    routes.entry(*conn).or_insert_with(|| (outbox.clone(), Vec::new())).1.push(index as u32);
                }
            }
        }
        let mut frames: HashMap<Vec<u32>, (Utf8Bytes, Arc<[PriceFragment]>)> = HashMap::new();
        let mut conflated = 0;
        for (_, (outbox, indexes)) in routes {
            let (frame, fragments) = frames.entry(indexes).or_insert_with_key(|indexes| {
                let fragments: Arc<[PriceFragment]> = indexes.iter().map(|&i| fresh[i as usize].clone()).collect();
                let frame = Utf8Bytes::try_from(price_update(fragments.iter())).expect("price updates are UTF-8 JSON");
                (frame, fragments)
            });
            conflated += outbox.offer_batch(frame, fragments);
        }
        self.metrics.ws_updates_conflated.inc_by(conflated);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::DateTime;

    use super::*;
    use crate::ws::outbox::Next;

    fn hub() -> Hub {
        Hub::new(Metrics::new(&prometheus::Registry::new()))
    }

    fn quote(price: f64, us: i64) -> Quote {
        Quote {
            symbol: Symbol::parse("AAPL").unwrap(),
            price,
            ts: DateTime::from_timestamp_micros(us).unwrap(),
            volume: None,
            source: "t".into(),
            ingest_id: "i".into(),
            ingested_at: DateTime::from_timestamp_micros(us).unwrap(),
        }
    }

    fn updates(outbox: &Outbox) -> Option<String> {
        let now = Instant::now();
        match outbox.next(now, now) {
            Next::Updates { frame, .. } => Some(frame.to_string()),
            _ => None,
        }
    }

    #[test]
    fn racing_snapshot_lookups_reach_every_subscriber_that_had_no_price() {
        let hub = hub();
        let symbols = [Symbol::parse("AAPL").unwrap()];
        let (a, b) = (Arc::new(Outbox::new(Duration::ZERO)), Arc::new(Outbox::new(Duration::ZERO)));
        assert_eq!(hub.subscribe(1, &a, &symbols), symbols);
        assert_eq!(hub.subscribe(2, &b, &symbols), symbols);
        // Both connections looked the price up; the second answer is a no-op.
        hub.offer_snapshot(&quote(5.0, 10));
        hub.offer_snapshot(&quote(5.0, 10));
        assert!(updates(&a).unwrap().contains("5.0"));
        assert!(updates(&b).unwrap().contains("5.0"));
        assert_eq!(updates(&a), None, "no duplicate");
    }

    #[test]
    fn a_snapshot_older_than_the_live_price_is_dropped() {
        let hub = hub();
        let symbols = [Symbol::parse("AAPL").unwrap()];
        let a = Arc::new(Outbox::new(Duration::ZERO));
        hub.subscribe(1, &a, &symbols);
        hub.publish(&[quote(7.0, 20)]);
        hub.offer_snapshot(&quote(5.0, 10));
        let frame = updates(&a).unwrap();
        assert!(frame.contains("7.0") && !frame.contains("5.0"), "{frame}");
        // Later subscribers get the hub's price at once.
        let b = Arc::new(Outbox::new(Duration::ZERO));
        assert!(hub.subscribe(2, &b, &symbols).is_empty());
        assert!(updates(&b).unwrap().contains("7.0"));
    }

    #[test]
    fn subscribers_of_the_same_symbols_share_one_frame() {
        let hub = hub();
        let symbols = [Symbol::parse("AAPL").unwrap()];
        let (a, b) = (Arc::new(Outbox::new(Duration::ZERO)), Arc::new(Outbox::new(Duration::ZERO)));
        hub.subscribe(1, &a, &symbols);
        hub.subscribe(2, &b, &symbols);
        hub.publish(&[quote(7.0, 20)]);
        let now = Instant::now();
        let (Next::Updates { frame: fa, .. }, Next::Updates { frame: fb, .. }) = (a.next(now, now), b.next(now, now))
        else {
            panic!("both get updates");
        };
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "one serialization, shared bytes");
    }
}
