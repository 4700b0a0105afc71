//! Accounts: registration, login, tokens, the user's own account
//! and the admin routes, with bad input of every kind.

use chrono::Utc;
use jsonwebtoken::{EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, JWT_SECRET, PASSWORD, spawn};

fn email() -> String {
    format!("{}@example.com", lizards_testkit::unique("acct"))
}

/// A token signed with `secret` for user `sub`, expiring at `exp`.
fn forge(secret: &str, sub: i64, role: &str, exp: i64) -> String {
    let claims = json!({"sub": sub.to_string(), "email": "x@example.com", "role": role, "iat": exp - 3600, "exp": exp});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("token")
}

#[tokio::test]
async fn register_login_and_read_the_own_account() {
    let provider = spawn().await;
    let email = email();
    let registered = provider.post_as("/auth/register", None, json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert_eq!(registered.body["email"], email.as_str());
    assert_eq!(registered.body["role"], "user");
    assert!(registered.body.get("password_hash").is_none(), "the hash never leaves the server");

    let login =
        provider.post_as("/auth/login", None, json!({"email": email.to_uppercase(), "password": PASSWORD})).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.body["token_type"], "Bearer");
    assert_eq!(login.body["expires_in"], 3600);
    let token = login.body["access_token"].as_str().unwrap();

    let me = provider.get_as("/users/me", Some(token)).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["id"], registered.body["id"]);
    assert_eq!(me.body["email"], email.as_str());
}

#[tokio::test]
async fn the_seed_sign_up_shape_creates_alert_rules() {
    let provider = spawn().await;
    provider.seed("AAPL", 150.0).await;
    let body = json!({"email": email(), "password": PASSWORD, "ticker": "aapl", "high_value": 200.0, "low_value": 100.0,
                      "telegram_chat_id": "123456"});
    let registered = provider.post_as("/auth/register", None, body).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let rules = registered.body["rules"].as_array().unwrap();
    let kinds: Vec<(&str, f64)> =
        rules.iter().map(|r| (r["kind"].as_str().unwrap(), r["threshold"].as_f64().unwrap())).collect();
    assert_eq!(kinds, [("above", 200.0), ("below", 100.0)]);
    assert!(rules.iter().all(|r| r["symbol"] == "AAPL"));
    // The chat is not linked as named: the bot links it when its owner
    // sends the code from it.
    assert_eq!(registered.body["notifications"]["telegram_chat_id"], Value::Null);
    let command = registered.body["telegram"]["command"].as_str().expect("a link command");
    assert!(command.starts_with("/start "), "{command}");

    let unknown = provider
        .post_as(
            "/auth/register",
            None,
            json!({"email": email(), "password": PASSWORD, "ticker": "XYZ123", "high_value": 1.0}),
        )
        .await;
    assert_eq!(unknown.status, 422, "{}", unknown.body);
    assert!(unknown.detail().contains("Invalid stock symbol: XYZ123"), "{}", unknown.body);
}

#[tokio::test]
async fn a_taken_email_is_a_conflict_and_register_delete_register_works() {
    let provider = spawn().await;
    let user = provider.user().await;
    let again = provider.post_as("/auth/register", None, json!({"email": user.email, "password": PASSWORD})).await;
    assert_eq!(again.status, 409, "{}", again.body);

    let deleted = provider.send(Method::DELETE, "/users/me", Some(&user.token), None, &[]).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        provider.get_as("/users/me", Some(&user.token)).await.status,
        401,
        "a deleted account's token stops working"
    );
    let anew = provider.post_as("/auth/register", None, json!({"email": user.email, "password": PASSWORD})).await;
    assert_eq!(anew.status, 201, "{}", anew.body);
    assert_ne!(anew.body["id"], json!(user.id));
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_get_the_same_401() {
    let provider = spawn().await;
    let user = provider.user().await;
    let wrong =
        provider.post_as("/auth/login", None, json!({"email": user.email, "password": "not-the-password"})).await;
    let unknown = provider.post_as("/auth/login", None, json!({"email": email(), "password": PASSWORD})).await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert_eq!(wrong.detail(), unknown.detail(), "no hint whether the account exists");
}

#[tokio::test]
async fn missing_tampered_expired_and_foreign_tokens_are_401() {
    let provider = spawn().await;
    let user = provider.user().await;
    assert_eq!(provider.get_as("/users/me", None).await.status, 401);
    let answer = provider.get_as("/users/me", Some("not-a-jwt")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers.get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(answer.headers.get("content-type").unwrap(), "application/problem+json");

    // Flip one character of the signature.
    let mut tampered = user.token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(provider.get_as("/users/me", Some(&tampered)).await.status, 401);
    // A payload edited to another role keeps the old signature.
    let parts: Vec<&str> = user.token.split('.').collect();
    let payload = base64_url(&format!(
        r#"{{"sub":"{}","email":"x@example.com","role":"admin","iat":0,"exp":9999999999}}"#,
        user.id
    ));
    let edited = format!("{}.{payload}.{}", parts[0], parts[2]);
    assert_eq!(provider.get_as("/users/me", Some(&edited)).await.status, 401);

    let expired = forge(JWT_SECRET, user.id, "user", Utc::now().timestamp() - 60);
    let answer = provider.get_as("/users/me", Some(&expired)).await;
    assert_eq!(answer.status, 401);
    assert!(answer.detail().contains("expired"), "{}", answer.body);
    let other_secret = forge("another-secret", user.id, "user", Utc::now().timestamp() + 600);
    assert_eq!(provider.get_as("/users/me", Some(&other_secret)).await.status, 401);
    let valid = forge(JWT_SECRET, user.id, "user", Utc::now().timestamp() + 600);
    assert_eq!(provider.get_as("/users/me", Some(&valid)).await.status, 200, "the forging itself is right");
}

fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn users_change_their_account_but_not_their_role() {
    let provider = spawn().await;
    let user = provider.user().await;
    let changes = json!({"min_notification_interval": 60, "webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "s3cret",
                         "email_notifications": false});
    let answer = provider.send(Method::PATCH, "/users/me", Some(&user.token), Some(&changes), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["min_notification_interval"], 60);
    assert_eq!(answer.body["notifications"]["webhook_url"], "http://127.0.0.1:9/hook");
    assert_eq!(answer.body["notifications"]["webhook_signed"], true);
    assert_eq!(answer.body["notifications"]["email"], false);

    let cleared =
        provider.send(Method::PATCH, "/users/me", Some(&user.token), Some(&json!({"webhook_url": null})), &[]).await;
    assert_eq!(cleared.body["notifications"]["webhook_url"], Value::Null);

    let promote =
        provider.send(Method::PATCH, "/users/me", Some(&user.token), Some(&json!({"role": "admin"})), &[]).await;
    assert_eq!(promote.status, 403);

    let patch =
        async |body: Value| provider.send(Method::PATCH, "/users/me", Some(&user.token), Some(&body), &[]).await;
    let unconfirmed = patch(json!({"password": "another-password"})).await;
    assert_eq!(unconfirmed.status, 422, "{}", unconfirmed.body);
    assert_eq!(patch(json!({"email": email(), "current_password": "wrong-password"})).await.status, 403);
    let changed = patch(json!({"password": "another-password", "current_password": PASSWORD})).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let stale = provider.get_as("/users/me", Some(&user.token)).await;
    assert_eq!(stale.status, 401, "tokens from before the change are revoked");
    assert!(stale.body["detail"].as_str().unwrap().contains("revoked"), "{}", stale.body);
    provider.login(&user.email, "another-password").await;
}

#[tokio::test]
async fn admins_manage_users_and_read_every_table_and_users_cannot() {
    let provider = spawn().await;
    let admin = provider.admin().await;
    let user = provider.user().await;
    for path in ["/admin/users", "/admin/rules", "/admin/alerts", "/admin/orders", "/admin/symbols", "/admin/quotes"] {
        assert_eq!(provider.get_as(path, Some(&admin)).await.status, 200, "{path}");
        assert_eq!(provider.get_as(path, Some(&user.token)).await.status, 403, "{path}");
        assert_eq!(provider.get_as(path, None).await.status, 401, "{path}");
    }
    let users = provider.get_as("/admin/users", Some(&admin)).await;
    let emails: Vec<&str> =
        users.body["users"].as_array().unwrap().iter().filter_map(|u| u["email"].as_str()).collect();
    assert!(emails.contains(&ADMIN_EMAIL) && emails.contains(&user.email.as_str()));

    let created = provider
        .post_as("/admin/users", Some(&admin), json!({"email": email(), "password": PASSWORD, "role": "admin"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["role"], "admin");
    let path = format!("/admin/users/{}", user.id);
    let promoted = provider.send(Method::PATCH, &path, Some(&admin), Some(&json!({"role": "admin"})), &[]).await;
    assert_eq!(promoted.body["role"], "admin");
    assert_eq!(provider.get_as("/admin/users", Some(&user.token)).await.status, 401, "a role change revokes tokens");
    let token = provider.login(&user.email, PASSWORD).await;
    assert_eq!(provider.get_as("/admin/users", Some(&token)).await.status, 200, "a new login has the new role");
    assert_eq!(provider.send(Method::DELETE, &path, Some(&admin), None, &[]).await.status, 204);
    assert_eq!(provider.send(Method::DELETE, &path, Some(&admin), None, &[]).await.status, 404);
    assert_eq!(provider.send(Method::DELETE, "/admin/users/abc", Some(&admin), None, &[]).await.status, 404);
}

/// Every way a registration can be malformed is a clear 4xx and stores
/// nothing.
#[tokio::test]
async fn bad_registrations_are_refused_and_store_nothing() {
    let provider = spawn().await;
    let admin = provider.admin().await;
    let before = provider.get_as("/admin/users", Some(&admin)).await.body["users"].as_array().unwrap().len();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"email": "not-an-email", "password": PASSWORD}), 422, "email"),
        (json!({"email": email(), "password": "short"}), 422, "password"),
        (json!({"email": email(), "password": "x".repeat(129)}), 422, "password"),
        (json!({"email": email()}), 422, "password"),
        (json!({"email": 42, "password": PASSWORD}), 422, "email"),
        (json!({"email": email(), "password": PASSWORD, "high_value": 5}), 422, "ticker"),
        (json!({"email": email(), "password": PASSWORD, "ticker": "AAPL", "high_value": "lots"}), 422, "high_value"),
        (json!({"email": email(), "password": PASSWORD, "webhook_url": "ftp://x"}), 422, "webhook_url"),
        (json!({"email": email(), "password": PASSWORD, "telegram_chat_id": "abc"}), 422, "telegram_chat_id"),
        (json!(["email", "password"]), 422, ""),
    ];
    for (body, status, field) in cases {
        let answer = provider.post_as("/auth/register", None, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.detail().contains(field), "{body}: {}", answer.body);
    }
    let raw = |body: &'static str, content_type: &'static str| {
        provider.http.post(provider.url("/auth/register")).header("content-type", content_type).body(body).send()
    };
    assert_eq!(raw("{\"email\":", "application/json").await.unwrap().status(), 400, "malformed JSON");
    assert_eq!(raw("", "application/json").await.unwrap().status(), 400, "empty body");
    assert_eq!(raw("email=a", "application/x-www-form-urlencoded").await.unwrap().status(), 415);
    let huge = format!("{{\"email\":\"{}\",\"password\":\"{PASSWORD}\"}}", "a".repeat(1024 * 1024));
    let answer = provider
        .http
        .post(provider.url("/auth/register"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let after = provider.get_as("/admin/users", Some(&admin)).await.body["users"].as_array().unwrap().len();
    assert_eq!(after, before, "nothing stored");
}

/// SQL metacharacters are data: stored and read back verbatim, nothing else
/// touched.
#[tokio::test]
async fn sql_metacharacters_in_every_string_field_are_just_text() {
    let provider = spawn().await;
    let email = format!("o'brien+{}\"--@example.com", lizards_testkit::unique("x").replace('.', ""));
    let password = "p'); DROP TABLE users; --";
    let hook = "http://127.0.0.1:9/h?q=';DELETE FROM alert_rules;--";
    let body = json!({"email": email, "password": password, "webhook_url": hook, "webhook_secret": "'; --"});
    let registered = provider.post_as("/auth/register", None, body).await;
    assert_eq!(registered.status, 201, "{}", registered.body);
    let token = provider.login(&email, password).await;
    let me = provider.get_as("/users/me", Some(&token)).await;
    assert_eq!(me.body["email"], email.to_lowercase());
    assert!(me.body["notifications"]["webhook_url"].as_str().unwrap().contains("DELETE"));
    let injected =
        provider.post_as("/auth/login", None, json!({"email": "' OR '1'='1", "password": "' OR '1'='1"})).await;
    assert_eq!(injected.status, 401);
    let admin = provider.admin().await;
    assert!(provider.get_as("/admin/users", Some(&admin)).await.body["users"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn admins_delete_quotes_older_than_a_number_of_seconds() {
    let provider = spawn().await;
    let admin = provider.admin().await;
    let user = provider.user().await;
    let mut old = crate::helpers::quote("OLDQ", 5.0);
    old.ts -= chrono::Duration::hours(2);
    provider.publish(&old).await;
    let fresh = provider.seed("OLDQ", 6.0).await;
    let path = "/admin/quotes?older_than=3600";
    assert_eq!(provider.send(Method::DELETE, path, Some(&user.token), None, &[]).await.status, 403);
    assert_eq!(provider.send(Method::DELETE, path, None, None, &[]).await.status, 401);
    for bad in
        ["/admin/quotes", "/admin/quotes?older_than=0", "/admin/quotes?older_than=-5", "/admin/quotes?older_than=x';--"]
    {
        assert_eq!(provider.send(Method::DELETE, bad, Some(&admin), None, &[]).await.status, 422, "{bad}");
    }
    let answer = provider.send(Method::DELETE, path, Some(&admin), None, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["deleted"], 1);
    let history = provider.get_as("/quotes/OLDQ/history", None).await;
    assert_eq!(history.body["count"], 1);
    assert_eq!(history.body["quotes"][0]["price"], fresh.price);
    assert_eq!(provider.metric_where("lizards_retention_deleted_total", "reason=\"old\"").await, 1.0);
}

#[tokio::test]
async fn users_tracked_and_referenced_symbols_are_gauges() {
    let provider = spawn().await;
    let user = provider.user().await;
    provider.user().await;
    provider.seed("IBM", 10.0).await;
    provider.seed("ORCL", 20.0).await;
    let rule = json!({"symbol": "IBM", "kind": "above", "threshold": 11});
    assert_eq!(provider.post_as("/alerts/rules", Some(&user.token), rule).await.status, 201);
    crate::helpers::wait_for(|| async {
        provider.metric_where("lizards_users", "role=\"user\"").await == 2.0
            && provider.metric_where("lizards_users", "role=\"admin\"").await == 1.0
            && provider.metric("lizards_tracked_symbols").await == 2.0
            && provider.metric("lizards_symbols_referenced").await == 1.0
    })
    .await;
}
