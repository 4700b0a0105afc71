//! Spawns a notifier on port 0 with embedded backends (a fresh SQLite
//! store and the in-process broker), and plays the provider: users and
//! alerts go into the store, alerts onto the `alerts` exchange.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use lizards_provider::{alerts, notifier};
use lizards_shared::service::Serving;
use lizards_shared::{
    Quote, Symbol,
    accounts::{
        AccountStore, Alert, AlertId, Channel, Delivery, DeliveryStatus, Email, NewAlert, NewUser, RuleKind, RuleSpec,
        RuleState, Targets, User, UserId,
    },
    broker::{Broker, DEAD_QUEUE, MemoryBroker, QUOTES_EXCHANGE},
    cache::MemoryCache,
    config::Config,
    jwt::Role,
    shutdown::Shutdown,
    store::{QuoteStore, SqliteStore},
};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestNotifier {
    pub addr: SocketAddr,
    pub broker: Arc<MemoryBroker>,
    pub store: Arc<SqliteStore>,
    pub http: reqwest::Client,
    shutdown: Shutdown,
    task: Serving,
    _dir: tempfile::TempDir,
}

/// Settings every test starts from: fast retries, no registry, webhooks
/// to the local receivers allowed.
pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::for_tests(dir);
    config.notifier.webhook_allow_private = true;
    config.common.registry_url = "http://127.0.0.1:1".into();
    config.notifier.notify_retry_base = Duration::from_millis(50);
    config.notifier.notify_retry_max = Duration::from_millis(200);
    config.notifier.telegram_poll_timeout = Duration::from_secs(1);
    config
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestNotifier {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Arc::new(MemoryBroker::new());
    let store = Arc::new(SqliteStore::open(&dir.path().join("test.db")).await.expect("sqlite"));
    spawn_on(dir, broker, store, tweak).await
}

/// A notifier on the given backends (shared with a provider).
pub async fn spawn_on(
    dir: tempfile::TempDir,
    broker: Arc<MemoryBroker>,
    store: Arc<SqliteStore>,
    tweak: impl FnOnce(&mut Config),
) -> TestNotifier {
    lizards_shared::http::install_crypto();
    let mut config = config(dir.path());
    tweak(&mut config);
    let backends = notifier::Backends { broker: broker.clone(), accounts: store.clone() };
    let shutdown = Shutdown::new();
    let started = notifier::build(config, backends, shutdown.clone()).await.expect("notifier starts");
    let (addr, task) = started.spawn();
    TestNotifier { addr, broker, store, http: lizards_shared::http::client(), shutdown, task, _dir: dir }
}

impl TestNotifier {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A user with these targets and minimum interval (seconds).
    pub async fn user(&self, targets: Targets, min_interval: u32) -> User {
        let email = format!("{}@example.com", lizards_testkit::unique("user"));
        let user = NewUser {
            email: Email::parse(&email).expect("valid e-mail"),
            password_hash: "not-a-real-hash".into(),
            role: Role::User,
            targets,
            min_notification_interval: min_interval,
        };
        self.store.create_user(&user).await.expect("user created")
    }

    /// Stores an alert as the evaluator would when an `above 150` rule on
    /// AAPL fires at 156.5 (every channel `pending`).
    pub async fn store_alert(&self, user: &User, channels: &[Channel]) -> Alert {
        let spec = RuleSpec {
            symbol: Some(Symbol::parse("AAPL").unwrap()),
            kind: RuleKind::Above,
            threshold: 150.0,
            window_minutes: None,
            cooldown: 0,
            channels: channels.to_vec(),
        };
        let rule = self.store.create_rule(user.id, &spec, &RuleState::default()).await.expect("rule");
        let now = Utc::now();
        let fired = RuleState { active: Some(true), last_fired_at: Some(now), ..rule.state.clone() };
        let alert = NewAlert {
            user_id: user.id,
            rule_id: rule.id,
            symbol: spec.symbol.clone(),
            kind: spec.kind,
            threshold: spec.threshold,
            price: Some(156.5),
            change_pct: None,
            message: "AAPL rose above 150: now 156.5".into(),
            fired_at: now,
            channels: channels.to_vec(),
        };
        let saved = self.store.save_evaluation(rule.id, rule.state.version, &fired, Some(&alert)).await;
        saved.expect("evaluation saved").expect("alert stored")
    }

    /// Publishes the alert for the notifier, as the evaluator does.
    pub async fn publish(&self, alert: &Alert) {
        alerts::publish(self.broker.as_ref(), alert).await.expect("alert published");
    }

    /// Stores and publishes an alert.
    pub async fn fire(&self, user: &User, channels: &[Channel]) -> Alert {
        let alert = self.store_alert(user, channels).await;
        self.publish(&alert).await;
        alert
    }

    pub async fn delivery(&self, alert: AlertId, channel: Channel) -> Delivery {
        let alert = self.store.alert(alert).await.expect("store").expect("alert exists");
        alert.deliveries.into_iter().find(|d| d.channel == channel).expect("delivery of the channel")
    }

    /// Waits until the alert's `channel` delivery has `status`.
    pub async fn wait_status(&self, alert: AlertId, channel: Channel, status: DeliveryStatus) -> Delivery {
        let what = format!("alert {alert} {channel} is {}", status.as_str());
        lizards_testkit::eventually_within(&what, WAIT, || async {
            self.delivery(alert, channel).await.status == status
        })
        .await;
        self.delivery(alert, channel).await
    }

    pub async fn user_now(&self, id: UserId) -> User {
        self.store.user(id).await.expect("store").expect("user exists")
    }

    /// A counter or histogram series from `/metrics`, summed over the label
    /// sets containing every one of `labels` (e.g. `channel="email"`).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let body = self.http.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `lizards_messages_consumed_total{queue="notify"}` reaches
    /// `count`: that many messages were handled and settled.
    pub async fn wait_handled(&self, count: usize) {
        lizards_testkit::eventually_within(&format!("{count} notify messages handled"), WAIT, || async {
            self.metric("lizards_messages_consumed_total", &[r#"queue="notify""#]).await >= count as f64
        })
        .await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(WAIT, self.task).await.expect("notifier stops in time");
        stopped.expect("notifier task").expect("no worker failed");
    }
}

/// Polls `condition` until it holds, failing after [`WAIT`].
pub async fn wait_for<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    lizards_testkit::eventually_within(what, WAIT, condition).await;
}

/// Only the e-mail target.
pub fn email_only() -> Targets {
    Targets { email: true, ..Targets::default() }
}

pub fn webhook(url: &str, secret: Option<&str>) -> Targets {
    Targets { webhook_url: Some(url.into()), webhook_secret: secret.map(str::to_string), ..Targets::default() }
}

impl TestNotifier {
    /// Messages in the `dead` queue.
    pub async fn broker_dead(&self) -> usize {
        self.broker.queue_len(DEAD_QUEUE).await.expect("dead queue")
    }
}

/// A provider on the same broker and store as the notifier, so a rule
/// fired by its evaluator reaches the notifier as in production.
pub struct TestProvider {
    pub addr: SocketAddr,
    broker: Arc<MemoryBroker>,
    store: Arc<SqliteStore>,
    http: reqwest::Client,
    shutdown: Shutdown,
    task: Serving,
}

pub async fn spawn_with_provider() -> (TestNotifier, TestProvider) {
    lizards_shared::http::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Arc::new(MemoryBroker::new());
    let store = Arc::new(SqliteStore::open(&dir.path().join("test.db")).await.expect("sqlite"));
    let mut config = config(dir.path());
    config.common.symbol_lookup_timeout = Duration::from_millis(500);
    config.common.jwt_secret = Some("test-secret-for-notifier-tests".into());
    config.provider.admin_email = Some("root@lizards.test".into());
    config.provider.admin_password = Some("admin-password-1".into());
    let backends = lizards_provider::Backends {
        broker: broker.clone(),
        store: store.clone(),
        accounts: store.clone(),
        cache: Arc::new(MemoryCache::default()),
    };
    let shutdown = Shutdown::new();
    let started = lizards_provider::build(config, backends, shutdown.clone()).await.expect("provider starts");
    let (addr, task) = started.spawn();
    let provider = TestProvider {
        addr,
        broker: broker.clone(),
        store: store.clone(),
        http: lizards_shared::http::client(),
        shutdown,
        task,
    };
    let notifier = spawn_on(dir, broker, store, |_| {}).await;
    (notifier, provider)
}

impl TestProvider {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Registers a user with extra registration fields; returns a token.
    pub async fn register(&self, extra: &Value) -> String {
        let email = format!("{}@example.com", lizards_testkit::unique("user"));
        let mut body = json!({"email": email, "password": "password-123"});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, answer) = self.post("/auth/register", "", &body).await;
        assert_eq!(status, 201, "{answer}");
        let (status, login) = self.post("/auth/login", "", &json!({"email": email, "password": "password-123"})).await;
        assert_eq!(status, 200, "{login}");
        login["access_token"].as_str().expect("token").to_string()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> Value {
        let response = self.http.get(self.url(path)).bearer_auth(token).send().await.expect("request sent");
        response.json().await.expect("JSON")
    }

    /// Publishes a quote as ingestion would and waits until it is persisted.
    pub async fn seed(&self, symbol: &str, price: f64) {
        let quote = quote(symbol, price);
        self.broker.publish(QUOTES_EXCHANGE, &quote.symbol.routing_key(), quote.encode()).await.expect("published");
        wait_for("the quote is persisted", || async {
            self.store.latest(&quote.symbol).await.ok().flatten().is_some_and(|q| q.ts >= quote.ts)
        })
        .await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(WAIT, self.task).await.expect("provider stops in time");
        stopped.expect("provider task").expect("no worker failed");
    }
}

static CLOCK: AtomicI64 = AtomicI64::new(0);

/// A quote with a fresh, strictly increasing timestamp.
fn quote(symbol: &str, price: f64) -> Quote {
    let now = Utc::now().trunc_subsecs(6).timestamp_micros();
    let next = |prev: i64| now.max(prev + 1);
    let prev = CLOCK.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |prev| Some(next(prev))).expect("always Some");
    let ts = DateTime::from_timestamp_micros(next(prev)).expect("valid time");
    Quote {
        symbol: Symbol::parse(symbol).expect("valid symbol"),
        price,
        ts,
        volume: Some(10.0),
        source: "test".into(),
        ingest_id: format!("test-{}", next(prev)),
        ingested_at: ts,
    }
}
