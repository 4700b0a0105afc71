//! The whole platform end to end, through the gateway, as a client sees it.

mod helpers;

use std::time::Instant;

use helpers::{has, spawn_app, spawn_app_with};
use serde_json::json;

#[tokio::test]
async fn subscribing_through_the_gateway_yields_a_snapshot_then_live_updates() {
    let app = spawn_app().await;
    let mut client = app.ws("/ws").await;
    client.send(json!({"type": "subscribe", "symbols": ["AAPL"], "id": 1})).await;
    assert_eq!(client.recv().await, json!({"type": "subscribed", "symbols": ["AAPL"], "id": 1}));
    let mut timestamps = Vec::new();
    while timestamps.len() < 3 {
        let frame = client.recv().await;
        assert_eq!(frame["type"], "price_update", "{frame}");
        let update = &frame["data"]["AAPL"];
        assert!(update["price"].as_f64().unwrap() > 0.0);
        let ts = update["timestamp"].as_str().unwrap().to_string();
        assert!(chrono::DateTime::parse_from_rfc3339(&ts).is_ok() && ts.ends_with('Z'), "{ts}");
        timestamps.push(ts);
    }
    timestamps.dedup();
    assert_eq!(timestamps.len(), 3, "live updates, not the same snapshot again");
    app.stop().await;
}

#[tokio::test]
async fn unsubscribing_through_the_gateway_stops_updates() {
    let app = spawn_app().await;
    let mut client = app.ws("/").await; // seed URL without a path
    client.send(json!({"type": "subscribe", "symbols": ["AAPL", "MSFT"]})).await;
    client.recv_until(|f| has(f, "AAPL")).await;
    client.send(json!({"type": "unsubscribe", "symbols": ["AAPL"]})).await;
    client.recv_until(|f| f["type"] == "unsubscribed").await;
    // AAPL ticks about 9 times a second; watch MSFT flow for two seconds.
    let started = Instant::now();
    let mut msft = 0;
    while started.elapsed().as_secs() < 2 {
        let frame = client.recv().await;
        assert!(!has(&frame, "AAPL"), "AAPL after unsubscribe: {frame}");
        msft += has(&frame, "MSFT") as u32;
    }
    assert!(msft >= 3, "MSFT kept streaming ({msft} updates)");
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_invalid_symbols_get_error_frames_through_the_gateway() {
    let app = spawn_app().await;
    let mut client = app.ws("/ws").await;
    client.send(json!({"type": "subscribe", "symbols": ["XYZ123", "NOT VALID", "BTC-USD"]})).await;
    let mut errors = Vec::new();
    let mut subscribed = None;
    while errors.len() < 2 || subscribed.is_none() {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("error") => errors.push(frame["message"].as_str().unwrap().to_string()),
            Some("subscribed") => subscribed = Some(frame["symbols"].clone()),
            _ => {}
        }
    }
    errors.sort();
    assert_eq!(errors, vec!["Invalid stock symbol: NOT VALID", "Invalid stock symbol: XYZ123"]);
    assert_eq!(subscribed.unwrap(), json!(["BTC-USD"]));
    client.recv_until(|f| has(f, "BTC-USD")).await;
    app.stop().await;
}

#[tokio::test]
async fn a_session_from_the_gateway_points_at_the_gateway_and_resumes() {
    let app = spawn_app().await;
    let body: serde_json::Value = app.http.post(app.url("/session")).send().await.unwrap().json().await.unwrap();
    let url = body["websocket_url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("ws://{}/ws?session=", app.gateway)), "{url}");
    let mut first = app.ws(&url).await;
    first.send(json!({"type": "subscribe", "symbols": ["ETH-USD"]})).await;
    first.recv_until(|f| f["type"] == "subscribed").await;
    drop(first);
    // Reconnecting with the same URL resumes without a new subscribe.
    let deadline = Instant::now();
    loop {
        let mut again = app.ws(&url).await;
        let frame = again.recv().await;
        if frame == json!({"type": "subscribed", "symbols": ["ETH-USD"]}) {
            again.recv_until(|f| has(f, "ETH-USD")).await;
            break;
        }
        // The first connection's close may not have been processed yet.
        assert!(deadline.elapsed().as_secs() < 5, "session not resumed: {frame}");
    }
    app.stop().await;
}

#[tokio::test]
async fn rest_routes_reach_their_services_through_the_gateway() {
    let app = spawn_app().await;
    let get = |path: &'static str| {
        let request = app.http.get(app.url(path));
        async move { request.send().await.unwrap() }
    };
    // Right after start-up AAPL may have no quote yet (404 until then).
    let started = Instant::now();
    let response = loop {
        let response = get("/quotes/AAPL").await;
        if response.status() != 404 || started.elapsed() > helpers::WAIT {
            break response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let quote: serde_json::Value = response.json().await.unwrap();
    assert_eq!(quote["symbol"], "AAPL");
    let sources: serde_json::Value = get("/sources").await.json().await.unwrap();
    assert_eq!(sources, json!({"sources": ["synthetic://gbm"]}));
    let provider: serde_json::Value = get("/services/provider").await.json().await.unwrap();
    assert_eq!(provider["instance_count"], 1);
    let missing = get("/quotes/NOPE").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    // Registry writes are not exposed publicly.
    let write = app.http.post(app.url("/services/evil")).json(&json!({})).send().await.unwrap();
    assert_eq!(write.status(), 405);
    let page = get("/").await;
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.http.get(app.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_proxied_websockets_with_1001() {
    let app = spawn_app().await;
    let mut client = app.ws("/ws").await;
    client.send(json!({"type": "ping"})).await;
    client.recv_until(|f| f["type"] == "pong").await;
    app.shutdown.cancel();
    let close = client.expect_close(helpers::WAIT).await;
    assert_eq!(u16::from(close.code), 1001);
    app.stop().await;
}

/// A symbol only a (fixture) web source knows: the subscription triggers a
/// lookup across the sources, the Yahoo source finds it, and its prices
/// stream through ingestion → RabbitMQ/embedded broker → provider →
/// gateway to the client, first at once, then from regular polls.
#[tokio::test]
async fn a_symbol_only_a_web_source_knows_streams_to_a_websocket_client() {
    use lizards_testkit::fixture::{Fixture, Reply};
    let fixture = Fixture::start().await;
    let yahoo = include_str!("../../ingestion/tests/fixtures/yahoo_chart.json")
        .replace(r#""regularMarketTime":1726257601"#, r#""regularMarketTime":{{now}}"#)
        .replace(r#""regularMarketPrice":222.5"#, r#""regularMarketPrice":{{price}}"#);
    fixture.route("/v8/finance/chart/ZZZZ", Reply::json(yahoo));
    let url = fixture.url();
    let app = spawn_app_with(move |config| {
        config.ingestion.sources = vec!["synthetic".into(), "yahoo".into()];
        config.ingestion.yahoo_url = url;
        config.ingestion.poll_interval_yahoo = std::time::Duration::from_secs(1);
    })
    .await;
    let mut client = app.ws("/ws").await;
    client.send(json!({"type": "subscribe", "symbols": ["ZZZZ", "NOPE"]})).await;
    let mut subscribed = false;
    let mut errors = Vec::new();
    let mut prices = Vec::new();
    while prices.len() < 2 {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("subscribed") if frame["symbols"] == json!(["ZZZZ"]) => subscribed = true,
            Some("error") => errors.push(frame["message"].as_str().unwrap_or_default().to_string()),
            Some("price_update") if has(&frame, "ZZZZ") => {
                assert!(subscribed, "acknowledged before prices");
                prices.push(frame["data"]["ZZZZ"]["timestamp"].clone());
            }
            _ => {}
        }
    }
    assert_ne!(prices[0], prices[1], "later polls bring newer quotes");
    assert_eq!(errors, ["Invalid stock symbol: NOPE"]);
    let sources: serde_json::Value = app.http.get(app.url("/sources")).send().await.unwrap().json().await.unwrap();
    assert!(sources["sources"].as_array().unwrap().contains(&json!(fixture.url())), "{sources}");
    app.stop().await;
}

/// A person's whole path through the gateway: register, log in, fund the
/// portfolio and buy, set an alert rule and get the alert on a WebSocket.
#[tokio::test]
async fn accounts_portfolio_and_alerts_work_through_the_gateway() {
    // A rule that fires on the next tick: below the default floors.
    let app = spawn_app_with(|config| {
        config.provider.alert_min_cooldown = std::time::Duration::ZERO;
        config.provider.alert_min_change_pct = 0.0;
    })
    .await;
    let email = format!("{}@example.com", lizards_testkit::unique("e2e"));
    let credentials = json!({"email": email, "password": "password-123"});
    let registered = app.http.post(app.url("/auth/register")).json(&credentials).send().await.unwrap();
    assert_eq!(registered.status(), 201);
    let login: serde_json::Value =
        app.http.post(app.url("/auth/login")).json(&credentials).send().await.unwrap().json().await.unwrap();
    let token = login["access_token"].as_str().expect("a token").to_string();

    let deposit =
        app.http.post(app.url("/portfolio/deposit")).bearer_auth(&token).json(&json!({"amount": 10000})).send();
    assert_eq!(deposit.await.unwrap().status(), 200);
    let order = json!({"symbol": "AAPL", "side": "buy", "quantity": 2});
    let bought = app.http.post(app.url("/portfolio/orders")).bearer_auth(&token).json(&order).send().await.unwrap();
    assert_eq!(bought.status(), 201);
    let portfolio: serde_json::Value =
        app.http.get(app.url("/portfolio")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(portfolio["positions"][0]["symbol"], "AAPL");
    let anonymous = app.http.get(app.url("/portfolio")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // Synthetic prices move every tick: a tiny upward move fires soon.
    let rule = json!({"symbol": "MSFT", "kind": "change_pct", "threshold": 0.0001, "cooldown": 0, "channels": ["ws"]});
    let created = app.http.post(app.url("/alerts/rules")).bearer_auth(&token).json(&rule).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let mut client = app.ws(&format!("/ws?token={token}")).await;
    let frame = client.recv_until(|f| f["type"] == "alert").await;
    assert_eq!(frame["alert"]["symbol"], "MSFT");
    assert_eq!(frame["alert"]["kind"], "change_pct");
    let alerts: serde_json::Value =
        app.http.get(app.url("/alerts")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert!(!alerts["alerts"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_role_that_cannot_bind_names_itself_and_the_address() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = held.local_addr().expect("an address").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = lizards_shared::config::Config::for_tests(dir.path());
    config.gateway.gateway_port = port;
    let shutdown = lizards_shared::shutdown::Shutdown::new();
    let error = lizards::platform::start(config, lizards::platform::Target::All, shutdown.clone()).await.err();
    shutdown.cancel();
    let message = format!("{:#}", error.expect("the gateway cannot bind"));
    assert!(message.contains(&format!("cannot bind the gateway's listener on 127.0.0.1:{port}")), "{message}");
}

#[tokio::test]
async fn a_role_that_loses_a_vital_worker_stops_every_role_and_names_the_cause() {
    let mut app = spawn_app().await;
    let platform = app.platform.take().expect("running");
    let provider = platform.supervisors.iter().find(|s| s.role() == "provider").expect("the provider runs").clone();
    lizards_testkit::eventually("the live feed to be aborted", || async { provider.abort("live feed") }).await;
    tokio::time::timeout(helpers::WAIT, app.shutdown.cancelled()).await.expect("the platform stops by itself");
    let stopped = tokio::time::timeout(helpers::WAIT, platform.stopped()).await.expect("every role stops in time");
    let message = format!("{:#}", stopped.expect_err("the process reports the failure"));
    assert_eq!(message, "the provider's live feed worker was aborted");
}

#[tokio::test]
async fn a_message_over_one_mebibyte_through_the_gateway_is_closed_with_1009() {
    let app = spawn_app().await;
    let mut client = app.ws("/ws").await;
    client.send_text(&"x".repeat(2 * 1024 * 1024)).await;
    let close = client.expect_close(helpers::WAIT).await;
    assert_eq!(u16::from(close.code), 1009);
    assert_eq!(close.reason.as_str(), "message too big: at most 1 MiB");
    app.stop().await;
}
