//! Spawns what a gateway needs, on port 0 with fresh state: a registry,
//! fake upstream instances that count what reaches them, the rate-limit
//! and cache store (real Redis when `REDIS_URL` is set, required in CI),
//! and a TCP relay in front of Redis that a test can cut to see the
//! gateway survive a Redis outage.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{State, WebSocketUpgrade, ws::Message},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use lizards_shared::{
    cache::{Cache, MemoryCache, RedisCache},
    config::Config,
    discovery::{Registration, RegistryClient},
    jwt::{Claims, Jwt, Role},
    shutdown::Shutdown,
};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::{sleep, timeout},
};

pub const JWT_SECRET: &str = "gateway-tests-secret";

pub use lizards_testkit::{eventually, unique};

/// Redis URL for the real-server runs; missing in CI fails the test.
pub fn redis_url() -> Option<String> {
    lizards_testkit::real_url("REDIS_URL")
}

/// A store several gateways can share: Redis under a fresh key prefix, or
/// one in-process store.
#[derive(Clone)]
pub struct SharedStore {
    url: Option<String>,
    prefix: String,
    memory: Arc<MemoryCache>,
}

impl SharedStore {
    pub fn new() -> SharedStore {
        SharedStore { url: redis_url(), prefix: unique("gateway-test"), memory: Arc::new(MemoryCache::default()) }
    }

    /// A connection of its own for one gateway (as a separate process has).
    pub async fn connect(&self) -> Arc<dyn Cache> {
        match &self.url {
            Some(url) => Arc::new(RedisCache::connect(url, &self.prefix).await.expect("Redis answers")),
            None => self.memory.clone(),
        }
    }
}

pub struct TestRegistry {
    pub url: String,
    pub client: RegistryClient,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Stops the registry (its port then refuses connections).
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_registry() -> TestRegistry {
    lizards_shared::http::install_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(dir.path());
    config.registry.registry_sweep = Duration::from_millis(100);
    let shutdown = Shutdown::new();
    let (addr, _task) = lizards_registry::build(config, shutdown.clone()).await.expect("registry starts").spawn();
    let url = format!("http://{addr}");
    TestRegistry { client: RegistryClient::new(&url, None), url, shutdown, _dir: dir }
}

/// A fake `provider` instance: answers every path with a JSON document
/// naming itself, counts requests, and can be slowed down or stopped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub instance_id: String,
    state: Arc<UpstreamState>,
    stop: Shutdown,
}

#[derive(Default)]
struct UpstreamState {
    port: u16,
    requests: AtomicUsize,
    delay_ms: AtomicUsize,
    /// Headers of the last request, for propagation checks.
    last_headers: Mutex<HeaderMap>,
}

impl Upstream {
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as usize, Ordering::SeqCst);
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        let headers = self.state.last_headers.lock().unwrap();
        headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// Stops listening and closes its connections, like a killed process.
    pub fn kill(&self) {
        self.stop.cancel();
    }
}

async fn answer(
    State(state): State<Arc<UpstreamState>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    *state.last_headers.lock().unwrap() = headers;
    if uri.path().ends_with("/missing") {
        return (StatusCode::NOT_FOUND, "no such thing").into_response();
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 || uri.path().ends_with("/SLOW") {
        sleep(Duration::from_millis(delay.max(1000) as u64)).await;
    }
    let mut response =
        axum::Json(json!({"path": uri.path(), "n": n, "port": state.port, "body_bytes": body.len()})).into_response();
    response.headers_mut().insert("x-upstream-port", HeaderValue::from(state.port));
    if uri.path().ends_with("/PRIVATE") {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    }
    if uri.path().ends_with("/NOSTORE") {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) || socket.send(message).await.is_err() {
                break;
            }
        }
    })
}

/// Starts a fake provider and registers it (with `ttl_seconds`, never
/// renewed, when given).
pub async fn spawn_upstream(registry: &TestRegistry, ttl_seconds: Option<u64>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(UpstreamState { port: addr.port(), ..UpstreamState::default() });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(echo))
        .fallback(answer)
        .with_state(state.clone());
    let stop = Shutdown::new();
    let serving = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(serving.cancelled_owned()).await;
    });
    let registration = Registration::http("provider", "Fake provider", "127.0.0.1", addr.port());
    let mut body = serde_json::to_value(&registration).unwrap();
    if let Some(ttl) = ttl_seconds {
        body["ttl_seconds"] = json!(ttl);
    }
    let registered: Value = reqwest::Client::new()
        .post(format!("{}/services/provider", registry.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let instance_id = registered["instance_id"].as_str().expect("instance id").to_string();
    Upstream { addr, instance_id, state, stop }
}

pub struct TestGateway {
    pub url: String,
    pub http: reqwest::Client,
    _shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

/// Test defaults: quick refresh, generous limits, caching on.
pub async fn spawn_gateway(
    registry: &TestRegistry,
    store: Arc<dyn Cache>,
    configure: impl FnOnce(&mut Config),
) -> TestGateway {
    lizards_shared::http::install_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_tests(dir.path());
    config.common.registry_url = registry.url.clone();
    config.common.jwt_secret = Some(JWT_SECRET.to_string());
    config.gateway.gateway_refresh = Duration::from_millis(100);
    config.gateway.rate_limit_anonymous = "100000/1m".parse().unwrap();
    config.gateway.rate_limit_user = "100000/1m".parse().unwrap();
    configure(&mut config);
    let shutdown = Shutdown::new();
    let (addr, _task) = lizards_gateway::build(config, store, shutdown.clone()).await.expect("gateway starts").spawn();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    TestGateway { url: format!("http://{addr}"), http, _shutdown: shutdown, _dir: dir }
}

impl TestGateway {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.expect("gateway answers")
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// Waits until the gateway routes to the registered instances.
    pub async fn wait_for_upstreams(&self, count: usize) {
        eventually(&format!("{count} instance(s) routed"), || async {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..(count * 8) {
                let response = self.request(reqwest::Method::GET, "/alerts/probe").send().await.unwrap();
                if response.status() != StatusCode::OK {
                    return false;
                }
                seen.insert(response.headers()["x-upstream-port"].to_str().unwrap().to_string());
            }
            seen.len() == count
        })
        .await;
    }
}

/// The sum of a metric's samples having every one of `labels`
/// (`route="/quotes"` style).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

pub fn token(user: &str) -> String {
    Jwt::new(JWT_SECRET.as_bytes())
        .issue(user, &format!("{user}@example.com"), Role::User, 0, Duration::from_secs(600))
        .unwrap()
}

/// A well-signed token that expired a minute ago (beyond any leeway).
pub fn expired_token(user: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user.into(),
        email: format!("{user}@example.com"),
        role: Role::User,
        ver: 0,
        iat: now - 120,
        exp: now - 60,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// A relay in front of Redis that a test can cut (every connection
/// dropped, new ones refused) and restore.
pub struct RedisRelay {
    pub url: String,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl RedisRelay {
    pub async fn start(target: &str) -> RedisRelay {
        let target = target.trim_start_matches("redis://").trim_end_matches('/').to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let (accepting, tasks) = (cut.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if accepting.load(Ordering::SeqCst) {
                    continue; // dropped at once: the client sees a reset
                }
                let target = target.clone();
                tasks.lock().unwrap().spawn(async move {
                    if let Ok(Ok(mut server)) = timeout(Duration::from_secs(1), TcpStream::connect(&target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        RedisRelay { url, cut, connections }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.connections.lock().unwrap().abort_all();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}
