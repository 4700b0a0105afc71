//! Alert rules and alerts: rules fire once on a crossing, not
//! again inside the cooldown; the alert is stored, sent to the user's
//! WebSockets and published for the notifier. Users only ever see their
//! own rules, alerts and portfolio.

use lizards_shared::broker::{Broker, NOTIFY_QUEUE};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Client, TestProvider, TestUser, spawn, wait_for};

async fn create_rule(provider: &TestProvider, user: &TestUser, body: Value) -> Value {
    let answer = provider.post_as("/alerts/rules", Some(&user.token), body).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.body
}

async fn alerts(provider: &TestProvider, user: &TestUser) -> Vec<Value> {
    provider.get_as("/alerts", Some(&user.token)).await.body["alerts"].as_array().cloned().unwrap_or_default()
}

/// Publishes `price` for `symbol` and waits until the evaluator has taken it.
async fn tick(provider: &TestProvider, symbol: &str, price: f64) {
    let before = provider.metric_where("lizards_messages_consumed_total", "queue=\"alerts.eval\"").await;
    provider.publish(&crate::helpers::quote(symbol, price)).await;
    wait_for(|| async {
        provider.metric_where("lizards_messages_consumed_total", "queue=\"alerts.eval\"").await > before
    })
    .await;
}

/// The next frame of a given type, skipping others.
async fn next_of_type(client: &mut Client, kind: &str) -> Value {
    client.recv_until(|f| f["type"] == kind).await
}

#[tokio::test]
async fn a_rule_fires_once_on_the_crossing_and_not_again_inside_the_cooldown() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AAPL", 150.0).await;
    let rule = create_rule(&provider, &user, json!({"symbol": "AAPL", "kind": "above", "threshold": 155.0})).await;
    assert_eq!(rule["cooldown"], 900);
    assert_eq!(rule["channels"], json!(["email", "webhook", "telegram", "ws"]));
    let mut socket = provider.ws_path(&format!("/ws?token={}", user.token)).await;
    assert_eq!(next_of_type(&mut socket, "authenticated").await["user_id"], user.id);

    tick(&provider, "AAPL", 154.0).await;
    assert!(alerts(&provider, &user).await.is_empty(), "no crossing yet");
    tick(&provider, "AAPL", 156.5).await;
    let frame = next_of_type(&mut socket, "alert").await;
    assert_eq!(frame["alert"]["symbol"], "AAPL");
    assert_eq!(frame["alert"]["kind"], "above");
    assert_eq!(frame["alert"]["price"], 156.5);
    assert_eq!(frame["alert"]["rule_id"], rule["id"]);

    // Above again, back below and above again: all inside the cooldown.
    for price in [157.0, 150.0, 158.0] {
        tick(&provider, "AAPL", price).await;
    }
    let stored = alerts(&provider, &user).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["message"], "AAPL rose above 155: now 156.5");
    let deliveries = stored[0]["deliveries"].as_array().unwrap();
    let channels: Vec<&str> = deliveries.iter().map(|d| d["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["email", "webhook", "telegram", "ws"]);
    assert!(deliveries.iter().any(|d| d["channel"] == "ws" && d["status"] == "sent"), "{deliveries:?}");
    assert_eq!(provider.broker.queue_len(NOTIFY_QUEUE).await.unwrap(), 1, "published once for the notifier");
    assert_eq!(provider.metric("lizards_alerts_fired_total").await, 1.0);
}

#[tokio::test]
async fn alerts_reach_sessions_bound_to_the_user_and_auth_frames() {
    let provider = spawn().await;
    let user = provider.user().await;
    let stranger = provider.user().await;
    provider.seed("MSFT", 100.0).await;
    create_rule(&provider, &user, json!({"symbol": "MSFT", "kind": "below", "threshold": 90, "cooldown": 0})).await;

    let session = provider.send(Method::POST, "/session", Some(&user.token), Some(&json!({})), &[]).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let id = session.body["session_id"].as_str().unwrap();
    let mut by_session = provider.ws_path(&format!("/ws?session={id}")).await;
    let mut by_frame = provider.ws().await;
    by_frame.send(json!({"type": "auth", "token": "garbage"})).await;
    assert!(
        next_of_type(&mut by_frame, "error").await["message"].as_str().unwrap().starts_with("Authentication failed")
    );
    by_frame.send(json!({"type": "auth", "token": user.token})).await;
    next_of_type(&mut by_frame, "authenticated").await;
    let mut theirs = provider.ws_path(&format!("/ws?token={}", stranger.token)).await;
    next_of_type(&mut theirs, "authenticated").await;

    tick(&provider, "MSFT", 85.0).await;
    for socket in [&mut by_session, &mut by_frame] {
        assert_eq!(next_of_type(socket, "alert").await["alert"]["kind"], "below");
    }
    theirs.send(json!({"type": "ping"})).await;
    assert_eq!(next_of_type(&mut theirs, "pong").await["type"], "pong");
    assert!(theirs.recv_within(std::time::Duration::from_millis(300)).await.is_none(), "not someone else's alert");

    let bad = provider.send(Method::POST, "/session", Some("bad-token"), Some(&json!({})), &[]).await;
    assert_eq!(bad.status, 401);
}

#[tokio::test]
async fn change_pct_rules_fire_on_the_move_from_their_baseline() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("TSLA", 200.0).await;
    create_rule(&provider, &user, json!({"symbol": "TSLA", "kind": "change_pct", "threshold": -5, "cooldown": 0}))
        .await;
    tick(&provider, "TSLA", 195.0).await;
    tick(&provider, "TSLA", 189.0).await;
    let stored = alerts(&provider, &user).await;
    assert_eq!(stored.len(), 1);
    assert!((stored[0]["change_pct"].as_f64().unwrap() + 5.5).abs() < 1e-9, "{}", stored[0]);
}

/// Quotes published back to back reach the evaluator in batches: every
/// crossing inside one still counts, and the cooldown still holds.
#[tokio::test]
async fn a_burst_of_crossings_fires_per_crossing_unless_cooling_down() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AMD", 99.0).await;
    let eager = json!({"symbol": "AMD", "kind": "above", "threshold": 100, "cooldown": 0});
    let eager = create_rule(&provider, &user, eager).await;
    let patient = create_rule(&provider, &user, json!({"symbol": "AMD", "kind": "above", "threshold": 100})).await;
    let before = provider.metric_where("lizards_messages_consumed_total", "queue=\"alerts.eval\"").await;
    for price in [101.0, 99.0].repeat(5) {
        provider.publish(&crate::helpers::quote("AMD", price)).await;
    }
    wait_for(|| async {
        provider.metric_where("lizards_messages_consumed_total", "queue=\"alerts.eval\"").await >= before + 10.0
    })
    .await;
    let stored = alerts(&provider, &user).await;
    let fired_by = |rule: &Value| stored.iter().filter(|a| a["rule_id"] == rule["id"]).count();
    assert_eq!(fired_by(&eager), 5, "{stored:?}");
    assert_eq!(fired_by(&patient), 1, "{stored:?}");
    assert!(stored.iter().all(|a| a["price"] == 101.0), "{stored:?}");
}

/// Two instances share `alerts.eval`: each quote is evaluated by one of
/// them, and compare-and-set on the rule keeps a burst of crossings split
/// between them to one alert per cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_evaluating_one_rule_fire_it_once_per_cooldown() {
    let provider = spawn().await;
    let sibling = provider.sibling().await;
    let user = provider.user().await;
    provider.seed("INTC", 99.0).await;
    create_rule(&provider, &user, json!({"symbol": "INTC", "kind": "above", "threshold": 100})).await;
    // The sibling learns of the rule from the database.
    wait_for(|| async { sibling.metric("lizards_symbols_referenced").await == 1.0 }).await;
    let consumed = || async {
        let label = "queue=\"alerts.eval\"";
        provider.metric_where("lizards_messages_consumed_total", label).await
            + sibling.metric_where("lizards_messages_consumed_total", label).await
    };
    let sibling_took =
        || async { sibling.metric_where("lizards_messages_consumed_total", "queue=\"alerts.eval\"").await };
    // Whichever instance asks first takes what is ready, so one may take a
    // whole burst: bursts go on until both have evaluated some.
    let mut expected = consumed().await;
    for _ in 0..10 {
        for price in [101.0, 99.0].repeat(20) {
            provider.publish(&crate::helpers::quote("INTC", price)).await;
        }
        expected += 40.0;
        wait_for(|| async { consumed().await >= expected }).await;
        if sibling_took().await > 0.0 {
            break;
        }
    }
    assert!(sibling_took().await > 0.0, "both instances took quotes");
    let stored = alerts(&provider, &user).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
}

#[tokio::test]
async fn a_windowed_change_pct_rule_compares_with_the_price_window_minutes_before() {
    let provider = spawn().await;
    let user = provider.user().await;
    let mut earlier = crate::helpers::quote("NVDA", 100.0);
    earlier.ts -= chrono::Duration::minutes(10);
    provider.publish(&earlier).await;
    provider.seed("NVDA", 101.0).await;
    let body = json!({"symbol": "NVDA", "kind": "change_pct", "threshold": 5, "window": 5, "cooldown": 0});
    assert_eq!(create_rule(&provider, &user, body).await["window"], 5);
    // 101 was the latest price but the window reaches back to 100.
    tick(&provider, "NVDA", 104.0).await;
    assert!(alerts(&provider, &user).await.is_empty(), "+4 % in the window");
    tick(&provider, "NVDA", 105.5).await;
    let stored = alerts(&provider, &user).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["message"], "NVDA moved +5.50% in 5 min: now 105.5");
}

#[tokio::test]
async fn a_portfolio_change_pct_rule_fires_when_the_holdings_move() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AMZN", 100.0).await;
    assert_eq!(provider.post_as("/portfolio/deposit", Some(&user.token), json!({"amount": 1000})).await.status, 200);
    let order = json!({"symbol": "AMZN", "side": "buy", "quantity": 8});
    assert_eq!(provider.post_as("/portfolio/orders", Some(&user.token), order).await.status, 201);
    // 200 cash + 8 × 100 = 1000 when the rule is made: that is its baseline.
    create_rule(&provider, &user, json!({"kind": "portfolio_change_pct", "threshold": -10, "cooldown": 0})).await;
    tick(&provider, "AMZN", 90.0).await;
    assert!(alerts(&provider, &user).await.is_empty(), "200 + 720 = 920 is -8 %");
    tick(&provider, "AMZN", 85.0).await;
    let stored = alerts(&provider, &user).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["kind"], "portfolio_change_pct");
    assert_eq!(stored[0]["symbol"], Value::Null);
    assert_eq!(stored[0]["message"], "Your portfolio moved -12.00%: now 880.00 USD");
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_field_named() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AAPL", 150.0).await;
    let cases = [
        (json!({"symbol": "AAPL", "kind": "sideways", "threshold": 1}), "kind"),
        (json!({"symbol": "AAPL", "kind": "above"}), "threshold"),
        (json!({"symbol": "AAPL", "kind": "above", "threshold": "high"}), "threshold"),
        (json!({"symbol": "AAPL", "kind": "above", "threshold": -3}), "threshold"),
        (json!({"symbol": "XYZ123", "kind": "above", "threshold": 1}), "Invalid stock symbol"),
        (json!({"symbol": "A'; DELETE FROM alert_rules; --", "kind": "above", "threshold": 1}), "symbol"),
        (json!({"symbol": "AAPL", "kind": "above", "threshold": 1, "channels": ["sms"]}), "channels"),
        (json!({"symbol": "AAPL", "kind": "above", "threshold": 1, "cooldown": -1}), "cooldown"),
        (json!({"kind": "portfolio_change_pct", "threshold": 5, "symbol": "AAPL"}), "symbol"),
    ];
    for (body, field) in cases {
        let answer = provider.post_as("/alerts/rules", Some(&user.token), body.clone()).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert!(answer.detail().contains(field), "{body}: {}", answer.body);
    }
    let rules = provider.get_as("/alerts/rules", Some(&user.token)).await;
    assert_eq!(rules.body["rules"], json!([]), "nothing stored");
}

#[tokio::test]
async fn rules_can_be_changed_and_deleted_by_their_owner() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AAPL", 150.0).await;
    let rule = create_rule(&provider, &user, json!({"symbol": "AAPL", "kind": "above", "threshold": 155})).await;
    let path = format!("/alerts/rules/{}", rule["id"]);
    let changed = provider
        .send(Method::PATCH, &path, Some(&user.token), Some(&json!({"threshold": 170, "channels": ["ws"]})), &[])
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["threshold"], 170.0);
    assert_eq!(changed.body["channels"], json!(["ws"]));
    assert_eq!(changed.body["symbol"], "AAPL");
    assert_eq!(provider.get_as(&path, Some(&user.token)).await.body["threshold"], 170.0);
    assert_eq!(provider.send(Method::DELETE, &path, Some(&user.token), None, &[]).await.status, 204);
    assert_eq!(provider.get_as(&path, Some(&user.token)).await.status, 404);
}

/// Every endpoint of a user's data, tried with another user's token and
/// with none.
#[tokio::test]
async fn users_cannot_read_or_change_each_others_rules_alerts_or_portfolio() {
    let provider = spawn().await;
    let owner = provider.user().await;
    let other = provider.user().await;
    provider.seed("AAPL", 150.0).await;
    let rule =
        create_rule(&provider, &owner, json!({"symbol": "AAPL", "kind": "above", "threshold": 155, "cooldown": 0}))
            .await;
    assert_eq!(provider.post_as("/portfolio/deposit", Some(&owner.token), json!({"amount": 1000})).await.status, 200);
    let bought = provider
        .post_as("/portfolio/orders", Some(&owner.token), json!({"symbol": "AAPL", "side": "buy", "quantity": 1}))
        .await;
    assert_eq!(bought.status, 201);
    tick(&provider, "AAPL", 160.0).await;
    assert_eq!(alerts(&provider, &owner).await.len(), 1);

    let rule_path = format!("/alerts/rules/{}", rule["id"]);
    let patch = json!({"threshold": 1});
    for (method, path, body) in [
        (Method::GET, rule_path.as_str(), None),
        (Method::PATCH, rule_path.as_str(), Some(&patch)),
        (Method::DELETE, rule_path.as_str(), None),
    ] {
        let answer = provider.send(method.clone(), path, Some(&other.token), body, &[]).await;
        assert_eq!(answer.status, 404, "{method} {path} as another user: {}", answer.body);
    }
    assert_eq!(provider.get_as("/alerts/rules", Some(&other.token)).await.body["rules"], json!([]));
    assert_eq!(provider.get_as("/alerts", Some(&other.token)).await.body["alerts"], json!([]));
    let theirs = provider.get_as("/portfolio", Some(&other.token)).await.body;
    assert_eq!((theirs["cash"].clone(), theirs["positions"].clone()), (json!("0.00"), json!([])));
    assert_eq!(provider.get_as("/portfolio/orders", Some(&other.token)).await.body["orders"], json!([]));

    let sell = json!({"symbol": "AAPL", "side": "sell", "quantity": 1});
    for (method, path, body) in [
        (Method::GET, "/users/me", None),
        (Method::PATCH, "/users/me", Some(&patch)),
        (Method::DELETE, "/users/me", None),
        (Method::GET, "/alerts", None),
        (Method::GET, "/alerts/rules", None),
        (Method::POST, "/alerts/rules", Some(&patch)),
        (Method::GET, rule_path.as_str(), None),
        (Method::PATCH, rule_path.as_str(), Some(&patch)),
        (Method::DELETE, rule_path.as_str(), None),
        (Method::GET, "/portfolio", None),
        (Method::POST, "/portfolio/deposit", Some(&patch)),
        (Method::GET, "/portfolio/orders", None),
        (Method::POST, "/portfolio/orders", Some(&sell)),
        (Method::POST, "/users/me/telegram", None),
    ] {
        let answer = provider.send(method.clone(), path, None, body, &[]).await;
        assert_eq!(answer.status, 401, "{method} {path} without a token: {}", answer.body);
    }
    // The owner's data is untouched.
    assert_eq!(provider.get_as(&rule_path, Some(&owner.token)).await.body["threshold"], 155.0);
    assert_eq!(provider.get_as("/portfolio", Some(&owner.token)).await.body["positions"][0]["quantity"], "1");
}
