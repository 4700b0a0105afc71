//! `lizards bench soak`: the all-in-one platform under a mixed load for a
//! long time, watching for what only shows over time: memory, descriptors,
//! queues or tasks that keep growing, and confirmed quotes that never reach
//! the store. Loopback only, bounded in time and clients.
//!
//! Load, all at once for `--duration`:
//! - the synthetic source at `--rate` quotes/s;
//! - `--clients` WebSocket clients on the provider, each subscribing and
//!   unsubscribing at random and reconnecting now and then;
//! - one client that subscribes to everything and never reads;
//! - `--rest-clients` clients reading quotes, history, candles and symbols
//!   through the gateway;
//! - `--traders` accounts (through the gateway) placing orders, with alert
//!   rules near the price that fire as it moves, watched on a WebSocket;
//! - marker quotes sent through the gateway's `/ingest`, two per second,
//!   each remembered once confirmed.
//!
//! Every `--sample` it records resident memory, open descriptors, the
//! tokio tasks alive and the broker's queue depths. The run fails when a
//! series grows over the last half of the run (least-squares slope times
//! that half's length) by more than its allowance, or when a confirmed
//! marker is missing from the store once the queues have drained. Growth
//! is judged on runs of [`GROWTH_JUDGED_FROM`] or longer only: in a
//! shorter one the last half is still warm-up (allocator arenas, the raw
//! store filling, pools opening), and its slope says nothing about leaks.
//! The report ends with what lies in the `dead` queue, by routing key.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use futures::{SinkExt, StreamExt};
use lizards_ingestion::sources::synthetic::UNIVERSE;
use lizards_shared::{
    Symbol,
    broker::{self, ALERTS_EVAL_QUEUE, Broker, DEAD_QUEUE, NOTIFY_QUEUE, PERSIST_QUEUE},
    cache::Quota,
    config::Config,
    shutdown::Shutdown,
    store::{PostgresStore, QuoteStore, SqliteStore},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};
use tokio::{task::JoinSet, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use super::process::{self, MIB};
use crate::platform::{self, Target};

#[derive(Debug, Clone, Args)]
pub struct SoakBench {
    /// How long the load runs.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Quotes per second from the synthetic source.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Symbols the synthetic source quotes.
    #[arg(long, default_value_t = 40)]
    symbols: usize,
    /// WebSocket clients subscribing and unsubscribing at random.
    #[arg(long, default_value_t = 500)]
    clients: usize,
    /// REST clients reading through the gateway.
    #[arg(long, default_value_t = 50)]
    rest_clients: usize,
    /// Accounts placing orders, with alert rules that fire.
    #[arg(long, default_value_t = 10)]
    traders: usize,
    /// Time between two samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    sample: Duration,
}

/// Marker quotes go to these symbols, in turn.
const MARKERS: [&str; 4] = ["SOAKA", "SOAKB", "SOAKC", "SOAKD"];
const MARKER_EVERY: Duration = Duration::from_millis(500);
/// Shortest run whose growth is judged.
const GROWTH_JUDGED_FROM: Duration = Duration::from_secs(10 * 60);
/// Dead letters looked at for the report.
const DEAD_LETTERS_SHOWN: u16 = 100;
/// Longest wait at the end for the queues to drain and the markers to land.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
const PASSWORD: &str = "soak-password-1";

/// One sampled series and how much it may grow over the run's last half.
struct Series {
    name: &'static str,
    unit: &'static str,
    /// Growth allowed: this share of the series' mean, or `floor`, whichever
    /// is larger.
    share: f64,
    floor: f64,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: &'static str, unit: &'static str, share: f64, floor: f64) -> Series {
        Series { name, unit, share, floor, points: Vec::new() }
    }

    /// Least-squares growth over the last half of the points, its allowance,
    /// and the slope per hour.
    fn growth(&self) -> (f64, f64, f64) {
        let half = &self.points[self.points.len() / 2..];
        let n = half.len() as f64;
        if half.len() < 2 {
            return (0.0, self.floor, 0.0);
        }
        let (mean_t, mean_v) = (half.iter().map(|p| p.0).sum::<f64>() / n, half.iter().map(|p| p.1).sum::<f64>() / n);
        let covariance: f64 = half.iter().map(|(t, v)| (t - mean_t) * (v - mean_v)).sum();
        let variance: f64 = half.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
        let slope = if variance > 0.0 { covariance / variance } else { 0.0 };
        let span = half.last().map_or(0.0, |p| p.0) - half[0].0;
        (slope * span, (self.share * mean_v).max(self.floor), slope * 3600.0)
    }

    fn summary(&self) -> Value {
        let (growth, allowed, per_hour) = self.growth();
        let values = self.points.iter().map(|p| p.1);
        json!({
            "unit": self.unit,
            "first": self.points.first().map(|p| p.1),
            "last": self.points.last().map(|p| p.1),
            "max": values.fold(f64::MIN, f64::max),
            "growth_last_half": growth.round(),
            "allowed": allowed.round(),
            "slope_per_hour": per_hour.round(),
        })
    }
}

/// What the load did, counted by its tasks.
#[derive(Default)]
struct Tally {
    updates: AtomicU64,
    ws_connects: AtomicU64,
    ws_failures: AtomicU64,
    rest_ok: AtomicU64,
    rest_4xx: AtomicU64,
    rest_5xx: AtomicU64,
    rest_errors: AtomicU64,
    orders: AtomicU64,
    orders_refused: AtomicU64,
    alerts: AtomicU64,
    markers_refused: AtomicU64,
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

struct Endpoints {
    gateway: String,
    provider_metrics: String,
    provider_ws: String,
    gateway_ws: String,
    http: reqwest::Client,
    symbols: Vec<String>,
    ingest_token: String,
}

impl SoakBench {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        anyhow::ensure!(self.symbols > 0 && self.rate > 0.0, "--symbols and --rate must be positive");
        anyhow::ensure!(self.symbols <= UNIVERSE.len(), "--symbols: the synthetic source knows {}", UNIVERSE.len());
        anyhow::ensure!(!self.sample.is_zero(), "--sample must be longer than zero");
        let dir = tempfile::tempdir()?;
        let shutdown = Shutdown::new();
        let symbols: Vec<String> = UNIVERSE.iter().take(self.symbols).map(|(s, _)| s.to_string()).collect();
        let ingest_token = uuid::Uuid::new_v4().simple().to_string();
        let mut config = config.ephemeral(dir.path());
        config.ingestion.synthetic_rate = self.rate;
        config.ingestion.synthetic_symbols = symbols.clone();
        config.ingestion.ingest_token = Some(ingest_token.clone());
        // Every client shares 127.0.0.1: per-address limits would measure
        // the limiter, not the platform. It still runs on every request.
        let plenty = Quota::new(10_000_000, Duration::from_secs(60));
        for quota in [
            &mut config.gateway.rate_limit_anonymous,
            &mut config.gateway.rate_limit_user,
            &mut config.gateway.rate_limit_lookup,
            &mut config.gateway.rate_limit_auth,
            &mut config.gateway.rate_limit_ws,
        ] {
            *quota = plenty;
        }
        config.provider.alert_user_quota = plenty;
        let platform = platform::start(config.clone(), Target::All, shutdown.clone()).await?;
        let gateway = platform.gateway.context("gateway started")?;
        let provider = platform.provider.context("provider started")?;
        let broker = platform.broker.clone().context("the platform's broker")?;
        let target = Arc::new(Endpoints {
            gateway: format!("http://{gateway}"),
            provider_metrics: format!("http://{provider}/metrics"),
            provider_ws: format!("ws://{provider}/ws"),
            gateway_ws: format!("ws://{gateway}/ws"),
            http: lizards_shared::http::client(),
            symbols,
            ingest_token,
        });
        eprintln!(
            "bench soak: {:?} at {} quotes/s over {} symbols; {} WebSocket clients, {} REST clients, {} traders, sample every {:?}",
            self.duration, self.rate, self.symbols, self.clients, self.rest_clients, self.traders, self.sample
        );
        let result = self.soak(&target, broker.as_ref(), &config).await;
        shutdown.cancel();
        platform.stopped().await?;
        let report = result?;
        println!("{report}");
        if let Some(failures) = report["failures"].as_array()
            && !failures.is_empty()
        {
            bail!(
                "soak failed: {}",
                failures.iter().map(|f| f.as_str().unwrap_or_default()).collect::<Vec<_>>().join("; ")
            );
        }
        Ok(())
    }

    async fn soak(&self, target: &Arc<Endpoints>, broker: &dyn Broker, config: &Config) -> anyhow::Result<Value> {
        wait_for_prices(target).await?;
        let store: Arc<dyn QuoteStore> = match &config.common.database_url {
            Some(url) => Arc::new(PostgresStore::connect(url).await?),
            None => Arc::new(SqliteStore::open(&config.common.data_dir.join("lizards.db")).await?),
        };
        // A shared database may hold an earlier run's markers.
        let earlier = stored_markers(store.as_ref()).await?;
        let tally = Arc::new(Tally::default());
        let stop = Shutdown::new();
        let mut load = JoinSet::new();
        for i in 0..self.clients {
            load.spawn(churner(target.clone(), tally.clone(), stop.clone(), i as u64));
        }
        load.spawn(never_reads(target.clone(), stop.clone()));
        for i in 0..self.rest_clients {
            load.spawn(reader(target.clone(), tally.clone(), stop.clone(), i as u64));
        }
        for i in 0..self.traders {
            load.spawn(trader(target.clone(), tally.clone(), stop.clone(), i as u64));
        }
        let confirmed = Arc::new(AtomicU64::new(0));
        load.spawn(markers(target.clone(), tally.clone(), confirmed.clone(), stop.clone()));

        let mut series = [
            Series::new("resident memory", "MiB", 0.10, 16.0),
            Series::new("open descriptors", "fds", 0.10, 100.0),
            Series::new("tasks alive", "tasks", 0.10, 200.0),
            Series::new(PERSIST_QUEUE, "messages", 0.0, self.rate * 5.0),
            Series::new(ALERTS_EVAL_QUEUE, "messages", 0.0, self.rate * 5.0),
            Series::new(NOTIFY_QUEUE, "messages", 0.0, 100.0),
            Series::new(DEAD_QUEUE, "messages", 0.0, 10.0),
        ];
        let started = Instant::now();
        let end = started + self.duration;
        let mut next = started;
        while next <= end {
            tokio::time::sleep_until(next).await;
            let at = started.elapsed().as_secs_f64();
            let values = [
                process::resident_bytes(std::process::id())? as f64 / MIB,
                process::open_files(std::process::id())? as f64,
                tokio::runtime::Handle::current().metrics().num_alive_tasks() as f64,
                depth(broker, PERSIST_QUEUE).await,
                depth(broker, ALERTS_EVAL_QUEUE).await,
                depth(broker, NOTIFY_QUEUE).await,
                depth(broker, DEAD_QUEUE).await,
            ];
            for (series, value) in series.iter_mut().zip(values) {
                series.points.push((at, value));
            }
            eprintln!(
                "soak {at:>6.0} s: rss {:.0} MiB, fds {:.0}, tasks {:.0}, queues persist {:.0} eval {:.0} notify {:.0} dead {:.0}; \
                 updates {}, REST {} ok / {} 5xx, orders {}, alerts {}, markers {}",
                values[0],
                values[1],
                values[2],
                values[3],
                values[4],
                values[5],
                values[6],
                count(&tally.updates),
                count(&tally.rest_ok),
                count(&tally.rest_5xx),
                count(&tally.orders),
                count(&tally.alerts),
                count(&confirmed),
            );
            next += self.sample;
        }
        stop.cancel();
        while load.join_next().await.is_some() {}

        let confirmed = count(&confirmed);
        let stored = wait_for_markers(store.as_ref(), broker, earlier + confirmed).await? - earlier;
        let page = target.http.get(&target.provider_metrics).send().await?.text().await?;
        let slow_closes = super::sample(&page, "lizards_ws_closes_total", "reason=\"slow\"").unwrap_or(0.0);
        let mut failures = Vec::new();
        let growth_judged = self.duration >= GROWTH_JUDGED_FROM;
        for s in series.iter().filter(|_| growth_judged) {
            let (growth, allowed, _) = s.growth();
            if growth > allowed {
                failures.push(format!(
                    "{} grew by {growth:.0} {} over the last half (allowed {allowed:.0})",
                    s.name, s.unit
                ));
            }
        }
        if stored < confirmed {
            failures
                .push(format!("{} of {confirmed} confirmed marker quotes missing from the store", confirmed - stored));
        }
        let requests = count(&tally.rest_ok) + count(&tally.rest_4xx) + count(&tally.rest_5xx);
        if count(&tally.rest_5xx) + count(&tally.rest_errors) > requests / 1000 {
            failures.push(format!(
                "{} REST 5xx and {} transport errors in {requests} requests (allowed 0.1 %)",
                count(&tally.rest_5xx),
                count(&tally.rest_errors)
            ));
        }
        let (_, dead) = broker::peek(broker, DEAD_QUEUE, DEAD_LETTERS_SHOWN).await?;
        let mut dead_letters = serde_json::Map::new();
        for letter in dead {
            let seen = dead_letters.entry(letter.routing_key).or_insert(json!(0));
            *seen = json!(seen.as_u64().unwrap_or(0) + 1);
        }
        Ok(json!({
            "bench": "soak", "seconds": self.duration.as_secs(), "rate": self.rate, "symbols": self.symbols,
            "clients": self.clients, "rest_clients": self.rest_clients, "traders": self.traders,
            "samples": series[0].points.len(),
            "growth_judged": growth_judged,
            "series": series.iter().map(|s| (s.name.to_string(), s.summary())).collect::<serde_json::Map<_, _>>(),
            "ws": {"updates": count(&tally.updates), "connects": count(&tally.ws_connects), "failures": count(&tally.ws_failures)},
            "rest": {"ok": count(&tally.rest_ok), "4xx": count(&tally.rest_4xx), "5xx": count(&tally.rest_5xx), "errors": count(&tally.rest_errors)},
            "orders": {"placed": count(&tally.orders), "refused": count(&tally.orders_refused)},
            "alerts_received": count(&tally.alerts),
            "slow_clients_closed": slow_closes,
            "markers": {"confirmed": confirmed, "stored": stored, "refused": count(&tally.markers_refused)},
            "dead_letters": dead_letters,
            "failures": failures,
        }))
    }
}

/// Waits (bounded) until the persistence queue is empty and `expected`
/// markers are in the store; returns how many are.
async fn wait_for_markers(store: &dyn QuoteStore, broker: &dyn Broker, expected: u64) -> anyhow::Result<u64> {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    loop {
        let stored = stored_markers(store).await?;
        let drained = broker.queue_len(PERSIST_QUEUE).await? == 0;
        if (drained && stored >= expected) || Instant::now() >= deadline {
            return Ok(stored);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stored_markers(store: &dyn QuoteStore) -> anyhow::Result<u64> {
    let mut stored = 0;
    for symbol in MARKERS {
        stored += store.count(&Symbol::parse(symbol)?).await?;
    }
    Ok(stored)
}

async fn depth(broker: &dyn Broker, queue: &str) -> f64 {
    broker.queue_len(queue).await.map_or(f64::NAN, |n| n as f64)
}

/// Waits until the synthetic source's first quotes are in, so clients and
/// traders find prices.
async fn wait_for_prices(target: &Endpoints) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for symbol in &target.symbols {
        let url = format!("{}/quotes/{symbol}", target.gateway);
        while !target.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            anyhow::ensure!(Instant::now() < deadline, "no price for {symbol} within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Sleeps `duration` unless the load stops first; `false` then.
async fn pause(stop: &Shutdown, duration: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

fn millis(rng: &mut StdRng, range: std::ops::Range<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range))
}

/// A WebSocket client that connects, changes its subscriptions every 1–5 s
/// for 5–60 s, then closes and connects again.
async fn churner(target: Arc<Endpoints>, tally: Arc<Tally>, stop: Shutdown, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Spread the first connects over two seconds.
    if !pause(&stop, millis(&mut rng, 0..2000)).await {
        return;
    }
    while !stop.is_cancelled() {
        let Ok((socket, _)) = tokio_tungstenite::connect_async(&target.provider_ws).await else {
            tally.ws_failures.fetch_add(1, Ordering::Relaxed);
            if !pause(&stop, Duration::from_secs(1)).await {
                return;
            }
            continue;
        };
        tally.ws_connects.fetch_add(1, Ordering::Relaxed);
        let (mut tx, mut rx) = socket.split();
        let session_end = Instant::now() + millis(&mut rng, 5_000..60_000);
        let mut change = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(session_end) => break,
                _ = tokio::time::sleep_until(change) => {
                    let kind = if rng.random_bool(0.6) { "subscribe" } else { "unsubscribe" };
                    let how_many = rng.random_range(1..=5);
                    let picked: Vec<&String> = target.symbols.choose_multiple(&mut rng, how_many).collect();
                    let frame = json!({"type": kind, "symbols": picked}).to_string();
                    if tx.send(Message::Text(frame.into())).await.is_err() {
                        break;
                    }
                    change = Instant::now() + millis(&mut rng, 1_000..5_000);
                }
                message = rx.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(frame) = serde_json::from_str::<Value>(text.as_str())
                            && frame["type"] == "price_update"
                        {
                            let updates = frame["data"].as_object().map_or(0, |data| data.len());
                            tally.updates.fetch_add(updates as u64, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        let _ = tx.send(Message::Close(None)).await;
    }
}

/// Subscribes to every symbol and never reads: the server must shed it,
/// not buffer for it.
async fn never_reads(target: Arc<Endpoints>, stop: Shutdown) {
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&target.provider_ws).await else { return };
    let frame = json!({"type": "subscribe", "symbols": target.symbols}).to_string();
    let _ = socket.send(Message::Text(frame.into())).await;
    stop.cancelled().await;
}

/// Reads quotes, history, candles and the symbol list through the gateway,
/// 50–250 ms apart.
async fn reader(target: Arc<Endpoints>, tally: Arc<Tally>, stop: Shutdown, seed: u64) {
    let mut rng = StdRng::seed_from_u64(1_000_000 + seed);
    while pause(&stop, millis(&mut rng, 50..250)).await {
        let symbol = target.symbols.choose(&mut rng).expect("symbols");
        let path = match rng.random_range(0..4) {
            0 => format!("/quotes/{symbol}"),
            1 => format!("/quotes/{symbol}/history?limit=50"),
            2 => format!("/quotes/{symbol}/candles?interval=1m"),
            _ => "/symbols".to_string(),
        };
        let answer = target.http.get(format!("{}{path}", target.gateway)).send().await;
        tally_status(&tally, answer.map(|r| r.status()));
    }
}

fn tally_status(tally: &Tally, status: Result<reqwest::StatusCode, reqwest::Error>) {
    let counter = match status {
        Ok(status) if status.is_server_error() => &tally.rest_5xx,
        Ok(status) if status.is_client_error() => &tally.rest_4xx,
        Ok(_) => &tally.rest_ok,
        Err(_) => &tally.rest_errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An account with cash, two alert rules on either side of a price, a
/// WebSocket for its alerts, and an order every 1–3 s.
async fn trader(target: Arc<Endpoints>, tally: Arc<Tally>, stop: Shutdown, seed: u64) {
    let mut rng = StdRng::seed_from_u64(2_000_000 + seed);
    let Ok(token) = account(&target).await else {
        tally.rest_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let symbol = target.symbols[seed as usize % target.symbols.len()].clone();
    let price = latest_price(&target, &symbol).await.unwrap_or(100.0);
    for (kind, threshold) in [("above", price * 1.0005), ("below", price * 0.9995)] {
        let rule = json!({"symbol": symbol, "kind": kind, "threshold": threshold, "channels": ["ws"]});
        let _ = call(&target, reqwest::Method::POST, "/alerts/rules", &token, rule).await;
    }
    let alerts = {
        let (url, tally, stop) = (format!("{}?token={token}", target.gateway_ws), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else { return };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    message = socket.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            if serde_json::from_str::<Value>(text.as_str()).is_ok_and(|f| f["type"] == "alert") {
                                tally.alerts.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
            let _ = socket.send(Message::Close(None)).await;
        })
    };
    let mut holding = false;
    while pause(&stop, millis(&mut rng, 1_000..3_000)).await {
        let side = if holding { "sell" } else { "buy" };
        let order = json!({"symbol": symbol, "side": side, "quantity": "1"});
        match call(&target, reqwest::Method::POST, "/portfolio/orders", &token, order).await {
            Ok(status) if status.is_success() => {
                holding = !holding;
                tally.orders.fetch_add(1, Ordering::Relaxed);
            }
            status => {
                tally.orders_refused.fetch_add(1, Ordering::Relaxed);
                tally_status(&tally, status);
            }
        }
    }
    let _ = alerts.await;
}

async fn account(target: &Endpoints) -> anyhow::Result<String> {
    let email = format!("soak-{}@example.com", uuid::Uuid::new_v4());
    let body = json!({"email": email, "password": PASSWORD});
    let http = &target.http;
    http.post(format!("{}/auth/register", target.gateway)).json(&body).send().await?.error_for_status()?;
    let login: Value = http
        .post(format!("{}/auth/login", target.gateway))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = login["access_token"].as_str().context("access_token")?.to_string();
    call(target, reqwest::Method::POST, "/portfolio/deposit", &token, json!({"amount": "1000000"})).await?;
    Ok(token)
}

async fn latest_price(target: &Endpoints, symbol: &str) -> anyhow::Result<f64> {
    let quote: Value = target.http.get(format!("{}/quotes/{symbol}", target.gateway)).send().await?.json().await?;
    quote["price"].as_f64().context("price")
}

async fn call(
    target: &Endpoints,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Value,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let response =
        target.http.request(method, format!("{}{path}", target.gateway)).bearer_auth(token).json(&body).send().await?;
    Ok(response.status())
}

/// Sends one marker quote through the gateway's `/ingest` every
/// [`MARKER_EVERY`], counting those confirmed (accepted: published with a
/// broker confirm).
async fn markers(target: Arc<Endpoints>, tally: Arc<Tally>, confirmed: Arc<AtomicU64>, stop: Shutdown) {
    let mut sent = 0usize;
    while pause(&stop, MARKER_EVERY).await {
        let symbol = MARKERS[sent % MARKERS.len()];
        sent += 1;
        // A price that stays put: no jump flags, no alerts.
        let quote = json!({"symbol": symbol, "price": 100.0, "timestamp": Utc::now().to_rfc3339(), "source": "soak"});
        let answer = target
            .http
            .post(format!("{}/ingest", target.gateway))
            .bearer_auth(&target.ingest_token)
            .json(&quote)
            .send()
            .await;
        let accepted = match answer {
            Ok(response) if response.status().is_success() => {
                response.json::<Value>().await.is_ok_and(|report| report["accepted"] == 1)
            }
            _ => false,
        };
        let counter = if accepted { &*confirmed } else { &tally.markers_refused };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
