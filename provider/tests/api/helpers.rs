//! Spawns a provider on port 0 with embedded backends; the test plays
//! ingestion by publishing quotes on the broker, and talks to the provider
//! over real HTTP and WebSocket like a client would.

use std::{
    net::SocketAddr,
    sync::Arc,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use lizards_provider::Backends;
use lizards_shared::{
    Quote, Symbol,
    broker::{Broker, MemoryBroker, QUOTES_EXCHANGE},
    cache::MemoryCache,
    config::Config,
    shutdown::Shutdown,
    store::{QuoteStore, SqliteStore},
    supervisor::{Supervisor, WorkerFailure},
};
pub use lizards_testkit::ws::{Client, is_update_for};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(5);
/// Tests forge tokens (expired, tampered) with the provider's secret.
pub const JWT_SECRET: &str = "test-secret-for-provider-tests";
pub const ADMIN_EMAIL: &str = "root@lizards.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestProvider {
    pub addr: SocketAddr,
    /// The gRPC accounts twin.
    pub grpc: SocketAddr,
    pub broker: Arc<MemoryBroker>,
    pub store: Arc<SqliteStore>,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), WorkerFailure>>,
    /// The provider's workers (tests abort one as a crash would).
    pub supervisor: Supervisor,
    _dir: tempfile::TempDir,
}

static CLOCK: AtomicI64 = AtomicI64::new(0);

/// A quote with a fresh, strictly increasing timestamp.
pub fn quote(symbol: &str, price: f64) -> Quote {
    let now = Utc::now().trunc_subsecs(6).timestamp_micros();
    let next = |prev: i64| now.max(prev + 1);
    let prev = CLOCK.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |prev| Some(next(prev))).expect("always Some");
    let us = next(prev);
    let ts = DateTime::from_timestamp_micros(us).expect("valid time");
    Quote {
        symbol: Symbol::parse(symbol).expect("valid symbol"),
        price,
        ts,
        volume: Some(10.0),
        source: "test".into(),
        ingest_id: format!("test-{us}"),
        ingested_at: ts,
    }
}

pub async fn spawn() -> TestProvider {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestProvider {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Arc::new(MemoryBroker::new());
    let store = Arc::new(SqliteStore::open(&dir.path().join("test.db")).await.expect("sqlite"));
    start(dir, broker, store, tweak).await
}

/// A provider on `broker` and `store`, its data directory in `dir`.
async fn start(
    dir: tempfile::TempDir,
    broker: Arc<MemoryBroker>,
    store: Arc<SqliteStore>,
    tweak: impl FnOnce(&mut Config),
) -> TestProvider {
    lizards_shared::http::install_crypto();
    let mut config = Config::for_tests(dir.path());
    // No registry and no ingestion: unknown symbols fail their lookup fast.
    config.common.registry_url = "http://127.0.0.1:1".into();
    config.common.symbol_lookup_timeout = Duration::from_millis(500);
    config.common.jwt_secret = Some(JWT_SECRET.into());
    config.provider.admin_email = Some(ADMIN_EMAIL.into());
    config.provider.admin_password = Some(ADMIN_PASSWORD.into());
    // Tests save webhooks on loopback and fire rules at every crossing
    // (docs/security.md explains the defaults they lift).
    config.notifier.webhook_allow_private = true;
    lift_alert_floors(&mut config);
    tweak(&mut config);
    let backends = Backends {
        broker: broker.clone(),
        store: store.clone(),
        accounts: store.clone(),
        cache: Arc::new(MemoryCache::default()),
    };
    let shutdown = Shutdown::new();
    let started = lizards_provider::build(config, backends, shutdown.clone()).await.expect("provider starts");
    let grpc = started.grpc.expect("the provider serves gRPC");
    let supervisor = started.supervisor.clone();
    let (addr, task) = started.spawn();
    let http = lizards_shared::http::client();
    TestProvider { addr, grpc, broker, store, http, shutdown, task, supervisor, _dir: dir }
}

impl TestProvider {
    /// Another instance of the same deployment: this one's broker and
    /// database, so they compete for the broker's queues.
    pub async fn sibling(&self) -> TestProvider {
        start(tempfile::tempdir().expect("tempdir"), self.broker.clone(), self.store.clone(), |_| {}).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn publish(&self, quote: &Quote) {
        self.broker.publish(QUOTES_EXCHANGE, &quote.symbol.routing_key(), quote.encode()).await.expect("published");
    }

    /// Publishes a quote and waits until the provider has persisted it, so
    /// the symbol is known to the provider.
    pub async fn seed(&self, symbol: &str, price: f64) -> Quote {
        let quote = quote(symbol, price);
        self.publish(&quote).await;
        wait_for(|| async { self.store.latest(&quote.symbol).await.ok().flatten().is_some_and(|q| q.ts >= quote.ts) })
            .await;
        quote
    }

    pub async fn ws(&self) -> Client {
        self.ws_path("/ws").await
    }

    pub async fn ws_path(&self, path: &str) -> Client {
        Client::connect_waiting(&format!("ws://{}{path}", self.addr), WAIT).await
    }

    /// A counter or gauge from `/metrics` (summed over label sets).
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_where(name, "").await
    }

    /// A counter or gauge summed over the label sets containing `label`
    /// (e.g. `queue="alerts.eval"`).
    pub async fn metric_where(&self, name: &str, label: &str) -> f64 {
        let body = self.http.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the live queue is bound to `symbols` symbols, so quotes
    /// published from now on reach subscribers.
    pub async fn wait_bound(&self, symbols: usize) {
        wait_for(|| async { self.metric("lizards_live_bindings").await == symbols as f64 }).await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(WAIT, self.task).await.expect("provider stops in time");
        stopped.expect("provider task").expect("no worker failed");
    }

    /// Makes the database refuse every quote of `symbol` (a trigger on the
    /// SQLite file), as a constraint violation would.
    pub async fn refuse_quotes_of(&self, symbol: &str) {
        let path = self._dir.path().join("test.db");
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
        let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await.expect("sqlite");
        let trigger = format!(
            "CREATE TRIGGER refuse_{symbol} BEFORE INSERT ON quotes WHEN NEW.symbol = '{symbol}' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        );
        sqlx::query(sqlx::AssertSqlSafe(trigger)).execute(&mut db).await.expect("trigger created");
    }

    /// Waits until the provider stops by itself (without a shutdown).
    pub async fn ended(self) -> Result<(), WorkerFailure> {
        tokio::time::timeout(WAIT, self.task).await.expect("provider stops in time").expect("provider task")
    }

    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// Polls `condition` until it holds, failing after a deadline.
pub async fn wait_for<F, Fut>(condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    lizards_testkit::eventually_within("the condition", WAIT * 2, condition).await;
}

/// An answer from the API: status, headers and JSON body (`Null` when empty).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    /// The problem's `detail` (or `""`).
    pub fn detail(&self) -> &str {
        self.body["detail"].as_str().unwrap_or_default()
    }
}

/// A registered user with a token.
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub token: String,
}

pub const PASSWORD: &str = "password-123";

impl TestProvider {
    /// Sends `body` (JSON) with an optional bearer token and extra headers.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        Answer::read(response).await
    }

    pub async fn get_as(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(reqwest::Method::GET, path, token, None, &[]).await
    }

    pub async fn post_as(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Answer {
        self.send(reqwest::Method::POST, path, token, Some(&body), &[]).await
    }

    /// Registers a fresh user and logs in.
    pub async fn user(&self) -> TestUser {
        let email = format!("{}@example.com", lizards_testkit::unique("user"));
        let answer =
            self.post_as("/auth/register", None, serde_json::json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        let id = answer.body["id"].as_i64().expect("user id");
        let token = self.login(&email, PASSWORD).await;
        TestUser { id, email, token }
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let answer = self.post_as("/auth/login", None, serde_json::json!({"email": email, "password": password})).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["access_token"].as_str().expect("token").to_string()
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body =
            if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Answer { status, headers, body }
    }
}

/// Rules may fire at every crossing and every user may be notified of
/// every alert: what the alert tests exercise. The floors themselves are
/// tested in tests/security.
pub fn lift_alert_floors(config: &mut Config) {
    config.provider.alert_min_cooldown = Duration::ZERO;
    config.provider.alert_min_change_pct = 0.0;
    config.provider.alert_user_quota = "1000000/1h".parse().expect("a quota");
}
