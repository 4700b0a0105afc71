//! `lizards bench`: the project's own benchmarks (their targets: docs/benchmarks.md). Each run is
//! bounded in clients and time, prints its figures and exits.

mod alerts;
mod broker;
mod conns;
mod gateway;
mod pinned;
mod process;
mod reference;
mod soak;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use lizards_ingestion::sources::synthetic::UNIVERSE;
use lizards_shared::{
    Quote, Symbol,
    config::Config,
    shutdown::Shutdown,
    store::{PostgresStore, QuoteStore},
    time,
};
use serde::Deserialize;
use tokio::{sync::Semaphore, time::Instant};
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};

use crate::platform::{self, Target};

#[derive(Debug, Args)]
pub struct BenchCommand {
    #[command(subcommand)]
    kind: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// WebSocket fan-out: N clients × M symbols while the synthetic source
    /// publishes at a given rate; prints delivered symbol updates/s, frames/s
    /// and quote-time → receipt latency.
    Ws(WsBench),
    /// Batched persistence into PostgreSQL (`DATABASE_URL`): the quote
    /// store's `insert_batch` against `psql \copy` of the same rows, in a
    /// scratch schema dropped afterwards.
    Persist(PersistBench),
    /// Proxied REST through the gateway (rate limiting on) next to nginx
    /// `proxy_pass` and the provider direct; cache hits; the rate-limit
    /// check's latency against the store.
    Gateway(gateway::GatewayBench),
    /// Alert evaluation: quotes/s drained from `alerts.eval` with no rules,
    /// quiet rules and flapping rules on the quoted symbols, and the time
    /// from a crossing quote's publish to the owner's `alert` frame.
    Alerts(alerts::AlertsBench),
    /// The plain reference for latency through RabbitMQ: lapin alone
    /// publishing quotes with confirms to the platform's three queues (no
    /// Lizards); publish → live-queue latency and RabbitMQ's CPU.
    Broker(broker::BrokerBench),
    /// Idle WebSocket connections on one provider process (run as a child
    /// process): resident memory per connection and open files.
    Conns(conns::ConnsBench),
    /// The all-in-one under a mixed load for a long time (default 30 min):
    /// fails when memory, descriptors, tasks or queues keep growing, or a
    /// confirmed quote is missing from the store at the end.
    Soak(soak::SoakBench),
}

#[derive(Debug, Clone, Args)]
pub struct WsBench {
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Symbols each client subscribes to (without `--universe`, all
    /// clients watch the same ones and the source publishes only these).
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// Symbols the source publishes, when more than `--symbols`: client `i`
    /// then watches the `--symbols` consecutive ones from the `i`-th, so
    /// every symbol has as many watchers and clients watch different sets.
    /// Past the synthetic universe's names come `SYN0047`, `SYN0048`, ...
    #[arg(long, default_value_t = 0)]
    universe: usize,
    /// Quotes per second published in total.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time after all clients subscribed before measuring.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Benchmark a running provider (or gateway) at this ws:// URL instead of
    /// an in-process platform (its source then sets the rate).
    #[arg(long)]
    url: Option<String>,
    /// Then run the same clients against a minimal tokio-tungstenite
    /// broadcast server of the same protocol (no broker, store or outbox)
    /// publishing at the same rate, and print Lizards / reference.
    #[arg(long)]
    reference: bool,
    /// Run each server as a child process pinned to core 0, the clients in
    /// this process pinned to core 1, and report the server's CPU time
    /// (read from /proc) per delivered update, with and without clients.
    #[arg(long, conflicts_with = "url")]
    pinned: bool,
    /// Internal: be the server of a `--pinned` run.
    #[arg(long, hide = true, value_enum)]
    serve: Option<pinned::Server>,
}

impl BenchCommand {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        match self.kind {
            BenchKind::Ws(bench) => bench.run(config).await,
            BenchKind::Persist(bench) => bench.run(config).await,
            BenchKind::Gateway(bench) => bench.run(config).await,
            BenchKind::Alerts(bench) => bench.run(config).await,
            BenchKind::Conns(bench) => bench.run(config).await,
            BenchKind::Broker(bench) => bench.run(config).await,
            BenchKind::Soak(bench) => bench.run(config).await,
        }
    }
}

/// A server frame as the benchmark client reads it. `D` is what it keeps of
/// `data`: only its size on most frames, the timestamps on sampled ones.
#[derive(Deserialize)]
struct Frame<'a, D> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default = "Option::default")]
    data: Option<D>,
}

/// The number of entries of a JSON object, read without keeping them.
struct Entries(usize);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> serde::de::Visitor<'de> for Count {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut count = 0;
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {
                    count += 1;
                }
                Ok(Entries(count))
            }
        }
        deserializer.deserialize_map(Count)
    }
}

#[derive(Deserialize)]
struct Update<'a> {
    #[serde(borrow)]
    timestamp: &'a str,
}

#[derive(Default)]
struct Counters {
    updates: AtomicU64,
    frames: AtomicU64,
    subscribed: AtomicU64,
    failed: AtomicU64,
}

/// Latency is sampled on one frame in this many, to keep the client's share
/// of the CPU small.
const LATENCY_SAMPLE: u64 = 4;

/// What one target delivered to the benchmark clients.
struct WsFigures {
    connected: u64,
    seconds: f64,
    updates_per_s: f64,
    frames_per_s: f64,
    latency: Histogram<u64>,
    /// CPU time the server process used while counting, when its pid is
    /// known.
    server_cpu: Option<Duration>,
}

impl WsFigures {
    fn ms(&self, quantile: f64) -> f64 {
        ms(&self.latency, quantile)
    }

    fn print(&self, name: &str, rate: f64) {
        // Every client watches every published symbol.
        let ideal = rate * self.connected as f64;
        println!("{name}: connected and subscribed: {} clients", self.connected);
        println!(
            "{name}: delivered symbol updates/s: {:.0} (each quote to every client: {ideal:.0})",
            self.updates_per_s
        );
        println!(
            "{name}: frames/s: {:.0} ({:.2} updates per frame)",
            self.frames_per_s,
            self.updates_per_s / self.frames_per_s.max(1.0)
        );
        println!(
            "{name}: latency quote ts → receipt (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (samples {})",
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.latency.max() as f64 / 1000.0,
            self.latency.len()
        );
    }
}

/// The first `count` names of the synthetic universe, then `SYN<n>`
/// (which the synthetic source starts at 100).
fn quoted_symbols(count: usize) -> Vec<String> {
    (0..count).map(|i| UNIVERSE.get(i).map_or_else(|| format!("SYN{i:04}"), |(s, _)| s.to_string())).collect()
}

impl WsBench {
    /// Symbols each client watches, of the `quoted` ones.
    fn watched(&self, quoted: &[String]) -> usize {
        self.symbols.clamp(1, quoted.len())
    }

    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        let symbols = quoted_symbols(self.universe.max(self.symbols).max(1));
        if let Some(server) = self.serve {
            return pinned::serve(&self, server, &symbols, config).await;
        }
        if self.pinned {
            return pinned::run(&self, &symbols).await;
        }
        let shutdown = Shutdown::new();
        let dir = tempfile::tempdir()?;
        let (url, metrics_url, platform) = match &self.url {
            Some(url) => (url.clone(), None, None),
            None => {
                let (platform, ws, metrics) = self.start_platform(config, dir.path(), &symbols, &shutdown).await?;
                (ws, Some(metrics), Some(platform))
            }
        };
        println!(
            "bench ws: {} clients × {} of {} symbols, {} quotes/s, warm-up {:?}, measuring {:?}, target {url}",
            self.clients,
            self.watched(&symbols),
            symbols.len(),
            self.rate,
            self.warmup,
            self.duration
        );
        let flow = platform.as_ref().map(Flow::of);
        let flow_before = match &flow {
            Some(flow) => Some(flow.counts().await?),
            None => None,
        };
        let (lizards, conflated) = self.measure(&url, &symbols, metrics_url.as_deref(), None).await?;
        let through = match (&flow, flow_before) {
            (Some(flow), Some(before)) => Some(flow.through(before).await?),
            _ => None,
        };
        shutdown.cancel();
        if let Some(platform) = platform {
            platform.stopped().await?;
        }
        lizards.print("lizards", self.rate);
        if let Some(conflated) = conflated {
            println!("lizards: server conflated updates/s: {conflated:.0}");
        }
        let mut summary = serde_json::json!({
            "bench": "ws", "clients": self.clients, "connected": lizards.connected,
            "symbols": self.watched(&symbols), "universe": symbols.len(),
            "rate": self.rate, "seconds": lizards.seconds, "updates_per_s": lizards.updates_per_s.round(),
            "frames_per_s": lizards.frames_per_s.round(), "p50_ms": lizards.ms(0.5), "p99_ms": lizards.ms(0.99),
            "conflated_per_s": conflated.map(f64::round),
        });
        if let Some(through) = through {
            through.print();
            summary["published_per_s"] = through.published_per_s.round().into();
            summary["persisted_per_s"] = through.persisted_per_s.round().into();
            summary["not_persisted"] = through.not_persisted.into();
        }
        if self.reference {
            // After Lizards has stopped, so the two never share the cores.
            let stop = Shutdown::new();
            let server = reference::start(&symbols, self.rate, stop.clone()).await?;
            let url = format!("ws://{}/ws", server.addr);
            let (plain, _) = self.measure(&url, &symbols, None, None).await?;
            stop.cancel();
            plain.print("reference", self.rate);
            let skipped = server.skipped.load(Ordering::Relaxed);
            println!("reference: frames skipped by lagging connections: {skipped}");
            let ratio = lizards.updates_per_s / plain.updates_per_s.max(1.0);
            println!("lizards / reference delivered updates: {ratio:.2}");
            summary["reference"] = serde_json::json!({
                "updates_per_s": plain.updates_per_s.round(), "frames_per_s": plain.frames_per_s.round(),
                "p50_ms": plain.ms(0.5), "p99_ms": plain.ms(0.99), "skipped_frames": skipped,
            });
            summary["ratio"] = serde_json::json!((ratio * 100.0).round() / 100.0);
        }
        println!("{summary}");
        Ok(())
    }

    /// The all-in-one platform in-process, its synthetic source publishing
    /// `symbols` at the benchmark's rate; with its WebSocket and metrics URLs.
    async fn start_platform(
        &self,
        config: Config,
        dir: &std::path::Path,
        symbols: &[String],
        shutdown: &Shutdown,
    ) -> anyhow::Result<(platform::Platform, String, String)> {
        let mut config = config.ephemeral(dir);
        config.ingestion.synthetic_rate = self.rate;
        config.ingestion.synthetic_symbols = symbols.to_vec();
        let platform = platform::start(config, Target::All, shutdown.clone()).await?;
        let provider = platform.provider.context("provider started")?;
        Ok((platform, format!("ws://{provider}/ws"), format!("http://{provider}/metrics")))
    }

    /// Connects the clients to `url`, waits for the warm-up, then counts for
    /// the measured time. Also returns the server's conflated updates/s when
    /// its metrics are known; with `server`'s pid, the figures hold the CPU
    /// time that process used while counting.
    async fn measure(
        &self,
        url: &str,
        symbols: &[String],
        metrics_url: Option<&str>,
        server: Option<u32>,
    ) -> anyhow::Result<(WsFigures, Option<f64>)> {
        let counters = Arc::new(Counters::default());
        let gate = Arc::new(Semaphore::new(64));
        let stop = Shutdown::new();
        let watched = self.watched(symbols);
        let mut tasks = Vec::with_capacity(self.clients);
        for i in 0..self.clients {
            let mine: Vec<&String> = (0..watched).map(|k| &symbols[(i + k) % symbols.len()]).collect();
            let subscribe = serde_json::json!({"type": "subscribe", "symbols": mine}).to_string();
            let (url, counters, gate, stop) = (url.to_string(), counters.clone(), gate.clone(), stop.clone());
            tasks.push(tokio::spawn(async move { client(url, subscribe, counters, gate, stop).await }));
        }
        let connect_deadline = Instant::now() + Duration::from_secs(120);
        while counters.subscribed.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
            < self.clients as u64
            && Instant::now() < connect_deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let connected = counters.subscribed.load(Ordering::Relaxed);
        tokio::time::sleep(self.warmup).await;

        let conflated_before = scrape(metrics_url, "lizards_ws_updates_conflated_total").await;
        let cpu_before = server.map(process::cpu_time).transpose()?;
        let (u0, f0, t0) =
            (counters.updates.load(Ordering::Relaxed), counters.frames.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(self.duration).await;
        let (u1, f1, elapsed) =
            (counters.updates.load(Ordering::Relaxed), counters.frames.load(Ordering::Relaxed), t0.elapsed());
        let server_cpu =
            server.map(process::cpu_time).transpose()?.zip(cpu_before).map(|(after, before)| after - before);
        let conflated_after = scrape(metrics_url, "lizards_ws_updates_conflated_total").await;
        stop.cancel();

        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for task in tasks {
            if let Ok(Some(h)) = task.await {
                latency.add(h)?;
            }
        }
        let seconds = elapsed.as_secs_f64();
        let figures = WsFigures {
            connected,
            seconds,
            updates_per_s: (u1 - u0) as f64 / seconds,
            frames_per_s: (f1 - f0) as f64 / seconds,
            latency,
            server_cpu,
        };
        let conflated = conflated_before.zip(conflated_after).map(|(before, after)| (after - before) / seconds);
        Ok((figures, conflated))
    }
}

/// Quotes through the in-process platform: confirmed by the broker
/// (ingestion's `lizards_quotes_published_total`) and newly stored
/// (the provider's `lizards_quotes_persisted_total`).
struct Flow {
    ingestion: String,
    provider: String,
}

/// Counters read at one instant.
struct FlowCounts {
    published: f64,
    persisted: f64,
    at: Instant,
}

struct Through {
    published_per_s: f64,
    persisted_per_s: f64,
    /// Quotes confirmed by the end of the measured time that the store
    /// still lacked [`CATCH_UP`] later: lost, or a backlog that long.
    not_persisted: u64,
}

/// How long the store may take to catch up with the quotes confirmed by
/// the end of the measured time.
const CATCH_UP: Duration = Duration::from_secs(30);

impl Flow {
    fn of(platform: &platform::Platform) -> Flow {
        let metrics =
            |addr: Option<std::net::SocketAddr>| addr.map(|a| format!("http://{a}/metrics")).unwrap_or_default();
        Flow { ingestion: metrics(platform.ingestion), provider: metrics(platform.provider) }
    }

    async fn counts(&self) -> anyhow::Result<FlowCounts> {
        let published = scrape(Some(&self.ingestion), "lizards_quotes_published_total").await;
        Ok(FlowCounts {
            published: published.context("ingestion's published quotes")?,
            persisted: self.persisted().await?,
            at: Instant::now(),
        })
    }

    async fn persisted(&self) -> anyhow::Result<f64> {
        scrape(Some(&self.provider), "lizards_quotes_persisted_total").await.context("the provider's persisted quotes")
    }

    /// Rates since `before`, then waits until every quote confirmed so far
    /// is stored (the store only gains rows from the platform meanwhile).
    async fn through(&self, before: FlowCounts) -> anyhow::Result<Through> {
        let after = self.counts().await?;
        let seconds = (after.at - before.at).as_secs_f64();
        let deadline = Instant::now() + CATCH_UP;
        let mut persisted = after.persisted;
        while persisted < after.published && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            persisted = self.persisted().await?;
        }
        Ok(Through {
            published_per_s: (after.published - before.published) / seconds,
            persisted_per_s: (after.persisted - before.persisted) / seconds,
            not_persisted: (after.published - persisted).max(0.0) as u64,
        })
    }
}

impl Through {
    fn print(&self) {
        println!(
            "lizards: quotes confirmed by the broker/s: {:.0}; newly stored/s: {:.0}; confirmed but not stored {CATCH_UP:?} later: {}",
            self.published_per_s, self.persisted_per_s, self.not_persisted
        );
    }
}

/// One benchmark client; returns its latency samples (µs).
async fn client(
    url: String,
    subscribe: String,
    counters: Arc<Counters>,
    gate: Arc<Semaphore>,
    stop: Shutdown,
) -> Option<Histogram<u64>> {
    // tungstenite zero-fills up to this much before every read: frames here
    // are ~0.6 KiB, and a larger one is still read whole.
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
    let socket = {
        let _permit = gate.acquire().await.ok()?;
        match tokio_tungstenite::connect_async_with_config(&url, Some(config), true).await {
            Ok((socket, _)) => socket,
            Err(error) => {
                eprintln!("connect failed: {error}");
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
    };
    let (mut tx, mut rx) = socket.split();
    tx.send(Message::Text(subscribe.into())).await.ok()?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok()?;
    let mut frames = 0u64;
    let mut subscribed = false;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            message = rx.next() => match message {
                Some(Ok(message)) => message,
                _ => break,
            },
        };
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Frame<Entries>>(text.as_str()) else { continue };
        match (frame.kind, frame.data) {
            ("price_update", Some(Entries(count))) => {
                frames += 1;
                counters.frames.fetch_add(1, Ordering::Relaxed);
                counters.updates.fetch_add(count as u64, Ordering::Relaxed);
                if frames.is_multiple_of(LATENCY_SAMPLE) {
                    let now = Utc::now();
                    let Ok(Frame { data: Some(data), .. }) =
                        serde_json::from_str::<Frame<HashMap<&str, Update>>>(&text)
                    else {
                        continue;
                    };
                    for update in data.values() {
                        if let Ok(ts) = DateTime::parse_from_rfc3339(update.timestamp) {
                            let us = (now - ts.to_utc()).num_microseconds().unwrap_or(0).max(1) as u64;
                            let _ = latency.record(us.min(60_000_000));
                        }
                    }
                }
            }
            // Symbols found by an on-demand lookup are acknowledged later in
            // frames of their own: count the client once.
            ("subscribed", _) if !subscribed => {
                subscribed = true;
                counters.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    let _ = tx.send(Message::Close(None)).await;
    Some(latency)
}

/// A latency quantile of a histogram of microseconds, in milliseconds.
fn ms(latency: &Histogram<u64>, quantile: f64) -> f64 {
    latency.value_at_quantile(quantile) as f64 / 1000.0
}

/// The sum of `metric`'s samples over all its labels on the metrics page
/// at `url`.
async fn scrape(url: Option<&str>, metric: &str) -> Option<f64> {
    let body = lizards_shared::http::client().get(url?).send().await.ok()?.text().await.ok()?;
    samples(&body, metric, "").fold(None, |sum, value| Some(sum.unwrap_or(0.0) + value))
}

/// The first sample of metric `name` whose labels contain `label` (`""`:
/// any) on a Prometheus text page.
fn sample(page: &str, name: &str, label: &str) -> Option<f64> {
    samples(page, name, label).next()
}

/// The values of metric `name`'s samples whose labels contain `label`.
fn samples<'a>(page: &'a str, name: &'a str, label: &'a str) -> impl Iterator<Item = f64> + 'a {
    page.lines()
        .filter(move |line| line.split(['{', ' ']).next() == Some(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[derive(Debug, Clone, Args)]
pub struct PersistBench {
    /// Quotes to write.
    #[arg(long, default_value_t = 200_000)]
    rows: usize,
    /// Quotes per `insert_batch` call (the provider's `PERSIST_BATCH`).
    #[arg(long, default_value_t = 2000)]
    batch: usize,
}

/// Distinct symbols the benchmark quotes are spread over, as in a live feed.
const PERSIST_SYMBOLS: usize = 100;

impl PersistBench {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        anyhow::ensure!(self.rows > 0 && self.batch > 0, "--rows and --batch must be positive");
        let url = config
            .common
            .database_url
            .context("bench persist needs PostgreSQL: set DATABASE_URL (eval \"$(scripts/services.sh)\")")?;
        // A schema of its own: the run neither sees nor leaves rows in the
        // real tables, and two runs never meet.
        let schema = format!("bench_persist_{}_{}", std::process::id(), Utc::now().timestamp_micros());
        psql(&url, &format!("CREATE SCHEMA {schema}")).await?;
        let result = self.measure(&url, &schema).await;
        let dropped = psql(&url, &format!("DROP SCHEMA {schema} CASCADE")).await;
        let report = result?;
        dropped?;
        report.print(&self);
        Ok(())
    }

    async fn measure(&self, url: &str, schema: &str) -> anyhow::Result<PersistReport> {
        println!(
            "bench persist: {} quotes in batches of {} over {PERSIST_SYMBOLS} symbols, scratch schema {schema}",
            self.rows, self.batch
        );
        let quotes = persist_quotes(self.rows)?;
        let separator = if url.contains('?') { '&' } else { '?' };
        let store_url = format!("{url}{separator}options=-c%20search_path%3D{schema}");
        let store = PostgresStore::connect(&store_url).await.context("connecting the quote store")?;

        let started = Instant::now();
        let mut inserted = 0;
        for batch in quotes.chunks(self.batch) {
            inserted += store.insert_batch(batch).await.context("insert_batch")?;
        }
        let store_secs = started.elapsed().as_secs_f64();
        store.close().await;
        anyhow::ensure!(inserted == self.rows as u64, "{inserted} of {} quotes inserted", self.rows);

        // The reference: COPY of the same rows into a table with the same
        // columns and indexes, timed as psql's wall time minus an empty psql
        // run (process start and connection).
        let csv = tempfile::NamedTempFile::new()?;
        std::fs::write(csv.path(), persist_csv(&quotes))?;
        let table = format!("{schema}.copy_quotes");
        psql(url, &format!("CREATE TABLE {table} (LIKE {schema}.quotes INCLUDING ALL)")).await?;
        let started = Instant::now();
        psql(url, "SELECT 1").await?;
        let psql_secs = started.elapsed().as_secs_f64();
        let path = csv.path().display().to_string().replace('\'', "''");
        let started = Instant::now();
        psql(url, &format!("\\copy {table} FROM '{path}' WITH (FORMAT csv)")).await?;
        let copy_wall_secs = started.elapsed().as_secs_f64();
        let copy_secs = (copy_wall_secs - psql_secs).max(1e-3);
        Ok(PersistReport { store_secs, copy_secs, copy_wall_secs, psql_secs })
    }
}

struct PersistReport {
    store_secs: f64,
    copy_secs: f64,
    copy_wall_secs: f64,
    psql_secs: f64,
}

impl PersistReport {
    fn print(&self, bench: &PersistBench) {
        let rows = bench.rows as f64;
        let store_rate = rows / self.store_secs;
        let copy_rate = rows / self.copy_secs;
        let ratio = store_rate / copy_rate;
        println!("PostgresStore::insert_batch: {store_rate:.0} quotes/s ({:.3} s)", self.store_secs);
        println!(
            "psql \\copy (reference): {copy_rate:.0} quotes/s ({:.3} s: {:.3} s wall minus {:.3} s for an empty psql)",
            self.copy_secs, self.copy_wall_secs, self.psql_secs
        );
        println!("ratio insert_batch / COPY: {ratio:.2}");
        println!(
            "{}",
            serde_json::json!({
                "bench": "persist", "rows": bench.rows, "batch": bench.batch, "symbols": PERSIST_SYMBOLS,
                "store_quotes_per_s": store_rate.round(), "copy_quotes_per_s": copy_rate.round(),
                "ratio": (ratio * 1000.0).round() / 1000.0,
            })
        );
    }
}

/// `rows` quotes as a live feed sends them: symbols interleaved, time
/// moving forward by one millisecond per round of symbols.
fn persist_quotes(rows: usize) -> anyhow::Result<Vec<Quote>> {
    let symbols: Vec<Symbol> =
        (0..PERSIST_SYMBOLS).map(|i| Symbol::parse(&format!("BENCH{i:03}"))).collect::<Result<_, _>>()?;
    let start = Utc::now() - chrono::Duration::hours(1);
    Ok((0..rows)
        .map(|i| {
            let ts = start + chrono::Duration::microseconds((i / PERSIST_SYMBOLS) as i64 * 1000 + 7);
            Quote {
                symbol: symbols[i % PERSIST_SYMBOLS].clone(),
                price: 100.0 + (i % 997) as f64 / 100.0,
                ts,
                volume: Some((i % 50) as f64),
                source: "bench".to_string(),
                ingest_id: format!("{i:032x}"),
                ingested_at: ts + chrono::Duration::microseconds(250),
            }
        })
        .collect())
}

/// The rows as CSV in the table's column order.
fn persist_csv(quotes: &[Quote]) -> String {
    use std::fmt::Write;
    let received_at = time::rfc3339(&Utc::now());
    let mut csv = String::with_capacity(quotes.len() * 160);
    for q in quotes {
        let volume = q.volume.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            csv,
            "{},{},{},{volume},{},{},{},{received_at}",
            q.symbol,
            time::rfc3339(&q.ts),
            q.price,
            q.source,
            q.ingest_id,
            time::rfc3339(&q.ingested_at)
        );
    }
    csv
}

/// Runs one psql command, failing with its error output.
async fn psql(url: &str, command: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command])
        .output()
        .await
        .context("running psql (is it installed?)")?;
    anyhow::ensure!(
        output.status.success(),
        "psql -c {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
