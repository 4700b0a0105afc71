//! Attacks a stranger could try against a running Lizards, one test each:
//! every test performs the attack against the whole platform (all roles,
//! each on its own port, as in production) and asserts it is refused and
//! that nothing changed. docs/security.md lists what each boundary trusts.

// The e2e suite's platform helpers; this suite uses only some of them.
#[allow(dead_code)]
#[path = "../e2e/helpers.rs"]
mod helpers;

use std::{
    io::{BufRead, BufReader},
    net::IpAddr,
    process::{Command, Stdio},
    sync::mpsc::RecvTimeoutError,
};

use chrono::{SecondsFormat, Utc};
use helpers::{App, WAIT, has, spawn_app};
use lizards::platform::{self, Target};
use lizards_ingestion::grpc::proto::{RawData, data_processor_client::DataProcessorClient};
use lizards_provider::grpc::proto::{UpdateUserRequest, accounts_client::AccountsClient};
use lizards_shared::{config::Config, shutdown::Shutdown};
use lizards_testkit::{eventually, unique};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "a-user-password";

fn email(prefix: &str) -> String {
    format!("{}@example.com", unique(prefix))
}

/// A gRPC request with `Authorization: Bearer <token>` metadata.
fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("metadata"));
    request
}

impl App {
    fn platform(&self) -> &platform::Platform {
        self.platform.as_ref().expect("running")
    }

    /// Registers an account and logs in; its token.
    async fn user(&self, email: &str) -> String {
        let account = json!({"email": email, "password": PASSWORD});
        let registered = self.http.post(self.url("/auth/register")).json(&account).send().await.expect("answers");
        assert_eq!(registered.status(), StatusCode::CREATED);
        self.login(email, PASSWORD).await.expect("logs in")
    }

    async fn login(&self, email: &str, password: &str) -> Option<String> {
        let login = json!({"email": email, "password": password});
        let response = self.http.post(self.url("/auth/login")).json(&login).send().await.expect("answers");
        let body: Value = response.json().await.expect("JSON");
        body["access_token"].as_str().map(str::to_string)
    }

    async fn latest(&self, symbol: &str) -> Value {
        self.http.get(self.url(&format!("/quotes/{symbol}"))).send().await.expect("answers").json().await.expect("JSON")
    }

    async fn ingest(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.http.post(self.url("/ingest")).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("answers")
    }
}

/// A quote four minutes ahead of now, at a price no source would give.
fn injected(price: f64) -> Value {
    let future = (Utc::now() + chrono::Duration::minutes(4)).to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({"symbol": "AAPL", "price": price, "timestamp": future})
}

#[tokio::test]
async fn price_injection_by_a_stranger_is_refused_over_rest_and_grpc_and_reaches_nobody() {
    let app = spawn_app().await;
    let mut watcher = app.ws("/ws").await;
    watcher.send(json!({"type": "subscribe", "symbols": ["AAPL"]})).await;
    watcher.recv_until(|frame| has(frame, "AAPL")).await;

    let attack = injected(0.01);
    let anonymous = app.ingest(None, &attack).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "anonymous POST /ingest through the gateway");
    let user = app.user(&email("mallory")).await;
    assert_eq!(app.ingest(Some(&user), &attack).await.status(), StatusCode::FORBIDDEN, "a user's token");
    assert_eq!(app.ingest(Some("not-a-token"), &attack).await.status(), StatusCode::UNAUTHORIZED);

    let grpc = app.platform().ingestion_grpc.expect("ingestion serves gRPC");
    let mut client = DataProcessorClient::connect(format!("http://{grpc}")).await.expect("gRPC connects");
    let raw = || RawData { content: attack.to_string() };
    let refused = client.process_data(raw()).await.expect_err("anonymous ProcessData is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let refused = client.process_data(bearer(raw(), &user)).await.expect_err("a user's ProcessData is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // A fence: an admin's quote, written after the attacks. Every AAPL
    // update up to it is checked: none carries the injected price.
    let admin = app.admin_token().await;
    let fence = json!({"symbol": "AAPL", "price": 777.125});
    assert_eq!(app.ingest(Some(&admin), &fence).await.status(), StatusCode::OK, "an admin may write quotes");
    loop {
        let frame = watcher.recv_until(|frame| has(frame, "AAPL")).await;
        let price = frame["data"]["AAPL"]["price"].as_f64().expect("a price");
        assert_ne!(price, 0.01, "the injected price reached a subscriber");
        if price == 777.125 {
            break;
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_quote_from_the_future_cannot_pin_the_latest_price() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // A symbol no source quotes, so only these writes move its price.
    let ahead = (Utc::now() + chrono::Duration::minutes(4)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let pin = json!({"symbol": "PINNED", "price": 1.0, "timestamp": ahead});
    assert_eq!(app.ingest(Some(&admin), &pin).await.status(), StatusCode::OK);
    let price_is = async |price: f64| app.latest("PINNED").await["price"].as_f64() == Some(price);
    eventually("the future-dated quote is the latest", async || price_is(1.0).await).await;
    let latest = app.latest("PINNED").await;
    let ts: chrono::DateTime<Utc> = latest["timestamp"].as_str().expect("a timestamp").parse().expect("RFC 3339");
    assert!(ts <= Utc::now(), "dated as received, not four minutes ahead: {latest}");

    // A quote of now replaces it at once, not four minutes later.
    let now = json!({"symbol": "PINNED", "price": 2.0});
    assert_eq!(app.ingest(Some(&admin), &now).await.status(), StatusCode::OK);
    eventually("the next quote replaces the future-dated one", async || price_is(2.0).await).await;
    app.stop().await;
}

#[tokio::test]
async fn slo_writes_through_the_gateway_need_an_admin() {
    let app = spawn_app().await;
    let slo = json!({"name": unique("hijack"), "metric": "lizards_ws_connections", "aggregation": "value",
        "comparison": ">", "threshold": -1, "window_minutes": 5});
    let post = |token: Option<String>| {
        let mut request = app.http.post(app.url("/slos")).json(&slo);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.expect("answers").status() }
    };
    assert_eq!(post(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post(Some(app.user(&email("eve")).await)).await, StatusCode::FORBIDDEN);
    let slos: Value = app.http.get(app.url("/slos")).send().await.unwrap().json().await.unwrap();
    assert_eq!(slos["slos"], json!([]), "nothing was created: {slos}");
    assert_eq!(post(Some(app.admin_token().await)).await, StatusCode::CREATED);
    app.stop().await;
}

/// An address of this machine that is not loopback, so a connection from
/// it looks like one from a peer on the network.
fn network_address() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    probe.connect("192.0.2.1:9").or_else(|_| probe.connect("10.255.255.255:9")).expect("a route off this host");
    let ip = probe.local_addr().expect("a local address").ip();
    assert!(!ip.is_loopback(), "this machine has no address besides loopback");
    ip
}

#[tokio::test]
async fn without_a_registry_token_a_network_peer_cannot_register_itself_as_the_provider() {
    let app = helpers::spawn_app_with(|config| config.common.bind_host = IpAddr::from([0, 0, 0, 0])).await;
    let registry = app.platform().registry.expect("registry").port();
    let peer = network_address();
    let from_network = reqwest::Client::builder().local_address(peer).build().expect("a client");
    let hijack = json!({"name": "provider", "ip_address": "203.0.113.9", "port_number": "80", "protocol": "HTTP"});
    let url = format!("http://{peer}:{registry}/services/provider");
    let response = from_network.post(&url).json(&hijack).send().await.expect("the registry answers");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("a problem");
    assert!(body["detail"].as_str().unwrap().contains("loopback"), "{body}");
    let listed: Value = from_network.get(&url).send().await.expect("answers").json().await.expect("JSON");
    let addresses: Vec<&Value> = listed["instances"].as_array().expect("instances").iter().collect();
    assert!(addresses.iter().all(|i| i["ip_address"] != "203.0.113.9"), "the peer was registered: {listed}");

    let through_gateway = app.http.post(app.url("/services/provider")).json(&hijack).send().await.unwrap();
    assert_eq!(through_gateway.status(), StatusCode::METHOD_NOT_ALLOWED, "the gateway exposes registry reads only");
    app.stop().await;
}

#[tokio::test]
async fn an_account_registered_early_with_the_admin_address_is_not_promoted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().to_path_buf();
    let squatter = email("boss");
    let first = helpers::spawn_app_with(|config| config.common.data_dir = data_dir.clone()).await;
    let token = first.user(&squatter).await;
    first.stop().await;

    let mut later = Config::for_tests(&data_dir);
    later.provider.admin_email = Some(squatter.clone());
    later.provider.admin_password = Some("the-operators-admin-password".into());
    let shutdown = Shutdown::new();
    let error = platform::start(later, Target::All, shutdown.clone()).await.err().expect("start-up fails");
    shutdown.cancel();
    let message = format!("{error:#}");
    assert!(message.contains("not promoted"), "{message}");

    // The account is still an ordinary user, its token no admin's.
    let again = helpers::spawn_app_with(|config| config.common.data_dir = data_dir.clone()).await;
    let admin_only = again.http.get(again.url("/admin/users")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(admin_only.status(), StatusCode::FORBIDDEN);
    again.stop().await;
}

#[tokio::test]
async fn tokens_from_before_a_password_change_are_refused_over_rest_grpc_and_websocket() {
    let app = spawn_app().await;
    let address = email("victim");
    let stolen = app.user(&address).await;

    // The thief holds a token but not the password: no takeover.
    let patch = |token: &str, body: Value| {
        app.http.patch(app.url("/users/me")).bearer_auth(token.to_string()).json(&body).send()
    };
    let takeover = patch(&stolen, json!({"password": "thiefs-new-password"})).await.unwrap();
    assert_eq!(takeover.status(), StatusCode::UNPROCESSABLE_ENTITY, "no current_password");
    let takeover = patch(&stolen, json!({"email": email("thief"), "current_password": "guess"})).await.unwrap();
    assert_eq!(takeover.status(), StatusCode::FORBIDDEN, "a wrong current_password");
    let grpc = app.platform().provider_grpc.expect("provider serves gRPC");
    let mut accounts = AccountsClient::connect(format!("http://{grpc}")).await.expect("gRPC connects");
    let change = UpdateUserRequest { password: Some("thiefs-new-password".into()), ..Default::default() };
    let refused = accounts.update_user(bearer(change, &stolen)).await.expect_err("no current_password over gRPC");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(app.login(&address, "thiefs-new-password").await.is_none(), "the password did not change");

    // The owner changes the password: the stolen token dies everywhere.
    let changed = patch(&stolen, json!({"password": "owners-new-password", "current_password": PASSWORD})).await;
    assert_eq!(changed.unwrap().status(), StatusCode::OK);
    let me = app.http.get(app.url("/users/me")).bearer_auth(&stolen).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED, "REST");
    let status = accounts.update_user(bearer(UpdateUserRequest::default(), &stolen)).await.expect_err("gRPC");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "gRPC");
    let mut socket = app.ws(&format!("/ws?token={stolen}")).await;
    let error = socket.recv_until(|frame| frame["type"] == "error" || frame["type"] == "authenticated").await;
    assert_eq!(error["type"], "error", "WebSocket: {error}");
    assert!(error["message"].as_str().unwrap().contains("revoked"), "{error}");

    let fresh = app.login(&address, "owners-new-password").await.expect("the new password logs in");
    let me = app.http.get(app.url("/users/me")).bearer_auth(&fresh).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_demoted_admins_token_no_longer_writes_quotes_or_slos() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let deputy_email = email("deputy");
    let deputy = json!({"email": deputy_email, "password": PASSWORD, "role": "admin"});
    let created = app.http.post(app.url("/admin/users")).bearer_auth(&admin).json(&deputy).send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.unwrap()["id"].clone();
    let deputy = app.login(&deputy_email, PASSWORD).await.expect("logs in");
    assert_eq!(app.ingest(Some(&deputy), &json!({"symbol": "AAPL", "price": 200.0})).await.status(), StatusCode::OK);

    let demote = app.http.patch(app.url(&format!("/admin/users/{id}"))).bearer_auth(&admin);
    assert_eq!(demote.json(&json!({"role": "user"})).send().await.unwrap().status(), StatusCode::OK);
    // The token still carries `role: admin` and a valid signature.
    let refused = app.ingest(Some(&deputy), &json!({"symbol": "AAPL", "price": 0.01})).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "revoked at the gateway");
    let grpc = app.platform().ingestion_grpc.expect("ingestion serves gRPC");
    let mut client = DataProcessorClient::connect(format!("http://{grpc}")).await.expect("gRPC connects");
    let content = json!({"symbol": "AAPL", "price": 0.01}).to_string();
    let status = client.process_data(bearer(RawData { content }, &deputy)).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "revoked at ingestion's own port");
    app.stop().await;
}

/// `lizards` with every role on loopback and free ports, state in `dir`,
/// JSON logs and no other setting (embedded backends, synthetic prices).
fn all_in_one(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lizards"));
    command.env_clear().env("DATA_DIR", dir).env("BIND_HOST", "127.0.0.1").env("LOG_FORMAT", "json");
    for port in ["GATEWAY_PORT", "REGISTRY_PORT", "PROVIDER_PORT", "PROVIDER_GRPC_PORT", "INGESTION_PORT"] {
        command.env(port, "0");
    }
    command.envs([("INGESTION_GRPC_PORT", "0"), ("NOTIFIER_PORT", "0")]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Spawns `command`; its stdout arrives line by line on the receiver.
fn spawn_logged(command: &mut Command) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = command.spawn().expect("lizards starts");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    (child, seen)
}

/// Starts `lizards --target gateway` with `envs` only: whether it came up
/// (it logged that it listens; it is then stopped), and what it printed.
fn start_binary(envs: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lizards"));
    command.args(["--target", "gateway"]).env_clear().env("DATA_DIR", dir.path());
    command.envs([("GATEWAY_PORT", "0"), ("BIND_HOST", "127.0.0.1"), ("REGISTRY_URL", "http://127.0.0.1:9")]);
    command.envs(envs.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut child, seen) = spawn_logged(&mut command);
    let mut printed = String::new();
    let came_up = loop {
        match seen.recv_timeout(WAIT) {
            Ok(line) if line.contains("gateway listening") => break true,
            Ok(line) => printed.push_str(&line),
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => panic!("lizards neither failed nor listened: {printed}"),
        }
    };
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    printed.push_str(&String::from_utf8_lossy(&output.stderr));
    (came_up, printed)
}

#[test]
fn outside_embedded_mode_weak_secrets_refuse_to_start_whether_from_env_or_file() {
    let (ok, output) = start_binary(&[("JWT_SECRET", "changeme")]);
    assert!(!ok, "a placeholder JWT_SECRET was accepted");
    assert!(output.contains("JWT_SECRET is a placeholder"), "{output}");
    let (ok, output) = start_binary(&[("JWT_SECRET", "0123456789abcdef")]);
    assert!(!ok && output.contains("16 bytes long, at least 32"), "{output}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("registry_token");
    std::fs::write(&file, "replace-me\n").unwrap();
    let (ok, output) = start_binary(&[("REGISTRY_TOKEN_FILE", file.to_str().unwrap())]);
    assert!(!ok && output.contains("REGISTRY_TOKEN is a placeholder"), "{output}");

    std::fs::write(&file, "a-registry-token-generated-for-this-test-0123456789\n").unwrap();
    let (ok, output) =
        start_binary(&[("REGISTRY_TOKEN_FILE", file.to_str().unwrap()), ("JWT_SECRET", &"k".repeat(40))]);
    assert!(ok, "strong secrets from a file and the environment start: {output}");
}

#[test]
fn an_api_key_or_a_websocket_token_never_shows_in_responses_or_logs() {
    const KEY: &str = "AVKEY0123456789SECRET";
    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.SECRETTOKENPAYLOAD.c2ln";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = all_in_one(dir.path());
    command.env("RUST_LOG", "info,tower_http=debug");
    // Alpha Vantage at a closed port: every call fails with a network error.
    command.envs([("SOURCES", "synthetic,alphavantage"), ("ALPHAVANTAGE_URL", "http://127.0.0.1:9/")]);
    command.envs([("ALWAYS_ON_SYMBOLS", "IBM"), ("ALPHAVANTAGE_API_KEY", KEY)]);
    let (mut child, seen) = spawn_logged(&mut command);
    let mut log = String::new();
    let gateway = loop {
        let line = seen.recv_timeout(WAIT).expect("lizards comes up");
        log.push_str(&line);
        if let Some(rest) = line.split("Lizards is up: open http://").nth(1) {
            break rest.split_whitespace().next().expect("an address").to_string();
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let bodies = runtime.block_on(async {
        let http = lizards_shared::http::client();
        let url = |path: &str| format!("http://{gateway}{path}");
        let mut bodies = String::new();
        // A lookup asks Alpha Vantage, which fails; so does its status.
        let lookup = http.get(url("/sources/lookup/ZZQQ")).send().await.expect("answers");
        bodies.push_str(&lookup.text().await.expect("a body"));
        let status = async || http.get(url("/sources/status")).send().await.expect("answers").text().await.unwrap();
        eventually("Alpha Vantage's failure shows in /sources/status", async || status().await.contains("\"error\""))
            .await;
        bodies.push_str(&status().await);
        let upgrade =
            tokio_tungstenite::connect_async(format!("ws://{gateway}/ws?token={TOKEN}&session=SECRETSESSION"));
        let _ = upgrade.await;
        bodies
    });
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    while let Ok(line) = seen.try_recv() {
        log.push_str(&line);
    }
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    assert!(bodies.contains("alphavantage"), "the status lists the source: {bodies}");
    for secret in [KEY, "SECRETTOKENPAYLOAD", "SECRETSESSION"] {
        assert!(!bodies.contains(secret), "{secret} in a response: {bodies}");
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(log.contains("token=REDACTED"), "the upgrade was logged, redacted");
}

#[tokio::test]
async fn webhooks_to_internal_addresses_are_refused_when_saved() {
    let app = spawn_app().await;
    let token = app.user(&email("ssrf")).await;
    let internal = [
        "http://127.0.0.1:8500/services/provider",
        "http://10.0.0.5/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[fc00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:8500/",
    ];
    for url in internal {
        let patch = app.http.patch(app.url("/users/me")).bearer_auth(&token).json(&json!({"webhook_url": url}));
        let response = patch.send().await.expect("answers");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        let problem: Value = response.json().await.expect("a problem");
        assert_eq!(problem["errors"][0]["field"], "webhook_url", "{url}: {problem}");
        assert!(problem["errors"][0]["message"].as_str().unwrap().starts_with("refused"), "{url}: {problem}");
    }
    let me: Value = app.http.get(app.url("/users/me")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["notifications"]["webhook_url"], Value::Null, "nothing was saved");

    let address = email("ssrf-signup");
    let signup = json!({"email": address, "password": PASSWORD, "webhook_url": "http://169.254.169.254/"});
    let refused = app.http.post(app.url("/auth/register")).json(&signup).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(app.login(&address, PASSWORD).await.is_none(), "no account was created");
    app.stop().await;
}

#[tokio::test]
async fn rules_that_fire_on_every_tick_are_refused_and_a_users_alerts_are_capped() {
    let app = helpers::spawn_app_with(|config| config.provider.alert_user_quota = "2/1h".parse().unwrap()).await;
    let token = app.user(&email("flood")).await;
    let rule = |body: Value| app.http.post(app.url("/alerts/rules")).bearer_auth(&token).json(&body).send();
    let tiny = rule(json!({"symbol": "AAPL", "kind": "change_pct", "threshold": 0.0001, "channels": ["ws"]})).await;
    assert_eq!(tiny.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY, "a change_pct below the floor");
    let eager = rule(json!({"symbol": "AAPL", "kind": "above", "threshold": 1, "cooldown": 0})).await;
    assert_eq!(eager.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY, "a cooldown below the floor");

    // Three rules cross at once; the user's quota is two alerts.
    let admin = app.admin_token().await;
    assert_eq!(app.ingest(Some(&admin), &json!({"symbol": "FLOOD", "price": 5.0})).await.status(), StatusCode::OK);
    eventually("FLOOD is priced", async || app.latest("FLOOD").await["price"] == 5.0).await;
    for threshold in [6, 7, 8] {
        let created = rule(json!({"symbol": "FLOOD", "kind": "above", "threshold": threshold, "channels": ["ws"]}));
        assert_eq!(created.await.unwrap().status(), StatusCode::CREATED);
    }
    assert_eq!(app.ingest(Some(&admin), &json!({"symbol": "FLOOD", "price": 9.0})).await.status(), StatusCode::OK);
    let alerts = async || -> Vec<Value> {
        let body: Value =
            app.http.get(app.url("/alerts")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        body["alerts"].as_array().cloned().unwrap_or_default()
    };
    eventually("all three rules fired", async || alerts().await.len() == 3).await;
    let statuses = |alert: &Value| -> Vec<String> {
        alert["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap().to_string()).collect()
    };
    eventually("two alerts notified, the third suppressed", async || {
        let all = alerts().await;
        let suppressed = all.iter().filter(|a| statuses(a) == ["suppressed"]).count();
        let sent = all.iter().filter(|a| statuses(a) == ["sent"]).count();
        (suppressed, sent) == (1, 2)
    })
    .await;
    app.stop().await;
}

/// The platform behind a reverse proxy on loopback, with small limits.
async fn behind_a_proxy(anonymous: &str) -> App {
    let anonymous = anonymous.parse().expect("a quota");
    helpers::spawn_app_with(move |config| {
        config.gateway.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        config.gateway.rate_limit_anonymous = anonymous;
    })
    .await
}

async fn get_from(app: &App, client: &str) -> StatusCode {
    app.http.get(app.url("/symbols")).header("x-forwarded-for", client).send().await.expect("answers").status()
}

#[tokio::test]
async fn a_forged_forwarded_for_does_not_buy_a_fresh_rate_limit_bucket() {
    // No trusted proxies: the peer is the client, whatever it claims.
    let app = helpers::spawn_app_with(|config| config.gateway.rate_limit_anonymous = "3/1m".parse().unwrap()).await;
    // Four claimed clients, one real one: one bucket of three (the start-up
    // check may have used some of it already).
    let mut statuses = Vec::new();
    for claimed in ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"] {
        statuses.push(get_from(&app, claimed).await);
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    app.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_told_apart_and_ipv6_counts_per_64() {
    let app = behind_a_proxy("3/1m").await;
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        assert!(get_from(&app, client).await.is_success(), "{client} has a bucket of its own");
    }
    // A client forging a hop in front of the proxy's is still itself.
    for forged in ["9.9.9.1, 198.51.100.1", "9.9.9.2, 198.51.100.1"] {
        assert!(get_from(&app, forged).await.is_success());
    }
    assert_eq!(get_from(&app, "9.9.9.3, 198.51.100.1").await, StatusCode::TOO_MANY_REQUESTS, "its fourth");
    // One /64, four addresses: one bucket.
    for suffix in ["1", "2", "3"] {
        assert!(get_from(&app, &format!("2001:db8:7:7::{suffix}")).await.is_success());
    }
    assert_eq!(get_from(&app, "2001:db8:7:7:ffff::9").await, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

#[tokio::test]
async fn guessing_one_accounts_password_from_many_addresses_is_throttled() {
    let app = behind_a_proxy("1000/1m").await;
    let target = email("target");
    app.user(&target).await;
    let bystander = email("bystander");
    app.user(&bystander).await;
    let login = |client: String, email: String, password: &'static str| {
        let body = json!({"email": email, "password": password});
        let request = app.http.post(app.url("/auth/login")).header("x-forwarded-for", client).json(&body);
        async move { request.send().await.expect("answers") }
    };
    // Each guess from a fresh address: the per-address limit never bites.
    for guess in 0..11 {
        let refused = login(format!("203.0.113.{guess}"), target.clone(), "wrong-guess").await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "guess {guess}");
    }
    let locked = login("203.0.113.100".into(), target.clone(), PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
    let wait: u64 = locked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "{wait}");
    let other = login("203.0.113.101".into(), bystander, PASSWORD).await;
    assert_eq!(other.status(), StatusCode::OK, "other accounts are not affected");
    app.stop().await;
}

#[tokio::test]
async fn anonymous_symbol_lookups_have_a_small_budget_of_their_own() {
    let app = helpers::spawn_app_with(|config| config.gateway.rate_limit_lookup = "2/1m".parse().unwrap()).await;
    let lookup = |symbol: &str| app.http.get(app.url(&format!("/sources/lookup/{symbol}"))).send();
    for symbol in ["AAPL", "ZZZQ1"] {
        assert_ne!(lookup(symbol).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS, "{symbol}");
    }
    let third = lookup("ZZZQ2").await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers()["ratelimit-policy"].to_str().unwrap().starts_with("\"lookup\""), "{third:?}");
    assert!(app.http.get(app.url("/symbols")).send().await.unwrap().status().is_success(), "other reads go on");
    app.stop().await;
}

/// The peak resident memory of process `pid` (`VmHWM`), in KiB.
fn peak_resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process status");
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).expect("a VmHWM line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("KiB")
}

#[test]
fn five_hundred_logins_at_once_wait_their_turn_instead_of_exhausting_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, seen) = spawn_logged(&mut all_in_one(dir.path()));
    // The provider's own port: the gateway's per-address limit would stop
    // a single client long before 500.
    let provider = loop {
        let line: Value = serde_json::from_str(&seen.recv_timeout(WAIT).expect("lizards comes up")).expect("JSON");
        if line["message"] == "provider listening" {
            break line["addr"].as_str().expect("an address").to_string();
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let statuses = runtime.block_on(async {
        let http = lizards_shared::http::client();
        let logins = (0..500).map(|i| {
            // Unknown addresses, each its own: a dummy hash is verified for
            // every one, as for a wrong password.
            let body = json!({"email": format!("nobody{i}@example.com"), "password": "wrong-password"});
            let request = http.post(format!("http://{provider}/auth/login")).json(&body).send();
            async move { request.await.map(|response| response.status()) }
        });
        futures::future::join_all(logins).await
    });
    let peak_mib = peak_resident_kib(child.id()) / 1024;
    let _ = child.kill();
    let _ = child.wait();
    let refused = statuses.iter().filter(|s| matches!(s, Ok(StatusCode::UNAUTHORIZED))).count();
    assert_eq!(refused, 500, "every login was answered: {:?}", statuses.iter().find(|s| s.is_err()));
    // Unbounded, 500 argon2 hashes at once would take 500 x 19 MiB (9.3 GiB).
    assert!(peak_mib < 1024, "peak resident memory {peak_mib} MiB");
    eprintln!("500 simultaneous logins: peak resident memory {peak_mib} MiB");
}

#[tokio::test]
async fn nobody_links_someone_elses_telegram_chat_through_the_api() {
    let app = spawn_app().await;
    let token = app.user(&email("chat-thief")).await;
    let victims_chat = 123_456_789;
    let hijack =
        app.http.patch(app.url("/users/me")).bearer_auth(&token).json(&json!({"telegram_chat_id": victims_chat}));
    let refused = hijack.send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "telegram_chat_id", "{problem}");
    let unlink = app.http.patch(app.url("/users/me")).bearer_auth(&token).json(&json!({"telegram_chat_id": null}));
    assert_eq!(unlink.send().await.unwrap().status(), StatusCode::OK, "unlinking stays possible");

    let address = email("chat-thief-signup");
    let signup = json!({"email": address, "password": PASSWORD, "telegram_chat_id": victims_chat});
    let registered = app.http.post(app.url("/auth/register")).json(&signup).send().await.unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let body: Value = registered.json().await.unwrap();
    assert_eq!(body["notifications"]["telegram_chat_id"], Value::Null, "not linked as named");
    let code = body["telegram"]["link_code"].as_str().expect("a code to send the bot from that chat");
    let expires: i64 = code.rsplit_once('-').and_then(|(_, at)| at.parse().ok()).expect("the code's expiry");
    assert!(expires > Utc::now().timestamp() && expires <= Utc::now().timestamp() + 15 * 60, "{code}");
    app.stop().await;
}

#[tokio::test]
async fn an_open_websocket_ends_when_its_token_is_revoked() {
    let app =
        helpers::spawn_app_with(|config| config.provider.ws_ping_interval = std::time::Duration::from_millis(200))
            .await;
    let address = email("watcher");
    let token = app.user(&address).await;
    let mut socket = app.ws(&format!("/ws?token={token}")).await;
    socket.recv_until(|frame| frame["type"] == "authenticated").await;

    let change = json!({"password": "a-changed-password", "current_password": PASSWORD});
    let changed = app.http.patch(app.url("/users/me")).bearer_auth(&token).json(&change).send().await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let ended = socket.recv_until(|frame| frame["type"] == "error").await;
    assert!(ended["message"].as_str().unwrap().starts_with("Authentication ended"), "{ended}");
    let close = socket.expect_close(WAIT).await;
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    app.stop().await;
}
