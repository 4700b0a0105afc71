//! Fault tests run against the real RabbitMQ and PostgreSQL
//! (`eval "$(scripts/services.sh)"`), restarting them on purpose. They hold
//! one lock so they never overlap, and every outage is undone on drop, even
//! when a test fails.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use futures::StreamExt;
use lizards::platform::{self, Platform, Target};
use lizards_shared::{
    Quote, Symbol,
    broker::{AmqpBroker, Broker, QUOTES_EXCHANGE, declare_topology},
    config::Config,
    shutdown::Shutdown,
    store::{PostgresStore, QuoteStore},
};
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

pub use lizards_testkit::ws::Client;

/// One fault test at a time: they restart shared servers.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Env {
    pub amqp: String,
    pub database: String,
}

/// The real servers' URLs; missing in CI fails, elsewhere skips.
pub fn env() -> Option<Env> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (get("AMQP_URL"), get("DATABASE_URL")) {
        (Some(amqp), Some(database)) => {
            // These tests stop RabbitMQ and PostgreSQL: no other test may
            // run against them meanwhile (other test processes wait).
            lizards_testkit::servers::hold(lizards_testkit::servers::Use::Exclusive);
            Some(Env { amqp, database })
        }
        _ if std::env::var_os("CI").is_some() => {
            panic!("AMQP_URL and DATABASE_URL must be set in CI (scripts/services.sh)")
        }
        _ => {
            eprintln!("AMQP_URL/DATABASE_URL not set: skipping fault tests (eval \"$(scripts/services.sh)\")");
            None
        }
    }
}

/// A symbol no other run uses.
pub fn symbol() -> Symbol {
    let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    Symbol::parse(&format!("F{}", &id[..12])).expect("valid symbol")
}

/// The `i`-th quote of a run: distinct, increasing source times.
pub fn quote(symbol: &Symbol, base: DateTime<Utc>, i: u32) -> Quote {
    let ts = base + chrono::Duration::microseconds(i64::from(i) * 10);
    Quote {
        symbol: symbol.clone(),
        price: 100.0 + f64::from(i) / 100.0,
        ts,
        volume: None,
        source: "faults".into(),
        ingest_id: format!("faults-{i}"),
        ingested_at: Utc::now().trunc_subsecs(6),
    }
}

pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Polls until `condition` holds, failing after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plays ingestion: publishes with confirms, retrying until confirmed.
#[derive(Clone)]
pub struct Publisher {
    broker: AmqpBroker,
    pub confirmed: Arc<AtomicUsize>,
}

impl Publisher {
    pub async fn connect(env: &Env) -> Publisher {
        let broker = AmqpBroker::connect(&env.amqp).await.expect("RabbitMQ reachable");
        declare_topology(&broker).await.expect("topology");
        Publisher { broker, confirmed: Arc::default() }
    }

    pub async fn publish(&self, quote: &Quote) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while let Err(error) = self.broker.publish(QUOTES_EXCHANGE, &quote.symbol.routing_key(), quote.encode()).await {
            assert!(Instant::now() < deadline, "never confirmed: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.confirmed.fetch_add(1, Ordering::SeqCst);
    }

    pub async fn publish_raw(&self, routing_key: &str, body: &'static [u8]) {
        self.broker.publish(QUOTES_EXCHANGE, routing_key, bytes::Bytes::from_static(body)).await.expect("published");
    }

    pub fn broker(&self) -> &AmqpBroker {
        &self.broker
    }

    pub fn confirmed(&self) -> usize {
        self.confirmed.load(Ordering::SeqCst)
    }
}

pub async fn store(env: &Env) -> PostgresStore {
    PostgresStore::connect(&env.database).await.expect("PostgreSQL reachable")
}

pub async fn count(store: &PostgresStore, symbol: &Symbol) -> u64 {
    store.count(symbol).await.unwrap_or(0)
}

fn config(env: &Env, dir: &std::path::Path) -> Config {
    let mut config = Config::for_tests(dir);
    config.common.amqp_url = Some(env.amqp.clone());
    config.common.database_url = Some(env.database.clone());
    // No registry: registration retries quietly in the background.
    config.common.registry_url = "http://127.0.0.1:1".into();
    config
}

/// A provider in this process.
pub struct Provider {
    pub addr: std::net::SocketAddr,
    shutdown: Shutdown,
    platform: Option<Platform>,
    _dir: tempfile::TempDir,
}

impl Provider {
    pub async fn start(env: &Env) -> Provider {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = Shutdown::new();
        let platform = platform::start(config(env, dir.path()), Target::Provider, shutdown.clone())
            .await
            .expect("provider starts");
        Provider { addr: platform.provider.expect("provider"), shutdown, platform: Some(platform), _dir: dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn ws(&self) -> Client {
        Client::connect(&format!("ws://{}/ws", self.addr)).await
    }

    pub async fn status(&self, path: &str) -> u16 {
        let response = lizards_shared::http::client().get(self.url(path)).send().await;
        response.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let body = lizards_shared::http::client().get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        body.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.shutdown.cancel();
        drop(self.platform.take());
    }
}

/// A service in its own OS process, so it can be killed with SIGKILL.
pub struct ServiceProcess {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// `lizards --target provider` on the real broker and database.
    pub async fn provider(env: &Env, settings: &[(&str, &str)]) -> ServiceProcess {
        ServiceProcess::spawn("provider", "PROVIDER_PORT", env, settings).await
    }

    /// `lizards --target ingestion` on the real broker.
    pub async fn ingestion(env: &Env, settings: &[(&str, &str)]) -> ServiceProcess {
        let settings = [&[("INGESTION_GRPC_PORT", "0")], settings].concat();
        ServiceProcess::spawn("ingestion", "INGESTION_PORT", env, &settings).await
    }

    async fn spawn(target: &str, port_variable: &str, env: &Env, settings: &[(&str, &str)]) -> ServiceProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lizards"));
        command
            .args(["--target", target])
            .env("AMQP_URL", &env.amqp)
            .env("DATABASE_URL", &env.database)
            .env("BIND_HOST", "127.0.0.1")
            .env(port_variable, port.to_string())
            .env("REGISTRY_URL", "http://127.0.0.1:1")
            .env("DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        for (name, value) in settings {
            command.env(name, value);
        }
        let child = command.spawn().expect("service process starts");
        let process = ServiceProcess { child, port, _dir: dir };
        let url = process.url("/readyz");
        wait_for(&format!("the {target} process is ready"), Duration::from_secs(30), || {
            let url = url.clone();
            async move { lizards_shared::http::client().get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL: no shutdown, no acks, nothing flushed, no lease released.
    pub fn kill(&mut self) {
        self.child.kill().expect("killed");
        self.child.wait().expect("reaped");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).stdout(Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "{program} {args:?} failed");
}

/// Stops the RabbitMQ application; started again on `restore` or drop.
pub struct RabbitOutage {
    restored: bool,
}

impl RabbitOutage {
    pub fn begin() -> RabbitOutage {
        run("rabbitmqctl", &["-q", "stop_app"]);
        RabbitOutage { restored: false }
    }

    pub fn restore(mut self) {
        self.restored = true;
        run("rabbitmqctl", &["-q", "start_app"]);
    }
}

impl Drop for RabbitOutage {
    fn drop(&mut self) {
        if !self.restored {
            let _ = Command::new("rabbitmqctl").args(["-q", "start_app"]).status();
        }
    }
}

/// Stops the PostgreSQL cluster; started again on `restore` or drop.
pub struct PostgresOutage {
    version: String,
    restored: bool,
}

impl PostgresOutage {
    pub fn begin() -> PostgresOutage {
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("a Debian PostgreSQL cluster")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .next()
            .expect("a cluster version");
        run("pg_ctlcluster", &["--skip-systemctl-redirect", &version, "main", "stop", "-m", "fast"]);
        PostgresOutage { version, restored: false }
    }

    fn start(&self) -> bool {
        Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &self.version, "main", "start"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn restore(mut self) {
        self.restored = true;
        assert!(self.start(), "PostgreSQL restarts");
    }
}

impl Drop for PostgresOutage {
    fn drop(&mut self) {
        if !self.restored {
            let _ = self.start();
        }
    }
}

/// Every `price_update` a client receives for `symbol`: (quote µs, arrival).
pub type Seen = Arc<Mutex<Vec<(i64, Instant)>>>;

/// Subscribes and records updates in the background.
pub async fn watch(mut client: Client, symbol: &Symbol) -> Seen {
    client.send(serde_json::json!({"type": "subscribe", "symbols": [symbol]})).await;
    client.recv_until(|f| f["type"] == "subscribed").await;
    let seen: Seen = Arc::default();
    let (record, key) = (seen.clone(), symbol.to_string());
    tokio::spawn(async move {
        while let Some(Ok(message)) = client.ws.next().await {
            let Message::Text(text) = message else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
            if let Some(ts) = frame["data"][&key]["timestamp"].as_str()
                && let Ok(ts) = DateTime::parse_from_rfc3339(ts)
            {
                record.lock().unwrap().push((ts.timestamp_micros(), Instant::now()));
            }
        }
    });
    seen
}

/// Whether an update arrived after `instant`.
pub fn updated_after(seen: &Seen, instant: Instant) -> bool {
    seen.lock().unwrap().iter().any(|(_, at)| *at > instant)
}
