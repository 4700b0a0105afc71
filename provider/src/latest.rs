//! In-memory latest quote per symbol, fed by the persistence worker. It
//! answers snapshots when the SQL store is down, so a history outage never
//! stops real-time prices.

use std::{collections::HashMap, sync::RwLock};

use lizards_shared::{Quote, Symbol};

#[derive(Default)]
pub struct LatestCache {
    quotes: RwLock<HashMap<Symbol, Quote>>,
}

impl LatestCache {
    /// Keeps each symbol's newest quote; older or redelivered ones never
    /// overwrite a newer one.
    pub fn update<'a>(&self, quotes: impl IntoIterator<Item = &'a Quote>) {
        let mut map = self.quotes.write().expect("latest lock");
        for quote in quotes {
            match map.get(&quote.symbol) {
                Some(current) if current.ts >= quote.ts => {}
                _ => {
                    map.insert(quote.symbol.clone(), quote.clone());
                }
            }
        }
    }

    pub fn get(&self, symbol: &Symbol) -> Option<Quote> {
        self.quotes.read().expect("latest lock").get(symbol).cloned()
    }

    pub fn contains(&self, symbol: &Symbol) -> bool {
        self.quotes.read().expect("latest lock").contains_key(symbol)
    }

    /// Drops symbols retention untracked.
    pub fn forget(&self, symbols: &[Symbol]) {
        let mut map = self.quotes.write().expect("latest lock");
        for symbol in symbols {
            map.remove(symbol);
        }
    }

    pub fn all(&self) -> Vec<Quote> {
        let mut all: Vec<Quote> = self.quotes.read().expect("latest lock").values().cloned().collect();
        all.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        all
    }
}
