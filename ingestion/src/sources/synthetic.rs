//! Synthetic prices: geometric Brownian motion per symbol, deterministic for
//! a seed, at a fixed total rate across the universe. Needs no network.

use std::{collections::HashSet, time::Duration};

use async_trait::async_trait;
use chrono::Utc;
use lizards_shared::{Symbol, shutdown::Shutdown};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Lookup, RawRecord, Source, SourceError, SourceStatus};

pub const ID: &str = "synthetic";
const BASE_URL: &str = "synthetic://gbm";

/// Records are emitted in ticks of this length, so high rates cost one
/// timer wake-up per tick rather than per record.
const TICK: Duration = Duration::from_millis(10);

/// Per-update volatility (standard deviation of the log return): prices move
/// visibly on a screen without drifting off within a session.
const STOCK_SIGMA: f64 = 0.0008;
const CRYPTO_SIGMA: f64 = 0.0015;
const STABLE_SIGMA: f64 = 0.00005;

/// Default universe with plausible starting prices.
pub const UNIVERSE: &[(&str, f64)] = &[
    ("AAPL", 228.0),
    ("MSFT", 415.0),
    ("GOOGL", 165.0),
    ("AMZN", 186.0),
    ("NVDA", 118.0),
    ("META", 520.0),
    ("TSLA", 242.0),
    ("BRK.B", 452.0),
    ("JPM", 211.0),
    ("V", 281.0),
    ("JNJ", 162.0),
    ("WMT", 79.0),
    ("PG", 171.0),
    ("MA", 489.0),
    ("UNH", 585.0),
    ("HD", 400.0),
    ("DIS", 91.0),
    ("BAC", 39.5),
    ("XOM", 114.0),
    ("KO", 71.0),
    ("PEP", 170.0),
    ("CSCO", 51.0),
    ("ORCL", 168.0),
    ("INTC", 22.0),
    ("AMD", 155.0),
    ("NFLX", 700.0),
    ("ADBE", 510.0),
    ("CRM", 270.0),
    ("NKE", 88.0),
    ("MCD", 295.0),
    ("IBM", 215.0),
    ("QCOM", 170.0),
    ("T", 21.5),
    ("VZ", 44.0),
    ("PFE", 29.0),
    ("BTC-USD", 63_000.0),
    ("ETH-USD", 2_600.0),
    ("USDT-USD", 1.0),
    ("BNB-USD", 570.0),
    ("SOL-USD", 145.0),
    ("XRP-USD", 0.58),
    ("USDC-USD", 1.0),
    ("STETH-USD", 2_600.0),
    ("ADA-USD", 0.35),
    ("AVAX-USD", 26.0),
    ("DOGE-USD", 0.11),
];

fn sigma(symbol: &str) -> f64 {
    match symbol {
        "USDT-USD" | "USDC-USD" => STABLE_SIGMA,
        s if s.ends_with("-USD") => CRYPTO_SIGMA,
        _ => STOCK_SIGMA,
    }
}

struct Path {
    symbol: Symbol,
    price: f64,
    sigma: f64,
}

pub struct Synthetic {
    rate: f64,
    seed: u64,
    symbols: Vec<(Symbol, f64)>,
    known: HashSet<Symbol>,
}

impl Synthetic {
    /// `symbols` narrows the universe (empty: all of it); names outside the
    /// universe start at 100.
    pub fn new(rate: f64, seed: u64, symbols: &[String]) -> Synthetic {
        let universe: Vec<(Symbol, f64)> =
            UNIVERSE.iter().map(|(s, p)| (Symbol::parse(s).expect("universe symbols are valid"), *p)).collect();
        let symbols: Vec<(Symbol, f64)> = if symbols.is_empty() {
            universe
        } else {
            symbols
                .iter()
                .filter_map(|s| Symbol::parse(s).ok())
                .map(|s| {
                    let start = universe.iter().find(|(u, _)| *u == s).map_or(100.0, |(_, p)| *p);
                    (s, start)
                })
                .collect()
        };
        let known = symbols.iter().map(|(s, _)| s.clone()).collect();
        Synthetic { rate: rate.max(0.0), seed, symbols, known }
    }

    fn paths(&self) -> Vec<Path> {
        self.symbols
            .iter()
            .map(|(symbol, price)| Path { symbol: symbol.clone(), price: *price, sigma: sigma(symbol.as_str()) })
            .collect()
    }
}

/// One GBM step with zero drift: `S * exp(-σ²/2 + σZ)`.
fn step(path: &mut Path, rng: &mut StdRng) -> f64 {
    let z: f64 = StandardNormal.sample(rng);
    path.price *= (-0.5 * path.sigma * path.sigma + path.sigma * z).exp();
    path.price
}

#[async_trait]
impl Source for Synthetic {
    fn id(&self) -> &str {
        ID
    }

    fn base_url(&self) -> &str {
        BASE_URL
    }

    async fn lookup(&self, symbol: &Symbol) -> Result<Lookup, SourceError> {
        // Its own stream brings the prices: nothing to publish at once.
        Ok(if self.known.contains(symbol) { Lookup::Known(Vec::new()) } else { Lookup::Unknown })
    }

    fn status(&self) -> SourceStatus {
        SourceStatus { id: ID.to_string(), kind: ID, base_url: BASE_URL.to_string(), enabled: true, polling: None }
    }

    async fn run(&self, out: mpsc::Sender<RawRecord>, shutdown: Shutdown) {
        let mut paths = self.paths();
        if paths.is_empty() || self.rate <= 0.0 {
            return;
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let per_tick = self.rate * TICK.as_secs_f64();
        let mut owed = 0.0;
        let mut next = 0usize;
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            owed += per_tick;
            while owed >= 1.0 {
                owed -= 1.0;
                let count = paths.len();
                let path = &mut paths[next];
                next = (next + 1) % count;
                let price = step(path, &mut rng);
                let volume = rng.random_range(1..=5_000) as f64;
                let ts = Utc::now();
                let record = RawRecord {
                    source: ID.to_string(),
                    symbol: path.symbol.to_string(),
                    price,
                    ts,
                    volume: Some(volume),
                    body: json!({"symbol": path.symbol, "price": price, "volume": volume, "ts": lizards_shared::time::rfc3339(&ts)}),
                };
                if out.send(record).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_has_thirty_stocks_and_eleven_cryptos() {
        let cryptos = UNIVERSE.iter().filter(|(s, _)| s.ends_with("-USD")).count();
        assert_eq!(cryptos, 11);
        assert!(UNIVERSE.len() - cryptos >= 30);
        for (s, _) in UNIVERSE {
            Symbol::parse(s).unwrap();
        }
    }

    #[test]
    fn same_seed_same_prices() {
        let walk = |seed| {
            let source = Synthetic::new(100.0, seed, &[]);
            let mut paths = source.paths();
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100).map(|i| step(&mut paths[i % 3], &mut rng)).collect::<Vec<f64>>()
        };
        assert_eq!(walk(7), walk(7));
        assert_ne!(walk(7), walk(8));
        assert!(walk(7).iter().all(|p| p.is_finite() && *p > 0.0));
    }

    #[tokio::test]
    async fn symbols_outside_the_universe_are_unknown() {
        let source = Synthetic::new(10.0, 1, &[]);
        assert_eq!(source.lookup(&Symbol::parse("AAPL").unwrap()).await.unwrap(), Lookup::Known(Vec::new()));
        assert_eq!(source.lookup(&Symbol::parse("XYZ").unwrap()).await.unwrap(), Lookup::Unknown);
    }

    #[tokio::test]
    async fn emits_at_about_the_configured_rate() {
        let source = Synthetic::new(1000.0, 1, &["AAPL".to_string(), "MSFT".to_string()]);
        let (tx, mut rx) = mpsc::channel(10_000);
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        let run = tokio::spawn(async move { source.run(tx, stop).await });
        let mut symbols = HashSet::new();
        for _ in 0..50 {
            let record = rx.recv().await.unwrap();
            assert_eq!(record.source, "synthetic");
            symbols.insert(record.symbol);
        }
        shutdown.cancel();
        run.await.unwrap();
        assert_eq!(symbols.len(), 2);
    }
}
