//! `lizards bench alerts`: how fast the provider's alert evaluator drains
//! `alerts.eval` (every quote goes through it: docs/architecture.md), and how long a
//! crossing quote takes to reach the rule owner's WebSocket as an `alert`
//! frame. Runs the whole platform in-process on the backends the
//! environment names (RabbitMQ and PostgreSQL with `AMQP_URL` and
//! `DATABASE_URL`) and publishes quotes straight onto the `quotes` exchange,
//! as ingestion does.
//!
//! Three throughput phases, each on symbols of its own:
//! - `no rules`: symbols nobody has a rule for (the common case: skipped
//!   after a set lookup);
//! - `quiet`: R rules per symbol whose condition never changes (reads
//!   only);
//! - `flapping`: R rules per symbol whose condition flips on every quote
//!   (every rule's state changes: the worst case).
//!
//! Each phase reports quotes/s evaluated as published, and the evaluator's
//! capacity: quotes over its busy time (`lizards_alert_eval_batch_seconds`),
//! which the publisher's own speed does not cap.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use chrono::Utc;
use clap::Args;
use futures::{SinkExt, StreamExt, future::try_join_all};
use hdrhistogram::Histogram;
use lizards_shared::{
    Quote, Symbol,
    broker::{Broker, QUOTES_EXCHANGE},
    config::Config,
    shutdown::Shutdown,
};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::platform::{self, Target};

#[derive(Debug, Clone, Args)]
pub struct AlertsBench {
    /// Quotes published per throughput phase.
    #[arg(long, default_value_t = 20_000)]
    quotes: usize,
    /// Symbols per phase (quotes are spread evenly over them).
    #[arg(long, default_value_t = 20)]
    symbols: usize,
    /// Alert rules per symbol in the `quiet` and `flapping` phases.
    #[arg(long, default_value_t = 10)]
    rules_per_symbol: usize,
    /// Crossings timed from publish to `alert` frame, one after another.
    #[arg(long, default_value_t = 200)]
    crossings: usize,
}

/// Rules one user may hold (the API's limit).
const RULES_PER_USER: usize = 100;
/// Quotes published concurrently (each waits for its broker confirm).
const PUBLISH_WINDOW: usize = 256;
const PASSWORD: &str = "bench-password-1";
/// Longest wait for the evaluator to drain one phase.
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);

/// What one throughput phase measured.
struct Drain {
    publish_per_s: f64,
    evaluated_per_s: f64,
    /// Quotes over the evaluator's busy time (`lizards_alert_eval_batch_seconds_sum`):
    /// what it could take if quotes arrived faster than the publisher sends them.
    capacity_per_s: f64,
    rules: usize,
}

impl AlertsBench {
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        anyhow::ensure!(self.quotes > 0 && self.symbols > 0, "--quotes and --symbols must be positive");
        let dir = tempfile::tempdir()?;
        let shutdown = Shutdown::new();
        let mut config = config.ephemeral(dir.path());
        // The crossings round fires one rule at every crossing: the floors
        // that protect users from floods would suppress what is measured.
        config.provider.alert_min_cooldown = Duration::ZERO;
        config.provider.alert_user_quota = lizards_shared::cache::Quota::new(1_000_000, Duration::from_secs(3600));
        let platform = platform::start(config, Target::All, shutdown.clone()).await?;
        let provider = platform.provider.context("provider started")?;
        let broker = platform.broker.clone().context("the platform's broker")?;
        let bench = Bench {
            base: format!("http://{provider}"),
            ws: format!("ws://{provider}/ws"),
            http: lizards_shared::http::client(),
            broker,
            // Symbols of this run only: earlier runs' rule states and quotes
            // in a shared database do not meet it.
            run: format!("{:05}", std::process::id() % 100_000),
        };
        println!(
            "bench alerts: {} quotes per phase over {} symbols, {} rules per symbol, {} timed crossings",
            self.quotes, self.symbols, self.rules_per_symbol, self.crossings
        );
        let result = self.measure(&bench).await;
        shutdown.cancel();
        platform.stopped().await?;
        result
    }

    async fn measure(&self, bench: &Bench) -> anyhow::Result<()> {
        let mut users = Vec::new();
        let mut phases = Vec::new();
        for (name, threshold, prices) in [
            ("no rules", None, [100.0, 100.5]),
            ("quiet", Some(1e9), [100.0, 100.5]),
            ("flapping", Some(100.0), [99.5, 100.5]),
        ] {
            let symbols = bench.symbols(name, self.symbols)?;
            for symbol in &symbols {
                bench.seed(symbol, prices[0]).await?;
            }
            let rules = match threshold {
                Some(threshold) => {
                    users.extend(bench.rules(&symbols, self.rules_per_symbol, threshold).await?);
                    self.rules_per_symbol
                }
                None => 0,
            };
            let drain = bench.drain(&symbols, self.quotes, prices, rules).await?;
            println!(
                "{name:>9}: evaluated {:.0} quotes/s as published ({:.0} quotes/s); capacity {:.0} quotes/s ({:.0} rule evaluations/s)",
                drain.evaluated_per_s,
                drain.publish_per_s,
                drain.capacity_per_s,
                drain.capacity_per_s * drain.rules as f64
            );
            phases.push(json!({
                "phase": name, "rules_per_symbol": rules, "quotes_per_s": drain.evaluated_per_s.round(),
                "published_per_s": drain.publish_per_s.round(), "capacity_per_s": drain.capacity_per_s.round(),
            }));
        }
        let latency = bench.crossings(self.crossings).await?;
        let ms = |q: f64| super::ms(&latency, q);
        println!(
            "crossing quote published → alert frame (ms): p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (samples {})",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            latency.max() as f64 / 1000.0,
            latency.len()
        );
        for user in users {
            bench.delete_user(&user).await?;
        }
        println!(
            "{}",
            json!({
                "bench": "alerts", "quotes": self.quotes, "symbols": self.symbols, "phases": phases,
                "alert_p50_ms": ms(0.5), "alert_p99_ms": ms(0.99),
            })
        );
        Ok(())
    }
}

struct Bench {
    base: String,
    ws: String,
    http: reqwest::Client,
    broker: Arc<dyn Broker>,
    run: String,
}

impl Bench {
    fn symbols(&self, phase: &str, n: usize) -> anyhow::Result<Vec<Symbol>> {
        let tag = &phase[..1].to_ascii_uppercase();
        (0..n).map(|i| Ok(Symbol::parse(&format!("BA{tag}{}.{i}", self.run))?)).collect()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// Registers a fresh user and returns their token.
    async fn user(&self) -> anyhow::Result<String> {
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4());
        let body = json!({"email": email, "password": PASSWORD});
        self.call(reqwest::Method::POST, "/auth/register", None, body.clone()).await?;
        let login = self.call(reqwest::Method::POST, "/auth/login", None, body).await?;
        Ok(login["access_token"].as_str().context("access_token")?.to_string())
    }

    async fn delete_user(&self, token: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, "/users/me", Some(token), Value::Null).await.map(drop)
    }

    /// `per_symbol` rules `above threshold` on each symbol, spread over as
    /// few users as the per-user limit allows; returns the users' tokens.
    async fn rules(&self, symbols: &[Symbol], per_symbol: usize, threshold: f64) -> anyhow::Result<Vec<String>> {
        let wanted: Vec<&Symbol> = symbols.iter().flat_map(|s| std::iter::repeat_n(s, per_symbol)).collect();
        let mut tokens = Vec::new();
        for chunk in wanted.chunks(RULES_PER_USER) {
            let token = self.user().await?;
            for symbol in chunk {
                let rule = json!({"symbol": symbol, "kind": "above", "threshold": threshold, "channels": ["ws"]});
                self.call(reqwest::Method::POST, "/alerts/rules", Some(&token), rule).await?;
            }
            tokens.push(token);
        }
        Ok(tokens)
    }

    /// Publishes one quote and waits until the provider knows the symbol.
    async fn seed(&self, symbol: &Symbol, price: f64) -> anyhow::Result<()> {
        self.publish(&quote(symbol, price, 0)).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/quotes/{symbol}", self.base);
        while !self.http.get(&url).send().await?.status().is_success() {
            anyhow::ensure!(Instant::now() < deadline, "{symbol} was not persisted within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn publish(&self, quote: &Quote) -> anyhow::Result<()> {
        self.broker.publish(QUOTES_EXCHANGE, &quote.symbol.routing_key(), quote.encode()).await?;
        Ok(())
    }

    /// Publishes `n` quotes over `symbols` (prices alternating between the
    /// two given) and times until the evaluator has taken them all.
    async fn drain(&self, symbols: &[Symbol], n: usize, prices: [f64; 2], rules: usize) -> anyhow::Result<Drain> {
        let (before, busy_before) = (self.evaluated().await?, self.busy().await?);
        let quotes: Vec<Quote> =
            (0..n).map(|i| quote(&symbols[i % symbols.len()], prices[(i / symbols.len()) % 2], 1 + i as i64)).collect();
        let started = Instant::now();
        for window in quotes.chunks(PUBLISH_WINDOW) {
            try_join_all(window.iter().map(|q| self.publish(q))).await?;
        }
        let published = started.elapsed();
        let deadline = started + DRAIN_DEADLINE;
        while self.evaluated().await? < before + n as f64 {
            anyhow::ensure!(Instant::now() < deadline, "alerts.eval not drained within {DRAIN_DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drained = started.elapsed().as_secs_f64();
        let busy = self.busy().await? - busy_before;
        Ok(Drain {
            publish_per_s: n as f64 / published.as_secs_f64(),
            evaluated_per_s: n as f64 / drained,
            capacity_per_s: n as f64 / busy.max(1e-6),
            rules,
        })
    }

    /// Quotes the evaluator has finished (`lizards_messages_consumed_total`).
    async fn evaluated(&self) -> anyhow::Result<f64> {
        self.metric("lizards_messages_consumed_total", "queue=\"alerts.eval\"").await
    }

    /// Seconds the evaluator has spent on batches.
    async fn busy(&self) -> anyhow::Result<f64> {
        self.metric("lizards_alert_eval_batch_seconds_sum", "").await
    }

    /// One sample from the provider's `/metrics` (0 when absent).
    async fn metric(&self, name: &str, label: &str) -> anyhow::Result<f64> {
        let page = self.http.get(format!("{}/metrics", self.base)).send().await?.text().await?;
        Ok(super::sample(&page, name, label).unwrap_or(0.0))
    }

    /// One user with one `above 100` rule and no cooldown, watching on an
    /// authenticated WebSocket: each round publishes 99 then 101 and times
    /// the 101 from publish to the `alert` frame.
    async fn crossings(&self, rounds: usize) -> anyhow::Result<Histogram<u64>> {
        let symbol = Symbol::parse(&format!("BAX{}", self.run))?;
        self.seed(&symbol, 99.0).await?;
        let token = self.user().await?;
        let rule = json!({"symbol": symbol, "kind": "above", "threshold": 100, "cooldown": 0, "channels": ["ws"]});
        self.call(reqwest::Method::POST, "/alerts/rules", Some(&token), rule).await?;
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", self.ws)).await?;
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for round in 0..rounds as i64 {
            self.publish(&quote(&symbol, 99.0, 1 + 2 * round)).await?;
            let started = Instant::now();
            self.publish(&quote(&symbol, 101.0, 2 + 2 * round)).await?;
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
                    .await
                    .context("no alert frame within 10 s")?
                    .context("the WebSocket closed")??;
                if let Message::Text(text) = frame
                    && serde_json::from_str::<Value>(text.as_str())?["type"] == "alert"
                {
                    break;
                }
            }
            latency.record((started.elapsed().as_micros() as u64).max(1))?;
        }
        let _ = socket.send(Message::Close(None)).await;
        self.delete_user(&token).await?;
        Ok(latency)
    }
}

/// A quote `offset` microseconds after now: times move forward per symbol,
/// as the evaluator requires.
fn quote(symbol: &Symbol, price: f64, offset: i64) -> Quote {
    let ts = Utc::now() + chrono::Duration::microseconds(offset);
    Quote {
        symbol: symbol.clone(),
        price,
        ts,
        volume: None,
        source: "bench".into(),
        ingest_id: uuid::Uuid::new_v4().to_string(),
        ingested_at: ts,
    }
}
