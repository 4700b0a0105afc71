use std::time::Duration;

use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::helpers::{PROBLEM_JSON, eventually, seed_body, spawn_registry_with};

const TOKEN: &str = "s3cret";

#[tokio::test]
async fn writes_require_token_when_configured() {
    let registry = spawn_registry_with(|config| config.common.registry_token = Some(TOKEN.to_string())).await;
    let http = &registry.http;
    let register = || http.post(registry.url("/services/service-a")).json(&seed_body());

    let anonymous = register().send().await.expect("POST");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers().get(header::CONTENT_TYPE).expect("content type"), PROBLEM_JSON);
    assert_eq!(anonymous.headers().get(header::WWW_AUTHENTICATE).expect("challenge"), "Bearer");
    let wrong = register().bearer_auth("guess").send().await.expect("POST");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(registry.service("service-a").await.is_none(), "GETs are public; nothing was stored");

    let accepted = register().bearer_auth(TOKEN).send().await.expect("POST");
    assert_eq!(accepted.status(), StatusCode::OK);
    let instance_id = accepted.json::<Value>().await.expect("JSON")["instance_id"].as_str().expect("id").to_string();

    let heartbeat = registry.url(&format!("/services/service-a/{instance_id}/heartbeat"));
    assert_eq!(http.put(&heartbeat).send().await.expect("PUT").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(http.put(&heartbeat).bearer_auth(TOKEN).send().await.expect("PUT").status(), StatusCode::OK);

    let instance = registry.url(&format!("/services/service-a/{instance_id}"));
    assert_eq!(http.delete(&instance).send().await.expect("DELETE").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        http.delete(&instance).bearer_auth(TOKEN).send().await.expect("DELETE").status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn registry_registers_itself_with_the_configured_token() {
    let registry = spawn_registry_with(|config| config.common.registry_token = Some(TOKEN.to_string())).await;

    eventually("the registry lists itself", Duration::from_secs(5), || async {
        registry.service("registry").await.is_some()
    })
    .await;
}
