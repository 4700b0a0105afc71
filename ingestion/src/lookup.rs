//! On-demand symbol lookup: every enabled source is asked at
//! once; the first that knows the symbol wins, its fetched quote is
//! published at once and the symbol becomes demand, so it keeps streaming
//! until a provider's demand set takes over.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream::FuturesUnordered};
use lizards_shared::Symbol;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    demand::Demand,
    sources::{Lookup, RawRecord, Source},
};

/// What the sources said about a symbol.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The source that knew it first.
    Known(String),
    /// Every source answered that it does not know it.
    Unknown,
    /// No source knew it, and some failed or did not answer in time: the
    /// answer may change, so nobody should remember it.
    Unanswered(Vec<String>),
}

#[derive(Clone)]
pub struct Finder {
    pub sources: Arc<Vec<Arc<dyn Source>>>,
    pub demand: Arc<Demand>,
    pub records: mpsc::Sender<RawRecord>,
    pub timeout: Duration,
}

impl Finder {
    pub async fn find(&self, symbol: &Symbol) -> Found {
        let deadline = Instant::now() + self.timeout;
        let mut asks: FuturesUnordered<_> = self
            .sources
            .iter()
            .map(|source| async move { (source.id().to_string(), source.lookup(symbol).await) })
            .collect();
        let mut problems = Vec::new();
        loop {
            let next = match tokio::time::timeout_at(deadline, asks.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) => break,
                Err(_) => {
                    problems.push(format!("{} source(s) did not answer within {:?}", asks.len(), self.timeout));
                    break;
                }
            };
            match next {
                (id, Ok(Lookup::Known(records))) => {
                    self.demand.pin(symbol, std::time::Instant::now());
                    for record in records {
                        // Best effort: the regular poll brings it anyway.
                        let _ = self.records.try_send(record);
                    }
                    tracing::info!(%symbol, source = %id, "symbol found");
                    return Found::Known(id);
                }
                (_, Ok(Lookup::Unknown)) => {}
                (id, Err(error)) => {
                    tracing::warn!(%symbol, source = %id, %error, "lookup failed");
                    problems.push(format!("{id}: {error}"));
                }
            }
        }
        if problems.is_empty() { Found::Unknown } else { Found::Unanswered(problems) }
    }
}
