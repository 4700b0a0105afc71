//! Spawns a registry on port 0 with fresh state and talks to it over real
//! HTTP, like a service would.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, routing::get};
use lizards_registry::RegistryStore;
use lizards_shared::service::Serving;
use lizards_shared::{config::Config, shutdown::Shutdown};
use reqwest::Response;
use serde_json::{Value, json};

pub const PROBLEM_JSON: &str = "application/problem+json";

pub struct TestRegistry {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    /// Sent with every write made through the helpers.
    pub token: Option<String>,
    shutdown: Shutdown,
    server: Option<Serving>,
    _data: tempfile::TempDir,
}

pub async fn spawn_registry() -> TestRegistry {
    spawn_registry_with(|_| {}).await
}

/// Spawns a registry after `configure` adjusted its test configuration.
pub async fn spawn_registry_with(configure: impl FnOnce(&mut Config)) -> TestRegistry {
    spawn(configure, None).await
}

/// Spawns a registry on a store the test keeps a handle on.
pub async fn spawn_registry_on(store: Arc<dyn RegistryStore>) -> TestRegistry {
    spawn(|_| {}, Some(store)).await
}

async fn spawn(configure: impl FnOnce(&mut Config), store: Option<Arc<dyn RegistryStore>>) -> TestRegistry {
    let data = tempfile::tempdir().expect("temporary data dir");
    let mut config = Config::for_tests(data.path());
    configure(&mut config);
    let token = config.common.registry_token.clone();
    let shutdown = Shutdown::new();
    let started = match store {
        Some(store) => lizards_registry::build_with_store(config, shutdown.clone(), store).await,
        None => lizards_registry::build(config, shutdown.clone()).await,
    }
    .expect("registry starts");
    let (addr, server) = started.spawn();
    TestRegistry {
        addr,
        base: format!("http://{addr}"),
        http: lizards_shared::http::client(),
        token,
        shutdown,
        server: Some(server),
        _data: data,
    }
}

impl TestRegistry {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn register(&self, service_id: &str, body: &Value) -> Response {
        self.register_raw(service_id, body.to_string()).await
    }

    /// Posts `body` as is, valid JSON or not.
    pub async fn register_raw(&self, service_id: &str, body: String) -> Response {
        let request = self.http.post(self.url(&format!("/services/{service_id}"))).body(body);
        self.authorized(request).send().await.expect("POST reaches the registry")
    }

    /// Registers `body` and returns the instance id.
    pub async fn register_ok(&self, service_id: &str, body: &Value) -> String {
        let response = self.register(service_id, body).await;
        assert_eq!(response.status(), StatusCode::OK, "registration of {body} accepted");
        let registered: Value = response.json().await.expect("JSON body");
        registered["instance_id"].as_str().expect("instance_id").to_string()
    }

    pub async fn heartbeat(&self, service_id: &str, instance_id: &str) -> Response {
        let request = self.http.put(self.url(&format!("/services/{service_id}/{instance_id}/heartbeat")));
        self.authorized(request).send().await.expect("PUT reaches the registry")
    }

    pub async fn deregister(&self, service_id: &str, instance_id: &str) -> Response {
        let request = self.http.delete(self.url(&format!("/services/{service_id}/{instance_id}")));
        self.authorized(request).send().await.expect("DELETE reaches the registry")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.expect("GET reaches the registry")
    }

    /// The service document, `None` on 404.
    pub async fn service(&self, service_id: &str) -> Option<Value> {
        let response = self.get(&format!("/services/{service_id}")).await;
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(response.json().await.expect("JSON body")),
            status => panic!("GET /services/{service_id} answered {status}"),
        }
    }

    /// The one instance of `instance_id` in its service document.
    pub async fn instance(&self, service_id: &str, instance_id: &str) -> Option<Value> {
        let doc = self.service(service_id).await?;
        doc["instances"].as_array()?.iter().find(|i| i["instance_id"] == instance_id).cloned()
    }

    pub async fn prometheus_targets(&self) -> Vec<Value> {
        let response = self.get("/prometheus/targets").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON array")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics text")
    }

    /// Cancels the shutdown token and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("registry stops within 10 s")
                .expect("registry task does not panic")
                .expect("no worker failed");
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The seed contract's example body.
pub fn seed_body() -> Value {
    json!({"name": "Service A", "ip_address": "10.0.1.7", "port_number": "8042", "protocol": "TCP"})
}

pub use lizards_testkit::eventually_within as eventually;

/// A tiny upstream whose `GET /health` answers 200 while `healthy` holds,
/// 500 otherwise.
pub async fn spawn_health_server(healthy: Arc<AtomicBool>) -> SocketAddr {
    let app =
        Router::new().route(
            "/health",
            get(move || {
                let healthy = healthy.clone();
                async move {
                    if healthy.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind health server");
    let addr = listener.local_addr().expect("health server address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("health server runs");
    });
    addr
}
