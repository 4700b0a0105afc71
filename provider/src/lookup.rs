//! Symbol knowledge and snapshots. A symbol is known when this instance has
//! seen a price for it, when the SQL store has one (another instance stored
//! it), or when an enabled ingestion source says it can quote it (an
//! on-demand lookup through the registry, bounded by a timeout).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lizards_shared::{Quote, Symbol, discovery::RegistryClient, store::QuoteStore};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;

use crate::{latest::LatestCache, metrics::Metrics};

/// How long lookup answers are remembered.
const KNOWN_FOR: Duration = Duration::from_secs(600);
const UNKNOWN_FOR: Duration = Duration::from_secs(30);
/// Answers remembered at most; expired ones are pruned beyond this.
const MAX_ANSWERS: usize = 50_000;

pub struct Resolver {
    latest: Arc<LatestCache>,
    store: Arc<dyn QuoteStore>,
    registry: RegistryClient,
    http: reqwest::Client,
    timeout: Duration,
    answers: Mutex<HashMap<Symbol, (bool, Instant)>>,
    metrics: Metrics,
}

impl Resolver {
    pub fn new(
        latest: Arc<LatestCache>,
        store: Arc<dyn QuoteStore>,
        registry: RegistryClient,
        timeout: Duration,
        metrics: Metrics,
    ) -> Resolver {
        Resolver {
            latest,
            store,
            registry,
            http: lizards_shared::http::client(),
            timeout,
            answers: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn remembered(&self, symbol: &Symbol) -> Option<bool> {
        let answers = self.answers.lock().expect("answers lock");
        let (known, at) = answers.get(symbol)?;
        let ttl = if *known { KNOWN_FOR } else { UNKNOWN_FOR };
        (at.elapsed() < ttl).then_some(*known)
    }

    /// Remembers an answer; the map stays bounded even if clients ask
    /// for endless made-up symbols.
    fn remember(&self, symbol: &Symbol, known: bool) {
        let mut answers = self.answers.lock().expect("answers lock");
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, (known, at)| at.elapsed() < if *known { KNOWN_FOR } else { UNKNOWN_FOR });
            if answers.len() >= MAX_ANSWERS {
                answers.retain(|_, (known, _)| *known);
            }
        }
        answers.insert(symbol.clone(), (known, Instant::now()));
    }

    /// Known without asking anyone.
    pub fn known_now(&self, symbol: &Symbol) -> bool {
        self.latest.contains(symbol) || self.remembered(symbol) == Some(true)
    }

    /// Asks the ingestion service; unknown everywhere, unreachable or too
    /// slow all mean "not known".
    pub async fn lookup(&self, symbol: &Symbol) -> bool {
        if let Some(known) = self.remembered(symbol) {
            return known;
        }
        if let Ok(Some(_)) = self.store.latest(symbol).await {
            self.remember(symbol, true);
            return true;
        }
        let answer = tokio::time::timeout(self.timeout, self.ask_ingestion(symbol)).await;
        let known = match answer {
            Ok(Some(known)) => {
                self.metrics.symbol_lookups.with_label_values(&[if known { "known" } else { "unknown" }]).inc();
                self.remember(symbol, known);
                known
            }
            Ok(None) => {
                self.metrics.symbol_lookups.with_label_values(&["unavailable"]).inc();
                false
            }
            Err(_) => {
                self.metrics.symbol_lookups.with_label_values(&["timeout"]).inc();
                false
            }
        };
        known || self.latest.contains(symbol)
    }

    /// `Some(answer)` from the first ingestion instance that answers.
    async fn ask_ingestion(&self, symbol: &Symbol) -> Option<bool> {
        let instances = match self.registry.instances("ingestion").await {
            Ok(instances) => instances,
            Err(error) => {
                tracing::warn!(%error, "cannot look up ingestion instances");
                return None;
            }
        };
        let encoded = utf8_percent_encode(symbol.as_str(), NON_ALPHANUMERIC);
        for instance in instances.iter().filter(|i| i.is_healthy()) {
            let url = format!("http://{}/sources/lookup/{encoded}", instance.authority());
            match self.http.get(url).send().await {
                Ok(response) if response.status().is_success() => return Some(true),
                Ok(response) if response.status() == StatusCode::NOT_FOUND => return Some(false),
                Ok(response) => tracing::warn!(status = %response.status(), "symbol lookup failed"),
                Err(error) => tracing::warn!(%error, "symbol lookup failed"),
            }
        }
        None
    }
}

/// Latest quote for a snapshot: the newer of the in-memory cache and the
/// SQL store (read pool); the cache alone while the database is down.
pub struct Snapshots {
    pub latest: Arc<LatestCache>,
    pub store: Arc<dyn QuoteStore>,
    pub metrics: Metrics,
}

impl Snapshots {
    pub async fn get(&self, symbol: &Symbol) -> Option<Quote> {
        let cached = self.latest.get(symbol);
        let stored = match self.store.latest(symbol).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "snapshot from the database failed; using the in-memory cache");
                self.metrics.errors.with_label_values(&["database"]).inc();
                None
            }
        };
        newer(cached, stored)
    }

    pub async fn all(&self) -> Vec<Quote> {
        match self.store.latest_all().await {
            Ok(stored) => {
                let mut merged: HashMap<Symbol, Quote> = stored.into_iter().map(|q| (q.symbol.clone(), q)).collect();
                for quote in self.latest.all() {
                    let stored = merged.remove(&quote.symbol);
                    if let Some(newest) = newer(Some(quote), stored) {
                        merged.insert(newest.symbol.clone(), newest);
                    }
                }
                let mut all: Vec<Quote> = merged.into_values().collect();
                all.sort_by(|a, b| a.symbol.cmp(&b.symbol));
                all
            }
            Err(error) => {
                tracing::warn!(%error, "listing from the database failed; using the in-memory cache");
                self.metrics.errors.with_label_values(&["database"]).inc();
                self.latest.all()
            }
        }
    }
}

/// The newer of the in-memory and the stored quote; the stored one on a tie
/// (it is the same observation, and what history shows).
fn newer(cached: Option<Quote>, stored: Option<Quote>) -> Option<Quote> {
    match (cached, stored) {
        (Some(c), Some(s)) => Some(if c.ts > s.ts { c } else { s }),
        (c, s) => c.or(s),
    }
}
