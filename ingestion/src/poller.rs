//! Runs one web [`Api`] as a source: polls the demanded symbols it covers
//! every interval, while this instance holds the source's lease, through
//! the source's circuit breaker and outbound rate limit, with a timeout on
//! every call and jittered exponential backoff after a failed round.
//!
//! The rate limit is a GCRA (token bucket) in the cache port: with Redis it
//! holds across every ingestion instance, as a provider's free tier counts
//! per API key, not per process.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use lizards_shared::{
    Symbol,
    cache::{Cache, Quota},
    shutdown::Shutdown,
};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};

use crate::{
    breaker::{Breaker, BreakerSettings, BreakerState},
    demand::Demand,
    metrics::Metrics,
    pipeline::Pipeline,
    sources::{self, Api, Item, Lookup, RawRecord, Source, SourceError, SourceStatus, http::HttpGet},
};

/// A symbol a source said it does not know is not asked for again for this long.
const UNKNOWN_FOR: Duration = Duration::from_secs(3600);
/// Breaker transitions kept for `/sources/status`.
const TRANSITIONS_KEPT: usize = 16;

#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    /// Outbound limit: the provider's free tier.
    pub quota: Quota,
    /// Whole request, body included.
    pub timeout: Duration,
    pub breaker: BreakerSettings,
    pub lease_ttl: Duration,
    /// First and largest wait after a failed round (the largest is capped
    /// by the interval).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// `GET /sources/status` fields of a polled source.
#[derive(Debug, Clone, Serialize)]
pub struct PollStatus {
    pub breaker: &'static str,
    pub lease: &'static str,
    pub interval_seconds: f64,
    pub rate_limit: String,
    /// Symbols of the last round.
    pub symbols: Vec<Symbol>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
    pub fetches: FetchCounts,
    /// Latest breaker transitions, oldest first.
    pub transitions: VecDeque<Transition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: DateTime<Utc>,
    pub kind: &'static str,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchCounts {
    pub ok: u64,
    pub failed: u64,
    /// Calls not made: breaker open.
    pub rejected: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    pub to: &'static str,
    pub at: DateTime<Utc>,
}

struct State {
    breaker: Breaker,
    /// The breaker state last reported (metric, transitions).
    reported: BreakerState,
    unknown: HashMap<Symbol, Instant>,
    status: PollStatus,
}

/// What every poller of an instance shares.
#[derive(Clone)]
pub struct Shared {
    pub cache: Arc<dyn Cache>,
    pub demand: Arc<Demand>,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Metrics,
    /// This instance, as the owner of source leases.
    pub owner: String,
}

pub struct Poller {
    api: Arc<dyn Api>,
    http: HttpGet,
    settings: PollSettings,
    cache: Arc<dyn Cache>,
    demand: Arc<Demand>,
    pipeline: Arc<Pipeline>,
    metrics: Metrics,
    /// Lease owner: this instance.
    owner: String,
    leased: AtomicBool,
    lease_taken: Notify,
    state: Mutex<State>,
}

impl Poller {
    pub fn new(api: Arc<dyn Api>, settings: PollSettings, shared: Shared) -> Poller {
        let Shared { cache, demand, pipeline, metrics, owner } = shared;
        let status = PollStatus {
            breaker: BreakerState::Closed.as_str(),
            lease: "standby",
            interval_seconds: settings.interval.as_secs_f64(),
            rate_limit: settings.quota.to_string(),
            symbols: Vec::new(),
            last_success: None,
            last_error: None,
            fetches: FetchCounts::default(),
            transitions: VecDeque::new(),
        };
        metrics.breaker_state.with_label_values(&[api.id()]).set(BreakerState::Closed.gauge());
        metrics.prime_breaker(api.id());
        let state = State {
            breaker: Breaker::new(settings.breaker),
            reported: BreakerState::Closed,
            unknown: HashMap::new(),
            status,
        };
        Poller {
            http: HttpGet::new(settings.timeout),
            api,
            settings,
            cache,
            demand,
            pipeline,
            metrics,
            owner,
            leased: AtomicBool::new(false),
            lease_taken: Notify::new(),
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("poller state lock")
    }

    /// Reports a breaker state change (metric, log, status).
    fn report(&self, state: &mut State, now: Instant) -> BreakerState {
        let current = state.breaker.state(now);
        if current != state.reported {
            let id = self.api.id();
            tracing::warn!(source = id, from = state.reported.as_str(), to = current.as_str(), "circuit breaker");
            self.metrics.breaker_state.with_label_values(&[id]).set(current.gauge());
            self.metrics.breaker_transitions.with_label_values(&[id, current.as_str()]).inc();
            state.reported = current;
            state.status.breaker = current.as_str();
            let transitions = &mut state.status.transitions;
            transitions.push_back(Transition { to: current.as_str(), at: Utc::now() });
            while transitions.len() > TRANSITIONS_KEPT {
                transitions.pop_front();
            }
        }
        current
    }

    /// Waits for an outbound slot; `Throttled` when it would come later
    /// than `patience`. A cache outage does not stop polling.
    async fn throttle(&self, patience: Duration) -> Result<(), SourceError> {
        let key = format!("source:{}", self.api.id());
        let started = Instant::now();
        loop {
            let wait = match self.cache.throttle(&key, self.settings.quota, 1).await {
                Ok(throttle) if throttle.allowed => return Ok(()),
                Ok(throttle) => throttle.retry_after,
                Err(error) => {
                    tracing::warn!(source = self.api.id(), %error, "outbound rate limit unavailable; calling anyway");
                    return Ok(());
                }
            };
            if started.elapsed() + wait > patience {
                return Err(SourceError::Throttled(wait));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One call for `symbols` through the rate limit and the breaker.
    pub async fn call(&self, symbols: &[Symbol], patience: Duration) -> Result<Vec<Item>, SourceError> {
        let id = self.api.id();
        if self.lock().breaker.state(Instant::now()) == BreakerState::Open {
            return Err(self.not_called(SourceError::CircuitOpen));
        }
        // Before asking the breaker, so a call that waits too long for its
        // slot never holds one of the breaker's trial calls.
        self.throttle(patience).await.map_err(|error| self.not_called(error))?;
        let mut outcome = Outcome { poller: self, recorded: false };
        if !self.lock().breaker.allow(Instant::now()) {
            outcome.recorded = true;
            return Err(self.not_called(SourceError::CircuitOpen));
        }
        let started = Instant::now();
        let answer = sources::fetch(self.api.as_ref(), &self.http, symbols).await;
        self.metrics.source_fetch_seconds.with_label_values(&[id]).observe(started.elapsed().as_secs_f64());
        if let Err(error) = &answer {
            tracing::warn!(source = id, ?symbols, %error, "fetch failed");
        }
        outcome.record(answer.as_ref().err());
        answer
    }

    /// Counts a call that did not go out.
    fn not_called(&self, error: SourceError) -> SourceError {
        let mut state = self.lock();
        if error == SourceError::CircuitOpen {
            state.status.fetches.rejected += 1;
        }
        self.report(&mut state, Instant::now());
        self.metrics.source_fetches.with_label_values(&[self.api.id(), error.label()]).inc();
        error
    }

    /// Records a finished call in the breaker, the status and the metrics.
    fn record(&self, error: Option<&SourceError>) {
        let id = self.api.id();
        let mut state = self.lock();
        let now = Instant::now();
        match error {
            None => {
                state.breaker.record_success(now);
                state.status.fetches.ok += 1;
                state.status.last_success = Some(Utc::now());
                self.metrics.source_fetches.with_label_values(&[id, "ok"]).inc();
            }
            Some(error) => {
                state.breaker.record_failure(now);
                state.status.fetches.failed += 1;
                state.status.last_error =
                    Some(LastError { at: Utc::now(), kind: error.label(), error: error.to_string() });
                self.metrics.source_fetches.with_label_values(&[id, error.label()]).inc();
            }
        }
        self.report(&mut state, now);
    }

    /// Splits fetched items: records to publish, rejects kept in the raw
    /// store, unknown symbols remembered.
    async fn triage(&self, items: Vec<Item>) -> Vec<RawRecord> {
        let mut records = Vec::new();
        for item in items {
            match item {
                Ok(record) => records.push(record),
                Err(item) if item.error == SourceError::UnknownSymbol => {
                    tracing::info!(source = self.api.id(), symbol = %item.symbol, "symbol unknown to this source");
                    self.lock().unknown.insert(item.symbol, Instant::now());
                }
                Err(item) => self.pipeline.reject_item(self.api.id(), &item).await,
            }
        }
        records
    }

    /// The demanded symbols this source covers and has not called unknown.
    fn wanted(&self, now: Instant) -> Vec<Symbol> {
        let demanded = self.demand.symbols(now);
        let mut state = self.lock();
        state.unknown.retain(|_, at| now.duration_since(*at) < UNKNOWN_FOR);
        let wanted: Vec<Symbol> =
            demanded.into_iter().filter(|s| self.api.covers(s) && !state.unknown.contains_key(s)).collect();
        state.status.symbols = wanted.clone();
        wanted
    }

    /// One round over every wanted symbol; false when a call failed.
    async fn round(&self, out: &mpsc::Sender<RawRecord>) -> bool {
        let symbols = self.wanted(Instant::now());
        let mut ok = true;
        for chunk in symbols.chunks(self.api.max_batch().max(1)) {
            match self.call(chunk, self.settings.interval).await {
                Ok(items) => {
                    for record in self.triage(items).await {
                        if out.send(record).await.is_err() {
                            return ok;
                        }
                    }
                }
                Err(SourceError::CircuitOpen) => return ok,
                Err(_) => ok = false,
            }
        }
        ok
    }

    async fn poll(&self, out: mpsc::Sender<RawRecord>, shutdown: &Shutdown) {
        let mut backoff = self.backoff();
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.lease_taken.notified() => {}
            }
            if !self.leased.load(Ordering::SeqCst) {
                wait = self.settings.interval;
                continue;
            }
            let ok = tokio::select! {
                _ = shutdown.cancelled() => return,
                ok = self.round(&out) => ok,
            };
            wait = if ok {
                backoff = self.backoff();
                self.settings.interval
            } else {
                backoff.next().unwrap_or(self.settings.interval)
            };
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.settings.backoff_min)
            .with_max_delay(self.settings.backoff_max.min(self.settings.interval))
            .without_max_times()
            .build()
    }

    /// Takes and renews the source's lease until shutdown, then gives it up.
    async fn keep_lease(&self, shutdown: &Shutdown) {
        let key = format!("source:{}", self.api.id());
        let ttl = self.settings.lease_ttl;
        loop {
            let held = match self.cache.lease(&key, &self.owner, ttl).await {
                Ok(held) => held,
                Err(error) => {
                    // Keep what we had: polling goes on through a cache outage.
                    tracing::warn!(source = self.api.id(), %error, "lease not renewed; keeping the last state");
                    self.leased.load(Ordering::SeqCst)
                }
            };
            let was = self.leased.swap(held, Ordering::SeqCst);
            if held != was {
                tracing::info!(source = self.api.id(), held, "source lease");
                self.metrics.lease_held.with_label_values(&[self.api.id()]).set(i64::from(held));
                self.lock().status.lease = if held { "held" } else { "standby" };
                if held {
                    self.lease_taken.notify_one();
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
        }
        if self.leased.swap(false, Ordering::SeqCst)
            && let Err(error) = self.cache.release(&key, &self.owner).await
        {
            tracing::warn!(source = self.api.id(), %error, "lease not released; it lapses by itself");
        }
    }
}

/// A call the breaker let through. Dropped before its answer (the caller
/// gave up, e.g. a lookup's deadline) it counts as a failure, so a
/// half-open breaker never waits for a trial that will not report.
struct Outcome<'a> {
    poller: &'a Poller,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(&mut self, error: Option<&SourceError>) {
        self.recorded = true;
        self.poller.record(error);
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.poller.record(Some(&SourceError::Timeout(self.poller.settings.timeout)));
        }
    }
}

#[async_trait]
impl Source for Poller {
    fn id(&self) -> &str {
        self.api.id()
    }

    fn base_url(&self) -> &str {
        self.api.base_url()
    }

    async fn lookup(&self, symbol: &Symbol) -> Result<Lookup, SourceError> {
        if !self.api.covers(symbol) {
            return Ok(Lookup::Unknown);
        }
        let items = self.call(std::slice::from_ref(symbol), self.settings.timeout).await?;
        let records = self.triage(items).await;
        if records.is_empty() && self.lock().unknown.contains_key(symbol) {
            return Ok(Lookup::Unknown);
        }
        self.lock().unknown.remove(symbol);
        Ok(Lookup::Known(records))
    }

    async fn run(&self, out: mpsc::Sender<RawRecord>, shutdown: Shutdown) {
        tokio::join!(self.keep_lease(&shutdown), self.poll(out, &shutdown));
    }

    fn status(&self) -> SourceStatus {
        let mut state = self.lock();
        self.report(&mut state, Instant::now());
        SourceStatus {
            id: self.api.id().to_string(),
            kind: self.api.kind(),
            base_url: self.api.base_url().to_string(),
            enabled: true,
            polling: Some(state.status.clone()),
        }
    }
}
