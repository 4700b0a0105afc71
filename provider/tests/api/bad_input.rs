//! Bad input on every mutating JSON endpoint (issue 7): malformed JSON,
//! wrong types, a 1 MB body, the wrong content type, no token, another
//! user's token and SQL metacharacters in every string field each get a
//! clear 4xx problem, and nothing the user or the admin can read changes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestProvider, TestUser, spawn};

/// One mutating endpoint and a body it would accept.
struct Endpoint {
    method: Method,
    path: String,
    /// `None`: anonymous; `Some(false)`: any user; `Some(true)`: admins only.
    admin: Option<bool>,
    valid: Value,
}

fn endpoint(method: Method, path: impl Into<String>, admin: Option<bool>, valid: Value) -> Endpoint {
    Endpoint { method, path: path.into(), admin, valid }
}

const INJECTION: &str = "x'; DROP TABLE users; --";

/// Everything a user and the admin can read, to compare before and after.
async fn everything(provider: &TestProvider, user: &TestUser, admin: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in ["/users/me", "/alerts/rules", "/alerts", "/portfolio", "/portfolio/orders"] {
        let answer = provider.get_as(path, Some(&user.token)).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        seen.push(answer.body);
    }
    for path in ["/admin/users", "/admin/rules", "/admin/orders"] {
        let answer = provider.get_as(path, Some(admin)).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        seen.push(answer.body);
    }
    seen
}

/// Sends raw bytes with a content type and an optional token.
async fn raw(
    provider: &TestProvider,
    endpoint: &Endpoint,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> crate::helpers::Answer {
    let mut request = provider
        .http
        .request(endpoint.method.clone(), provider.url(&endpoint.path))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    crate::helpers::Answer::read(request.send().await.expect("request sent")).await
}

fn assert_problem(answer: &crate::helpers::Answer, status: u16, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(content_type, "application/problem+json", "{what}");
    assert!(!answer.detail().is_empty(), "{what}: the problem says what is wrong");
}

/// Replaces every string in `value` (also inside arrays) with `text`.
fn every_string(value: &Value, text: &str) -> Value {
    match value {
        Value::String(_) => Value::String(text.into()),
        Value::Array(items) => Value::Array(items.iter().map(|v| every_string(v, text)).collect()),
        Value::Object(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), every_string(v, text))).collect())
        }
        other => other.clone(),
    }
}

#[tokio::test]
async fn every_mutating_endpoint_refuses_bad_bodies_and_tokens_and_changes_nothing() {
    let provider = spawn().await;
    let admin = provider.admin().await;
    let user = provider.user().await;
    let stranger = provider.user().await;
    provider.seed("AAPL", 100.0).await;
    let rule = provider
        .post_as("/alerts/rules", Some(&user.token), json!({"symbol": "AAPL", "kind": "above", "threshold": 150}))
        .await;
    assert_eq!(rule.status, 201, "{}", rule.body);
    let rule_path = format!("/alerts/rules/{}", rule.body["id"]);
    let user_path = format!("/admin/users/{}", user.id);

    let endpoints = [
        endpoint(Method::POST, "/auth/register", None, json!({"email": "new@example.com", "password": "password-1"})),
        endpoint(Method::POST, "/auth/login", None, json!({"email": user.email, "password": "password-1"})),
        endpoint(Method::PATCH, "/users/me", Some(false), json!({"webhook_url": "http://127.0.0.1:9/hook"})),
        endpoint(
            Method::POST,
            "/alerts/rules",
            Some(false),
            json!({"symbol": "AAPL", "kind": "below", "threshold": 1}),
        ),
        endpoint(Method::PATCH, rule_path.clone(), Some(false), json!({"threshold": 160, "channels": ["ws"]})),
        endpoint(Method::POST, "/portfolio/deposit", Some(false), json!({"amount": "100.50"})),
        endpoint(
            Method::POST,
            "/portfolio/orders",
            Some(false),
            json!({"symbol": "AAPL", "side": "buy", "quantity": 1}),
        ),
        endpoint(
            Method::POST,
            "/admin/users",
            Some(true),
            json!({"email": "made@example.com", "password": "password-1"}),
        ),
        endpoint(Method::PATCH, user_path.clone(), Some(true), json!({"role": "admin"})),
    ];
    let before = everything(&provider, &user, &admin).await;

    for endpoint in &endpoints {
        let token = match endpoint.admin {
            None => None,
            Some(false) => Some(user.token.as_str()),
            Some(true) => Some(admin.as_str()),
        };
        let what = |case: &str| format!("{} {} ({case})", endpoint.method, endpoint.path);
        let json = "application/json";
        assert_problem(&raw(&provider, endpoint, token, json, b"{\"email\":".to_vec()).await, 400, &what("malformed"));
        assert_problem(&raw(&provider, endpoint, token, json, b"[1, 2]".to_vec()).await, 422, &what("an array"));
        assert_problem(&raw(&provider, endpoint, token, json, b"\"text\"".to_vec()).await, 422, &what("a string"));
        let huge = format!("{{\"email\":\"{}\"}}", "a".repeat(1024 * 1024)).into_bytes();
        assert_problem(&raw(&provider, endpoint, token, json, huge).await, 413, &what("1 MB"));
        let form = b"email=a&password=b".to_vec();
        assert_problem(
            &raw(&provider, endpoint, token, "application/x-www-form-urlencoded", form).await,
            415,
            &what("form"),
        );
        // Every field with a value of the wrong type.
        for (field, value) in endpoint.valid.as_object().unwrap() {
            let wrong = if value.is_string() { json!({"nested": true}) } else { json!("not a number") };
            let mut body = endpoint.valid.clone();
            body[field] = wrong;
            let answer = provider.send(endpoint.method.clone(), &endpoint.path, token, Some(&body), &[]).await;
            assert_problem(&answer, 422, &what(&format!("{field} ill-typed")));
            assert!(answer.detail().contains(field.as_str()), "{}: {}", what(field), answer.body);
        }
        if endpoint.admin.is_some() {
            let answer = raw(&provider, endpoint, None, json, endpoint.valid.to_string().into_bytes()).await;
            assert_problem(&answer, 401, &what("no token"));
        }
        if endpoint.admin == Some(true) {
            let answer =
                raw(&provider, endpoint, Some(&user.token), json, endpoint.valid.to_string().into_bytes()).await;
            assert_problem(&answer, 403, &what("not an admin"));
        }
    }
    // Another user's rule is not there for them.
    let theirs =
        provider.send(Method::PATCH, &rule_path, Some(&stranger.token), Some(&json!({"threshold": 1})), &[]).await;
    assert_problem(&theirs, 404, "PATCH another user's rule");
    let theirs = provider.send(Method::DELETE, &rule_path, Some(&stranger.token), None, &[]).await;
    assert_problem(&theirs, 404, "DELETE another user's rule");

    // SQL metacharacters in every string field are refused as invalid or
    // taken as text; either way no table is touched.
    for endpoint in endpoints.iter().filter(|e| !e.path.starts_with("/admin") && e.method != Method::PATCH) {
        let token = endpoint.admin.map(|_| user.token.as_str());
        let body = every_string(&endpoint.valid, INJECTION);
        let answer = provider.send(endpoint.method.clone(), &endpoint.path, token, Some(&body), &[]).await;
        assert!((400..500).contains(&answer.status), "{} {}: {}", endpoint.method, endpoint.path, answer.body);
    }
    let after = everything(&provider, &user, &admin).await;
    assert_eq!(before, after, "nothing changed");
}
