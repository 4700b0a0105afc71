//! A connection's pending output. Control frames (acks, errors, pongs) queue
//! in order; price updates are conflated to the newest price per symbol, so
//! a slow client costs at most one fragment per subscribed symbol.
//!
//! The outbox knows which symbols its connection watches and the newest
//! quote time it accepted for each: updates for symbols no longer watched,
//! and prices not newer than one already accepted, are dropped here. So no
//! interleaving of hub, snapshot and unsubscribe can send a client an older
//! price after a newer one, the same price twice, or an update after its
//! `unsubscribed`.
//!
//! Fan-out batches are handed over as the frame the hub serialized once for
//! every connection watching the same symbols. Up to `MAX_SHARED_FRAMES` of
//! them queue while the writer is busy, and the writer sends what is queued
//! in one write. Only past that (a slow client), or with a batch window or a
//! throttle, does a connection merge updates into a frame of its own, keeping
//! the newest price per symbol.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use lizards_shared::{
    Symbol,
    protocol::{PriceFragment, price_update},
};
use tokio::sync::Notify;

/// Control frames a client may leave unread before it is dropped: client
/// requests are rate limited, so only a client that never reads gets here.
pub const MAX_CONTROL_FRAMES: usize = 4096;
/// Shared frames queued for one connection before its updates are merged
/// (conflated): bounded memory, while a writer that only fell a few
/// batches behind still delivers every update without building frames.
pub const MAX_SHARED_FRAMES: usize = 8;

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    batch_window: Duration,
}

#[derive(Default)]
struct State {
    control: VecDeque<Bytes>,
    /// Frames shared with other connections (their text checked once by
    /// the hub, not by each connection), oldest first, with their fragments
    /// in case they have to be merged with later updates.
    ready: VecDeque<(Utf8Bytes, Arc<[PriceFragment]>)>,
    pending: HashMap<Symbol, PriceFragment>,
    /// When the oldest not-yet-written update arrived (for `WS_BATCH_MS`).
    pending_since: Option<Instant>,
    close: Option<(u16, String)>,
    /// Watched symbols with the newest quote time accepted for each
    /// (`i64::MIN`: none yet). A connection watches a few: a vector of
    /// exactly their number is the least memory, and as the hub hands out
    /// its own copy of each symbol (`Hub::subscribe`), finding a fragment's
    /// symbol is mostly comparing pointers.
    watched: Vec<(Symbol, i64)>,
    /// The client's `throttle_ms`: least time between two update frames.
    throttle: Duration,
}

/// What the writer should do next.
pub enum Next {
    Control(Bytes),
    /// `oldest_live_micros`: the oldest `ingested_at` among live updates
    /// (None when the frame holds only snapshots).
    Updates {
        frame: Utf8Bytes,
        symbols: usize,
        oldest_live_micros: Option<i64>,
    },
    Close(u16, String),
    /// Nothing to write now; updates become due at the instant, if any.
    Wait(Option<Instant>),
}

impl State {
    /// Moves the shared frames back into the conflation map; returns how
    /// many of their updates were replaced by newer ones.
    fn unshare(&mut self) -> u64 {
        let mut conflated = 0;
        for (_, fragments) in std::mem::take(&mut self.ready) {
            for fragment in fragments.iter() {
                conflated += self.pending.insert(fragment.symbol.clone(), fragment.clone()).is_some() as u64;
            }
        }
        conflated
    }

    /// Accepts a fragment if its symbol is watched and it is newer than
    /// anything accepted for that symbol before.
    fn admit(&mut self, fragment: &PriceFragment) -> bool {
        let Some(index) = self.find(&fragment.symbol) else { return false };
        let newest = &mut self.watched[index].1;
        if fragment.ts_micros > *newest {
            *newest = fragment.ts_micros;
            return true;
        }
        false
    }

    fn find(&self, symbol: &Symbol) -> Option<usize> {
        let watched = &self.watched;
        watched.iter().position(|(s, _)| s.same(symbol)).or_else(|| watched.iter().position(|(s, _)| s == symbol))
    }

    /// Admits and adds fragments to the conflation map; returns how many
    /// pending updates were replaced by newer ones.
    fn merge<'a>(&mut self, fragments: impl IntoIterator<Item = &'a PriceFragment>) -> u64 {
        let mut conflated = 0;
        for fragment in fragments {
            if self.admit(fragment) && self.pending.insert(fragment.symbol.clone(), fragment.clone()).is_some() {
                conflated += 1;
            }
        }
        conflated
    }

    fn has_updates(&self) -> bool {
        !self.ready.is_empty() || !self.pending.is_empty()
    }
}

impl Outbox {
    pub fn new(batch_window: Duration) -> Outbox {
        Outbox { state: Mutex::new(State::default()), notify: Notify::new(), batch_window }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbox lock")
    }

    /// Queues a control frame; `false` when the client stopped reading.
    pub fn push_control(&self, frame: Bytes) -> bool {
        let accepted = {
            let mut state = self.lock();
            if state.control.len() >= MAX_CONTROL_FRAMES {
                false
            } else {
                state.control.push_back(frame);
                true
            }
        };
        self.notify.notify_one();
        accepted
    }

    /// Starts watching symbols (before any of their prices are offered).
    pub fn watch(&self, symbols: &[Symbol]) {
        let mut state = self.lock();
        let fresh: Vec<&Symbol> = symbols.iter().filter(|s| state.find(s).is_none()).collect();
        state.watched.reserve_exact(fresh.len());
        state.watched.extend(fresh.into_iter().map(|s| (s.clone(), i64::MIN)));
    }

    pub fn watches(&self, symbol: &Symbol) -> bool {
        self.lock().find(symbol).is_some()
    }

    /// The watched symbols, in no order.
    pub fn watched(&self) -> Vec<Symbol> {
        self.lock().watched.iter().map(|(s, _)| s.clone()).collect()
    }

    pub fn watched_len(&self) -> usize {
        self.lock().watched.len()
    }

    /// Sets the least time between two update frames (`throttle_ms`).
    pub fn set_throttle(&self, throttle: Duration) {
        self.lock().throttle = throttle;
    }

    pub fn throttle(&self) -> Duration {
        self.lock().throttle
    }

    /// Offers a fan-out batch; returns how many updates it conflated.
    pub fn offer_batch(&self, frame: &Utf8Bytes, fragments: &Arc<[PriceFragment]>) -> u64 {
        let conflated = {
            let mut state = self.lock();
            // A batch window or a throttle asks for updates merged into
            // fewer frames: then at most one shared frame waits.
            let limit = if self.batch_window.is_zero() && state.throttle.is_zero() { MAX_SHARED_FRAMES } else { 1 };
            // The common case: room in the queue and every fragment
            // admitted, so the frame shared with others is queued as it is.
            // Otherwise, or from the first fragment not admitted, updates
            // are merged into the conflation map.
            let mut sharing = state.pending.is_empty() && state.ready.len() < limit;
            let mut conflated = if sharing { 0 } else { state.unshare() };
            for (index, fragment) in fragments.iter().enumerate() {
                let admitted = state.admit(fragment);
                if sharing && admitted {
                    continue;
                }
                if sharing {
                    sharing = false;
                    conflated += state.unshare();
                    for earlier in &fragments[..index] {
                        conflated += state.pending.insert(earlier.symbol.clone(), earlier.clone()).is_some() as u64;
                    }
                }
                if admitted {
                    conflated += state.pending.insert(fragment.symbol.clone(), fragment.clone()).is_some() as u64;
                }
            }
            if sharing {
                state.ready.push_back((frame.clone(), fragments.clone()));
            }
            if state.has_updates() {
                state.pending_since.get_or_insert_with(Instant::now);
            }
            conflated
        };
        self.notify.notify_one();
        conflated
    }

    /// Offers single updates (snapshots); newer pending prices win. Returns
    /// how many updates were replaced by newer ones.
    pub fn offer_fragments(&self, fragments: &[PriceFragment]) -> u64 {
        if fragments.is_empty() {
            return 0;
        }
        let conflated = {
            let mut state = self.lock();
            let conflated = state.unshare() + state.merge(fragments);
            state.pending_since.get_or_insert_with(Instant::now);
            conflated
        };
        self.notify.notify_one();
        conflated
    }

    /// Stops watching symbols and drops their pending updates; returns how
    /// many queued updates were replaced by newer ones on the way.
    pub fn forget(&self, symbols: &[Symbol]) -> u64 {
        let mut state = self.lock();
        let conflated = state.unshare();
        for symbol in symbols {
            if let Some(index) = state.find(symbol) {
                state.watched.swap_remove(index);
            }
            state.pending.remove(symbol);
        }
        if !state.has_updates() {
            state.pending_since = None;
        }
        conflated
    }

    /// Asks the writer to send what is queued, then close.
    pub fn close(&self, code: u16, reason: &str) {
        self.lock().close.get_or_insert_with(|| (code, reason.to_string()));
        self.notify.notify_one();
    }

    /// Pending price updates (for tests and the memory bound).
    pub fn pending_updates(&self) -> usize {
        let state = self.lock();
        state.pending.len() + state.ready.iter().map(|(_, f)| f.len()).sum::<usize>()
    }

    /// The next thing to write. Updates wait for the batch window and for
    /// `not_before` (the client's throttle).
    pub fn next(&self, now: Instant, not_before: Instant) -> Next {
        let mut state = self.lock();
        if let Some(frame) = state.control.pop_front() {
            if state.control.is_empty() {
                // Acks and errors are rare: an idle connection keeps no
                // queue sized for them.
                state.control = VecDeque::new();
            }
            return Next::Control(frame);
        }
        if let Some((code, reason)) = state.close.take() {
            return Next::Close(code, reason);
        }
        if !state.has_updates() {
            return Next::Wait(None);
        }
        let due = state.pending_since.map_or(now, |since| since + self.batch_window).max(not_before);
        if due > now {
            return Next::Wait(Some(due));
        }
        if let Some((frame, fragments)) = state.ready.pop_front() {
            if !state.has_updates() {
                state.pending_since = None;
            }
            return Next::Updates { frame, symbols: fragments.len(), oldest_live_micros: oldest_live(&fragments) };
        }
        state.pending_since = None;
        // Taken, not drained: an idle connection keeps no map sized for
        // its last burst (a subscription's snapshots fill it).
        let fragments: Vec<PriceFragment> = std::mem::take(&mut state.pending).into_values().collect();
        drop(state);
        let oldest_live_micros = oldest_live(&fragments);
        let frame = Utf8Bytes::try_from(price_update(&fragments)).expect("price updates are UTF-8 JSON");
        Next::Updates { frame, symbols: fragments.len(), oldest_live_micros }
    }

    /// Waits until something may have been queued.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

fn oldest_live(fragments: &[PriceFragment]) -> Option<i64> {
    fragments.iter().filter(|f| f.live).map(|f| f.ingested_at_micros).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(symbol: &str, ts: i64) -> PriceFragment {
        PriceFragment {
            symbol: Symbol::parse(symbol).unwrap(),
            ts_micros: ts,
            ingested_at_micros: ts,
            live: true,
            json: Bytes::from(format!("\"{symbol}\":{{\"price\":1,\"timestamp\":\"{ts}\"}}")),
        }
    }

    /// An outbox watching AAPL and MSFT.
    fn outbox(window: Duration) -> Outbox {
        let outbox = Outbox::new(window);
        outbox.watch(&[Symbol::parse("AAPL").unwrap(), Symbol::parse("MSFT").unwrap()]);
        outbox
    }

    fn batch(fragments: Vec<PriceFragment>) -> (Utf8Bytes, Arc<[PriceFragment]>) {
        (Utf8Bytes::try_from(price_update(&fragments)).unwrap(), fragments.into())
    }

    #[test]
    fn an_idle_connection_gets_the_shared_frame_itself() {
        let outbox = outbox(Duration::ZERO);
        let (frame, fragments) = batch(vec![fragment("AAPL", 1)]);
        outbox.offer_batch(&frame, &fragments);
        let now = Instant::now();
        match outbox.next(now, now) {
            Next::Updates { frame: sent, symbols, .. } => {
                assert_eq!(sent.as_ptr(), frame.as_ptr(), "the same bytes, not a copy");
                assert_eq!(symbols, 1);
            }
            _ => panic!("expected updates"),
        }
    }

    #[test]
    fn a_busy_connection_conflates_to_the_newest_price_per_symbol() {
        let outbox = outbox(Duration::ZERO);
        let mut conflated = 0;
        for ts in 0..1000 {
            let (frame, fragments) = batch(vec![fragment("AAPL", ts), fragment("MSFT", ts)]);
            conflated += outbox.offer_batch(&frame, &fragments);
        }
        assert_eq!(outbox.pending_updates(), 2, "memory stays bounded by the symbols watched");
        assert_eq!(conflated, 2 * 999);
        let now = Instant::now();
        let Next::Updates { frame, symbols, .. } = outbox.next(now, now) else { panic!("expected updates") };
        assert_eq!(symbols, 2);
        let text = frame.as_str();
        assert!(text.contains("\"999\""), "{text}");
    }

    #[test]
    fn control_frames_come_first_and_older_snapshots_never_replace_newer_prices() {
        let outbox = outbox(Duration::ZERO);
        let (frame, fragments) = batch(vec![fragment("AAPL", 10)]);
        outbox.offer_batch(&frame, &fragments);
        outbox.offer_fragments(&[fragment("AAPL", 5)]);
        outbox.push_control(Bytes::from_static(b"ack"));
        // An equal or older price after a newer one is never sent.
        let now = Instant::now();
        assert!(matches!(outbox.next(now, now), Next::Control(f) if f == "ack"));
        let Next::Updates { frame, .. } = outbox.next(now, now) else { panic!("expected updates") };
        assert!(frame.as_str().contains("\"10\""));
        assert!(matches!(outbox.next(now, now), Next::Wait(None)));
    }

    #[test]
    fn forgotten_symbols_are_not_sent() {
        let outbox = outbox(Duration::ZERO);
        let (frame, fragments) = batch(vec![fragment("AAPL", 1), fragment("MSFT", 1)]);
        outbox.offer_batch(&frame, &fragments);
        outbox.forget(&[Symbol::parse("AAPL").unwrap()]);
        let now = Instant::now();
        let Next::Updates { frame, symbols, .. } = outbox.next(now, now) else { panic!("expected updates") };
        assert_eq!(symbols, 1);
        assert!(!frame.as_str().contains("AAPL"));
    }

    #[test]
    fn batch_window_and_throttle_delay_updates_but_not_control() {
        let outbox = outbox(Duration::from_millis(50));
        outbox.offer_fragments(&[fragment("AAPL", 1)]);
        outbox.push_control(Bytes::from_static(b"pong"));
        let now = Instant::now();
        assert!(matches!(outbox.next(now, now), Next::Control(_)));
        assert!(matches!(outbox.next(now, now), Next::Wait(Some(_))));
        let later = now + Duration::from_millis(60);
        assert!(matches!(outbox.next(later, later + Duration::from_secs(1)), Next::Wait(Some(_))));
        assert!(matches!(outbox.next(later, later), Next::Updates { .. }));
    }

    #[test]
    fn control_queue_is_bounded() {
        let outbox = outbox(Duration::ZERO);
        for _ in 0..MAX_CONTROL_FRAMES {
            assert!(outbox.push_control(Bytes::from_static(b"x")));
        }
        assert!(!outbox.push_control(Bytes::from_static(b"x")));
    }

    #[test]
    fn unwatched_symbols_and_stale_or_repeated_prices_are_dropped() {
        let outbox = outbox(Duration::ZERO);
        let (frame, fragments) = batch(vec![fragment("AAPL", 10)]);
        outbox.offer_batch(&frame, &fragments);
        let now = Instant::now();
        assert!(matches!(outbox.next(now, now), Next::Updates { .. }));
        // The same batch again (e.g. a snapshot racing the live feed): nothing.
        outbox.offer_batch(&frame, &fragments);
        outbox.offer_fragments(&[fragment("AAPL", 9)]);
        assert!(matches!(outbox.next(now, now), Next::Wait(None)));
        // After unsubscribing, a batch computed earlier is not delivered.
        outbox.forget(&[Symbol::parse("AAPL").unwrap()]);
        let (frame, fragments) = batch(vec![fragment("AAPL", 11), fragment("TSLA", 11)]);
        outbox.offer_batch(&frame, &fragments);
        assert!(matches!(outbox.next(now, now), Next::Wait(None)));
    }

    #[test]
    fn a_batch_partly_admitted_gets_a_frame_of_its_own_with_the_admitted_updates() {
        let outbox = outbox(Duration::ZERO);
        let (frame, fragments) = batch(vec![fragment("AAPL", 10)]);
        outbox.offer_batch(&frame, &fragments);
        let now = Instant::now();
        assert!(matches!(outbox.next(now, now), Next::Updates { .. }));
        // MSFT is new; AAPL at 10 was sent already.
        let (frame, fragments) = batch(vec![fragment("MSFT", 10), fragment("AAPL", 10)]);
        outbox.offer_batch(&frame, &fragments);
        let now = Instant::now();
        let Next::Updates { frame: sent, symbols, .. } = outbox.next(now, now) else { panic!("expected updates") };
        assert_eq!(symbols, 1);
        assert_ne!(sent.as_ptr(), frame.as_ptr(), "not the shared frame");
        assert!(sent.as_str().contains("MSFT") && !sent.as_str().contains("AAPL"), "{sent}");
    }

    #[test]
    fn a_writer_a_few_batches_behind_gets_every_shared_frame_in_order() {
        let outbox = outbox(Duration::ZERO);
        let batches: Vec<_> = (1..=3).map(|ts| batch(vec![fragment("AAPL", ts), fragment("MSFT", ts)])).collect();
        let conflated: u64 = batches.iter().map(|(frame, fragments)| outbox.offer_batch(frame, fragments)).sum();
        assert_eq!(conflated, 0);
        let now = Instant::now();
        for (frame, _) in &batches {
            let Next::Updates { frame: sent, .. } = outbox.next(now, now) else { panic!("expected updates") };
            assert_eq!(sent.as_ptr(), frame.as_ptr(), "the shared bytes, in order");
        }
        assert!(matches!(outbox.next(now, now), Next::Wait(None)));
    }

    #[test]
    fn a_throttled_connection_merges_batches_into_one_frame_with_the_newest_prices() {
        let outbox = outbox(Duration::ZERO);
        outbox.set_throttle(Duration::from_millis(100));
        let mut conflated = 0;
        for ts in 1..=3 {
            let (frame, fragments) = batch(vec![fragment("AAPL", ts)]);
            conflated += outbox.offer_batch(&frame, &fragments);
        }
        assert_eq!(conflated, 2);
        let now = Instant::now();
        let Next::Updates { frame, symbols, .. } = outbox.next(now, now) else { panic!("expected updates") };
        assert_eq!(symbols, 1);
        assert!(frame.as_str().contains("\"3\""), "{frame}");
        assert!(matches!(outbox.next(now, now), Next::Wait(None)));
    }

    #[test]
    fn snapshots_are_left_out_of_latency() {
        let outbox = outbox(Duration::ZERO);
        outbox.offer_fragments(&[fragment("AAPL", 1).as_snapshot()]);
        let now = Instant::now();
        assert!(matches!(outbox.next(now, now), Next::Updates { oldest_live_micros: None, .. }));
    }
}
