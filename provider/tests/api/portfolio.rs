//! Portfolio simulation: deposits, orders at the latest price,
//! refusals that change nothing, and Idempotency-Key.

use chrono::Duration;
use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use lizards_shared::store::QuoteStore;

use crate::helpers::{TestProvider, TestUser, quote, spawn};

async fn deposit(provider: &TestProvider, user: &TestUser, amount: Value) -> crate::helpers::Answer {
    provider.post_as("/portfolio/deposit", Some(&user.token), json!({ "amount": amount })).await
}

async fn order(provider: &TestProvider, user: &TestUser, body: Value) -> crate::helpers::Answer {
    provider.post_as("/portfolio/orders", Some(&user.token), body).await
}

#[tokio::test]
async fn deposit_buy_and_sell_move_cash_positions_and_pnl_in_decimals() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AAPL", 150.0).await;
    let answer = deposit(&provider, &user, json!("1000.10")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["cash"], "1000.10");

    let bought = order(&provider, &user, json!({"symbol": "aapl", "side": "buy", "quantity": 2.5})).await;
    assert_eq!(bought.status, 201, "{}", bought.body);
    assert_eq!(bought.body["symbol"], "AAPL");
    assert_eq!(bought.body["price"], "150");
    assert_eq!(bought.body["value"], "375.00");
    assert_eq!(bought.body["portfolio"]["cash"], "625.10");

    provider.seed("AAPL", 160.0).await;
    let sold = order(&provider, &user, json!({"symbol": "AAPL", "side": "sell", "quantity": "1"})).await;
    assert_eq!(sold.status, 201, "{}", sold.body);
    assert_eq!(sold.body["portfolio"]["cash"], "785.10");
    assert_eq!(sold.body["portfolio"]["realised_pnl"], "10.00");

    let overview = provider.get_as("/portfolio", Some(&user.token)).await;
    assert_eq!(overview.status, 200);
    let position = &overview.body["positions"][0];
    assert_eq!(position["symbol"], "AAPL");
    assert_eq!(position["quantity"], "1.5");
    assert_eq!(position["avg_cost"], "150");
    assert_eq!(position["price"], "160");
    assert_eq!(position["value"], "240.00");
    assert_eq!(position["unrealised_pnl"], "15.00");
    assert_eq!(overview.body["total_value"], "1025.10");

    let orders = provider.get_as("/portfolio/orders", Some(&user.token)).await;
    let sides: Vec<&str> =
        orders.body["orders"].as_array().unwrap().iter().map(|o| o["side"].as_str().unwrap()).collect();
    assert_eq!(sides, ["sell", "buy"], "newest first");
}

#[tokio::test]
async fn refused_orders_and_deposits_are_4xx_and_change_nothing() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AAPL", 100.0).await;
    assert_eq!(deposit(&provider, &user, json!(500)).await.status, 200);
    assert_eq!(order(&provider, &user, json!({"symbol": "AAPL", "side": "buy", "quantity": 2})).await.status, 201);
    let before = provider.get_as("/portfolio", Some(&user.token)).await.body;

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"symbol": "AAPL", "side": "buy", "quantity": 4}), 422, "insufficient cash"),
        (json!({"symbol": "AAPL", "side": "sell", "quantity": 3}), 422, "insufficient quantity"),
        (json!({"symbol": "AAPL", "side": "buy", "quantity": 0}), 422, "quantity"),
        (json!({"symbol": "AAPL", "side": "buy", "quantity": -1}), 422, "quantity"),
        (json!({"symbol": "AAPL", "side": "buy", "quantity": "NaN"}), 422, "quantity"),
        (json!({"symbol": "AAPL", "side": "buy", "quantity": "abc"}), 422, "quantity"),
        (json!({"symbol": "AAPL", "side": "buy", "quantity": "0.000000001"}), 422, "quantity"),
        (json!({"symbol": "AAPL", "side": "buy", "quantity": true}), 422, "quantity"),
        (json!({"symbol": "AAPL", "side": "hold", "quantity": 1}), 422, "side"),
        (json!({"symbol": "XYZ123", "side": "buy", "quantity": 1}), 422, "Invalid stock symbol: XYZ123"),
        (json!({"symbol": "'; DROP TABLE orders; --", "side": "buy", "quantity": 1}), 422, "symbol"),
        (json!({"side": "buy", "quantity": 1}), 422, "symbol"),
    ];
    for (body, status, detail) in cases {
        let answer = order(&provider, &user, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.detail().contains(detail), "{body}: {}", answer.body);
    }
    for amount in [json!(0), json!(-5), json!("1.001"), json!("NaN"), json!(1e12), json!("lots"), json!(null)] {
        let answer = deposit(&provider, &user, amount.clone()).await;
        assert_eq!(answer.status, 422, "{amount}: {}", answer.body);
    }
    assert_eq!(provider.get_as("/portfolio", Some(&user.token)).await.body, before, "state unchanged");
    let orders = provider.get_as("/portfolio/orders", Some(&user.token)).await;
    assert_eq!(orders.body["orders"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_order_without_a_price_from_the_last_minute_is_a_conflict() {
    let provider = spawn().await;
    let user = provider.user().await;
    assert_eq!(deposit(&provider, &user, json!(500)).await.status, 200);
    let mut old = quote("OLDX", 10.0);
    old.ts -= Duration::minutes(5);
    provider.publish(&old).await;
    crate::helpers::wait_for(|| async { provider.store.latest(&old.symbol).await.ok().flatten().is_some() }).await;
    let answer = order(&provider, &user, json!({"symbol": "OLDX", "side": "buy", "quantity": 1})).await;
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(answer.detail().contains("no price for OLDX"), "{}", answer.body);
}

fn keyed(key: &str) -> [(&str, &str); 1] {
    [("Idempotency-Key", key)]
}

#[tokio::test]
async fn the_same_post_twice_with_one_idempotency_key_creates_one_order() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.seed("AAPL", 100.0).await;
    assert_eq!(deposit(&provider, &user, json!(1000)).await.status, 200);
    let body = json!({"symbol": "AAPL", "side": "buy", "quantity": 1});
    let send = |key: &'static str, body: Value| {
        let (provider, token) = (&provider, user.token.clone());
        async move { provider.send(Method::POST, "/portfolio/orders", Some(&token), Some(&body), &keyed(key)).await }
    };
    let first = send("order-1", body.clone()).await;
    let retry = send("order-1", body.clone()).await;
    assert_eq!((first.status, retry.status), (201, 201));
    assert_eq!(first.body, retry.body, "the stored answer");
    assert_eq!(retry.headers.get("idempotent-replayed").unwrap(), "true");

    // Concurrent duplicates wait for the first and get its answer.
    let answers = join_all((0..8).map(|_| send("order-2", body.clone()))).await;
    let ids: std::collections::HashSet<String> = answers.iter().map(|a| a.body["id"].to_string()).collect();
    assert!(answers.iter().all(|a| a.status == 201), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(ids.len(), 1, "one order for eight requests");

    let other_body = send("order-1", json!({"symbol": "AAPL", "side": "buy", "quantity": 2})).await;
    assert_eq!(other_body.status, 422, "{}", other_body.body);
    let bad_key = provider.send(Method::POST, "/portfolio/orders", Some(&user.token), Some(&body), &keyed("")).await;
    assert_eq!(bad_key.status, 400);

    let orders = provider.get_as("/portfolio/orders", Some(&user.token)).await;
    assert_eq!(orders.body["orders"].as_array().unwrap().len(), 2, "order-1 and order-2 once each");
    // The key is scoped per user: another user's identical key is theirs.
    let other = provider.user().await;
    assert_eq!(deposit(&provider, &other, json!(1000)).await.status, 200);
    let theirs =
        provider.send(Method::POST, "/portfolio/orders", Some(&other.token), Some(&body), &keyed("order-1")).await;
    assert_eq!(theirs.status, 201);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn idempotent_registration_registers_once() {
    let provider = spawn().await;
    let email = format!("{}@example.com", lizards_testkit::unique("idem"));
    let body = json!({"email": email, "password": crate::helpers::PASSWORD});
    let key = keyed("signup-1");
    let send = || provider.send(Method::POST, "/auth/register", None, Some(&body), &key);
    let (a, b) = tokio::join!(send(), send());
    assert_eq!((a.status, b.status), (201, 201), "{} / {}", a.body, b.body);
    assert_eq!(a.body["id"], b.body["id"]);
}
