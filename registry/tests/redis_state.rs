//! Registry replicas sharing their state in Redis, over real
//! HTTP: what one registry accepts, another answers, and a restarted
//! registry still knows. Runs when `REDIS_URL` is set (always in CI).

use std::{sync::Arc, time::Duration};

use lizards_registry::store::RedisRegistryStore;
use lizards_shared::service::Serving;
use lizards_shared::{config::Config, shutdown::Shutdown};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn real_url() -> Option<String> {
    lizards_testkit::real_url("REDIS_URL")
}

/// One registry process on the shared Redis prefix.
struct Replica {
    base: String,
    http: reqwest::Client,
    shutdown: Shutdown,
    server: Serving,
    _data: tempfile::TempDir,
}

impl Replica {
    async fn start(url: &str, prefix: &str) -> Replica {
        let data = tempfile::tempdir().expect("temporary data dir");
        let store = RedisRegistryStore::connect(url, prefix).await.expect("Redis at REDIS_URL answers");
        let shutdown = Shutdown::new();
        let started =
            lizards_registry::build_with_store(Config::for_tests(data.path()), shutdown.clone(), Arc::new(store))
                .await
                .expect("registry starts");
        let (addr, server) = started.spawn();
        Replica { base: format!("http://{addr}"), http: lizards_shared::http::client(), shutdown, server, _data: data }
    }

    async fn register(&self, service_id: &str, body: &Value) -> String {
        let response = self.http.post(format!("{}/services/{service_id}", self.base)).json(body).send().await;
        let response = response.expect("POST reaches the registry");
        assert_eq!(response.status(), StatusCode::OK);
        let registered: Value = response.json().await.expect("JSON body");
        registered["instance_id"].as_str().expect("instance_id").to_string()
    }

    /// The service document, `None` on 404.
    async fn service(&self, service_id: &str) -> Option<Value> {
        let response = self.http.get(format!("{}/services/{service_id}", self.base)).send().await;
        let response = response.expect("GET reaches the registry");
        match response.status() {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => Some(response.json().await.expect("JSON body")),
            status => panic!("GET /services/{service_id} answered {status}"),
        }
    }

    async fn heartbeat(&self, service_id: &str, instance_id: &str) -> StatusCode {
        let url = format!("{}/services/{service_id}/{instance_id}/heartbeat", self.base);
        self.http.put(url).send().await.expect("PUT reaches the registry").status()
    }

    async fn deregister(&self, service_id: &str, instance_id: &str) -> StatusCode {
        let url = format!("{}/services/{service_id}/{instance_id}", self.base);
        self.http.delete(url).send().await.expect("DELETE reaches the registry").status()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("registry stops within 10 s")
            .expect("registry task does not panic")
            .expect("no worker failed");
    }
}

fn instance_ids(service: &Value) -> Vec<&str> {
    let instances = service["instances"].as_array().expect("instances");
    instances.iter().filter_map(|instance| instance["instance_id"].as_str()).collect()
}

#[tokio::test]
async fn registries_sharing_redis_agree_and_a_restarted_one_remembers() {
    let Some(url) = real_url() else { return };
    let prefix = format!("lizards-test.registry-http.{}", uuid::Uuid::new_v4().simple());
    let body = json!({"name": "Quotes", "ip_address": "10.0.1.7", "port_number": "8042", "protocol": "HTTP"});

    let one = Replica::start(&url, &prefix).await;
    let two = Replica::start(&url, &prefix).await;
    let instance_id = one.register("quotes", &body).await;
    let seen = two.service("quotes").await.expect("the other replica knows the service");
    assert_eq!(seen["service_name"], "Quotes");
    assert_eq!(instance_ids(&seen), [instance_id.as_str()]);
    assert_eq!(two.register("quotes", &body).await, instance_id, "same address, same instance, whichever replica");
    assert!(two.heartbeat("quotes", &instance_id).await.is_success());

    one.stop().await;
    let restarted = Replica::start(&url, &prefix).await;
    let remembered = restarted.service("quotes").await.expect("a restarted replica still knows the service");
    assert_eq!(remembered["registered_at"], seen["registered_at"]);
    assert_eq!(instance_ids(&remembered), [instance_id.as_str()]);

    assert_eq!(restarted.deregister("quotes", &instance_id).await, StatusCode::NO_CONTENT);
    assert_eq!(two.service("quotes").await, None, "deregistered through the other replica");
    two.stop().await;
    restarted.stop().await;
}
