//! Spawns the whole platform (`--target all`) on free ports with embedded
//! backends and synthetic prices, and talks to it through the gateway.

use std::{net::SocketAddr, time::Duration};

use lizards::platform::{self, Platform, Target};
use lizards_shared::{config::Config, shutdown::Shutdown};
use serde_json::Value;

pub use lizards_testkit::ws::Client;

pub use lizards_testkit::DEADLINE as WAIT;

/// The admin account every spawned platform has.
pub const ADMIN_EMAIL: &str = "root@lizards.test";
pub const ADMIN_PASSWORD: &str = "admin-password-of-the-e2e-tests";

pub struct App {
    pub gateway: SocketAddr,
    pub platform: Option<Platform>,
    pub http: reqwest::Client,
    pub shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> App {
    spawn_app_with(|_| {}).await
}

/// The platform with `tweak` applied to its test configuration.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_tests(dir.path());
    config.ingestion.synthetic_rate = 400.0;
    config.common.registry_heartbeat = Duration::from_millis(500);
    config.gateway.gateway_refresh = Duration::from_millis(200);
    config.provider.admin_email = Some(ADMIN_EMAIL.into());
    config.provider.admin_password = Some(ADMIN_PASSWORD.into());
    tweak(&mut config);
    let shutdown = Shutdown::new();
    let platform = platform::start(config, Target::All, shutdown.clone()).await.expect("platform starts");
    let gateway = platform.gateway.expect("gateway started");
    let app = App { gateway, platform: Some(platform), http: lizards_shared::http::client(), shutdown, _dir: dir };
    // Ready once the gateway can route to the provider.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = app.http.get(app.url("/symbols")).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return app;
        }
        assert!(tokio::time::Instant::now() < deadline, "platform not routable in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    pub async fn ws(&self, path: &str) -> Client {
        let url = if path.starts_with("ws://") { path.to_string() } else { format!("ws://{}{path}", self.gateway) };
        Client::connect(&url).await
    }

    /// A fresh token of the admin account, from `POST /auth/login`.
    #[allow(dead_code, reason = "used by the ops and security suites, which share these helpers")]
    pub async fn admin_token(&self) -> String {
        let login = serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
        let response = self.http.post(self.url("/auth/login")).json(&login).send().await.expect("login answers");
        assert!(response.status().is_success(), "admin login: {}", response.status());
        let body: Value = response.json().await.expect("a JSON body");
        body["access_token"].as_str().expect("a token").to_string()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let platform = self.platform.take().expect("running");
        let stopped = tokio::time::timeout(WAIT, platform.stopped()).await.expect("platform stops in time");
        stopped.expect("every role stopped cleanly");
    }
}

pub fn has(frame: &Value, symbol: &str) -> bool {
    frame["type"] == "price_update" && frame["data"].get(symbol).is_some()
}
