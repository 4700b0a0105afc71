//! The SLO manager over HTTP: CRUD with every bad input named and nothing
//! stored, writes guarded by the registry token, and status and violations
//! from evaluations of the registry's own metrics (scrape mode).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PROBLEM_JSON, TestRegistry, spawn_registry, spawn_registry_with};

fn slo(name: &str, comparison: &str, threshold: f64) -> Value {
    json!({
        "name": name,
        "metric": "lizards_registry_instances",
        "aggregation": "value",
        "comparison": comparison,
        "threshold": threshold,
        "window_minutes": 5,
    })
}

impl TestRegistry {
    async fn send(&self, method: Method, path: &str, body: Option<String>) -> reqwest::Response {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        request.send().await.expect("registry answers")
    }

    async fn create_slo(&self, body: &Value) -> Value {
        let response = self.send(Method::POST, "/slos", Some(body.to_string())).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    async fn slos(&self) -> Vec<Value> {
        let list: Value = self.get("/slos").await.json().await.unwrap();
        list["slos"].as_array().unwrap().clone()
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }
}

#[tokio::test]
async fn an_slo_is_created_read_replaced_and_deleted() {
    let registry = spawn_registry().await;
    let created = registry.create_slo(&slo("instances", ">", 0.0)).await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["name"], "instances");
    assert_eq!(created["labels"], json!({}));
    assert_eq!(registry.json(&format!("/slos/{id}")).await, created);
    assert_eq!(registry.slos().await, vec![created.clone()]);

    let mut changed = slo("instances up", "<", 100.0);
    changed["labels"] = json!({"status": "passing"});
    let replaced = registry.send(Method::PUT, &format!("/slos/{id}"), Some(changed.to_string())).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!((replaced["name"].clone(), replaced["comparison"].clone()), (json!("instances up"), json!("<")));
    assert_eq!(replaced["created_at"], created["created_at"]);

    assert_eq!(registry.send(Method::DELETE, &format!("/slos/{id}"), None).await.status(), StatusCode::NO_CONTENT);
    for path in [format!("/slos/{id}"), "/slos/abc".into(), format!("/slos/{id}/violations")] {
        let response = registry.get(&path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
    }
    assert_eq!(registry.send(Method::DELETE, &format!("/slos/{id}"), None).await.status(), StatusCode::NOT_FOUND);
    let missing = registry.send(Method::PUT, "/slos/999", Some(slo("x", "<", 1.0).to_string())).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    registry.stop().await;
}

#[tokio::test]
async fn bad_duplicate_and_oversized_slos_are_refused_and_nothing_is_stored() {
    let registry = spawn_registry().await;
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "body"),
        ("[1,2]".into(), "body"),
        (json!({"name": "x"}).to_string(), "metric"),
        (json!({"name": 7, "metric": "m", "aggregation": "value", "comparison": "<", "threshold": 1, "window_minutes": 5}).to_string(), "name"),
        (json!({"name": "x", "metric": "no spaces", "aggregation": "value", "comparison": "<", "threshold": 1, "window_minutes": 5}).to_string(), "metric"),
        (json!({"name": "x", "metric": "m", "aggregation": "p42", "comparison": "<", "threshold": 1, "window_minutes": 5}).to_string(), "aggregation"),
        (json!({"name": "x", "metric": "m", "aggregation": "value", "comparison": "<=", "threshold": 1, "window_minutes": 5}).to_string(), "comparison"),
        (json!({"name": "x", "metric": "m", "aggregation": "value", "comparison": "<", "threshold": "1", "window_minutes": 5}).to_string(), "threshold"),
        (json!({"name": "x", "metric": "m", "aggregation": "value", "comparison": "<", "threshold": 1, "window_minutes": 0}).to_string(), "window_minutes"),
        (json!({"name": "x", "metric": "m", "labels": {"bad-name": "v"}, "aggregation": "value", "comparison": "<", "threshold": 1, "window_minutes": 5}).to_string(), "labels"),
        (json!({"name": "x'; DROP TABLE slos; --", "metric": "m", "aggregation": "value", "comparison": "<", "threshold": 1, "window_minutes": 5, "role": "admin"}).to_string(), "role"),
        (format!("{{\"name\":\"{}\"}}", "x".repeat(100_000)), "body"),
    ];
    for (body, field) in cases {
        let response = registry.send(Method::POST, "/slos", Some(body.clone())).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{}", &body[..body.len().min(120)]);
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        let problem: Value = response.json().await.unwrap();
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{field} not named in {problem}");
    }
    assert!(registry.slos().await.is_empty(), "nothing stored");

    registry.create_slo(&slo("once", ">", 0.0)).await;
    let again = registry.send(Method::POST, "/slos", Some(slo("once", ">", 0.0).to_string())).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(registry.slos().await.len(), 1);

    let hours = registry.get("/slos/1/violations?hours=2").await;
    assert_eq!(hours.status(), StatusCode::BAD_REQUEST);
    registry.stop().await;
}

#[tokio::test]
async fn slo_writes_need_the_registry_token_when_one_is_set() {
    let registry = spawn_registry_with(|config| config.common.registry_token = Some("s3cret".into())).await;
    let body = slo("guarded", ">", 0.0).to_string();
    let anonymous = registry.http.post(registry.url("/slos")).body(body.clone()).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = registry.http.post(registry.url("/slos")).bearer_auth("nope").body(body).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(registry.slos().await.is_empty(), "reads stay public");
    let created = registry.create_slo(&slo("guarded", ">", 0.0)).await;
    let delete = registry.http.delete(registry.url(&format!("/slos/{}", created["id"]))).send().await.unwrap();
    assert_eq!(delete.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(registry.slos().await.len(), 1);
    registry.stop().await;
}

#[tokio::test]
async fn status_and_violations_follow_the_evaluations_of_scraped_metrics() {
    let registry = spawn_registry_with(|config| config.registry.slo_interval = Duration::from_millis(100)).await;
    // The registry registers itself: at least one instance.
    let met = registry.create_slo(&slo("some instance", ">", 0.0)).await;
    let violated = registry.create_slo(&slo("no instance", "<", 0.5)).await;

    let state_of = |status: &Value, id: &Value| {
        let entries = status["slos"].as_array().unwrap();
        entries.iter().find(|e| e["id"] == *id).map(|e| e["status"].clone())
    };
    lizards_testkit::eventually("both SLOs are evaluated", || async {
        let status = registry.json("/slos/status").await;
        state_of(&status, &met["id"]) == Some(json!("met"))
            && state_of(&status, &violated["id"]) == Some(json!("violated"))
    })
    .await;
    let status = registry.json("/slos/status").await;
    assert_eq!(status["status"], "violated", "one violated SLO violates the SLA");
    let entries = status["slos"].as_array().unwrap();
    let entry = |id: &Value| entries.iter().find(|e| e["id"] == *id).unwrap().clone();
    assert_eq!(entry(&met["id"])["status"], "met");
    assert!(entry(&met["id"])["value"].as_f64().unwrap() >= 1.0);
    assert!(entry(&met["id"])["compliance"].as_f64().unwrap() > 0.0);
    assert_eq!(entry(&violated["id"])["status"], "violated");

    let report = registry.json(&format!("/slos/{}/violations?hours=3", violated["id"])).await;
    assert_eq!((report["hours"].clone(), report["count"].clone()), (json!(3), json!(1)));
    assert_eq!(report["violations"][0]["ongoing"], true);
    assert!(report["violations"][0]["worst"].as_f64().unwrap() >= 1.0);
    // Before the registry's own registration was scraped, the met SLO may
    // have missed once; none of its violations is still going on.
    let none = registry.json(&format!("/slos/{}/violations", met["id"])).await;
    assert_eq!(none["hours"], 1);
    assert!(none["violations"].as_array().unwrap().iter().all(|v| v["ongoing"] == false), "{none}");

    // Fixing the objective ends the violation at the next evaluation.
    let fixed = slo("no instance", "<", 1000.0).to_string();
    registry.send(Method::PUT, &format!("/slos/{}", violated["id"]), Some(fixed)).await;
    let violations = format!("/slos/{}/violations", violated["id"]);
    lizards_testkit::eventually("the violation ends", || async {
        registry.json(&violations).await["violations"][0]["ongoing"] == false
    })
    .await;
    let report = registry.json(&violations).await;
    assert!(report["violations"][0]["end"].is_string(), "{report}");
    let metrics = registry.metrics().await;
    assert!(metrics.contains("lizards_slo_met{slo=\"some instance\",service=\"registry\"} 1"), "{metrics}");
    registry.stop().await;
}
