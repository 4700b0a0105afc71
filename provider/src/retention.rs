//! Retention: every RETENTION_INTERVAL, quotes older than
//! RETENTION_DAYS are deleted, and symbols nobody uses any more leave the
//! tracked symbols (`latest_quotes`); their quotes then age out.
//!
//! "In use" is: watched by a client of this instance, named by an alert rule
//! or an open position, or quoted within the last interval (so a symbol
//! another instance's clients watch, which ingestion keeps polling, stays
//! listed). Dropping an idle symbol only hides it from `GET /symbols` until
//! its next quote (other provider instances keep it in their in-memory
//! latest prices until they restart).

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use lizards_shared::{
    Symbol,
    accounts::AccountStore,
    shutdown::Shutdown,
    store::{QuoteStore, StoreError},
};

use crate::{hub::Hub, latest::LatestCache, metrics::Metrics};

/// The first cycle runs this long after start, not a whole interval later.
const FIRST_RUN: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Retention {
    pub quotes: Arc<dyn QuoteStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub hub: Arc<Hub>,
    pub latest: Arc<LatestCache>,
    pub days: u32,
    pub interval: Duration,
    pub metrics: Metrics,
}

/// Deletes quotes older than `cutoff`, counted as `old`.
pub async fn delete_old(quotes: &dyn QuoteStore, metrics: &Metrics, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    let deleted = quotes.delete_before(cutoff).await?;
    metrics.retention_deleted.with_label_values(&["old"]).inc_by(deleted);
    Ok(deleted)
}

impl Retention {
    pub async fn run(self, shutdown: Shutdown) {
        let mut wait = FIRST_RUN.min(self.interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = self.interval;
            if let Err(error) = self.cycle().await {
                tracing::warn!(%error, "retention cycle failed; retrying next interval");
                self.metrics.errors.with_label_values(&["retention"]).inc();
            }
        }
    }

    /// One pass: old quotes, then unused symbols.
    pub async fn cycle(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let now = Utc::now();
        let cutoff = now - chrono::Duration::days(i64::from(self.days));
        let old = delete_old(&*self.quotes, &self.metrics, cutoff).await.map_err(|e| e.to_string())?;
        let mut keep: HashSet<Symbol> = self.hub.watched();
        let refs = self.accounts.symbol_refcounts().await.map_err(|e| e.to_string())?;
        keep.extend(refs.into_iter().map(|r| r.symbol));
        let keep: Vec<Symbol> = keep.into_iter().collect();
        let idle_before = now - chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::hours(1));
        let unused = self.quotes.untrack_idle(idle_before, &keep).await.map_err(|e| e.to_string())?;
        self.latest.forget(&unused);
        self.metrics.retention_deleted.with_label_values(&["unused"]).inc_by(unused.len() as u64);
        self.metrics.retention_duration.observe(started.elapsed().as_secs_f64());
        tracing::info!(old_quotes = old, unused_symbols = unused.len(), "retention cycle done");
        Ok(())
    }
}
