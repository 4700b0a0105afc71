//! `GET /openapi.json` at the gateway: its own document merged with the
//! provider's, ingestion's and the registry's, keeping only the paths and
//! methods the gateway routes to each (docs/architecture.md, Gateway). Rebuilt at most every
//! 10 s; a service that cannot be asked is named in
//! `info.x-lizards-unavailable` and the document is not kept.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{Method, Request},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::{GatewayState, proxy::HttpClient, routes, upstream::Upstreams};

const FRESH: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(3);
const SERVICES: [&str; 3] = ["provider", "ingestion", "registry"];
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

pub struct Merger {
    own: Value,
    kept: Mutex<Option<(Instant, Value)>>,
}

impl Merger {
    pub fn new() -> Merger {
        let own = lizards_shared::openapi::document(include_str!("../openapi.json"));
        Merger { own, kept: Mutex::new(None) }
    }

    async fn document(&self, upstreams: &Upstreams, http: &HttpClient) -> Value {
        if let Some((at, document)) = self.kept.lock().expect("openapi lock").as_ref()
            && at.elapsed() < FRESH
        {
            return document.clone();
        }
        let mut document = self.own.clone();
        let mut unavailable = Vec::new();
        for service in SERVICES {
            match fetch(upstreams, http, service).await {
                Some(part) => include(&mut document, &part, service),
                None => unavailable.push(service),
            }
        }
        if unavailable.is_empty() {
            *self.kept.lock().expect("openapi lock") = Some((Instant::now(), document.clone()));
        } else {
            tracing::warn!(?unavailable, "OpenAPI documents missing from the merged one");
            document["info"]["x-lizards-unavailable"] = json!(unavailable);
        }
        document
    }
}

/// One instance's document of `service`.
async fn fetch(upstreams: &Upstreams, http: &HttpClient, service: &str) -> Option<Value> {
    let picked = upstreams.pick(service, &[]).await?;
    let uri = format!("http://{}/openapi.json", picked.authority);
    let request = Request::get(uri).body(Body::empty()).ok()?;
    let response = tokio::time::timeout(TIMEOUT, http.request(request)).await.ok()?.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect()).await.ok()?.ok()?;
    serde_json::from_slice(&body.to_bytes()).ok()
}

/// Adds `part`'s paths that the gateway routes to `service`, with only the
/// methods it routes, and its components.
fn include(document: &mut Value, part: &Value, service: &str) {
    for (path, item) in part["paths"].as_object().into_iter().flatten() {
        let Some(route) = routes::route_for(path).filter(|route| route.service == service) else { continue };
        let mut item = item.clone();
        if let (Some(allowed), Some(operations)) = (route.methods, item.as_object_mut()) {
            operations.retain(|key, _| {
                let method = key.to_ascii_uppercase().parse::<Method>();
                !METHODS.contains(&key.as_str()) || method.is_ok_and(|m| allowed.contains(&m))
            });
        }
        if item.as_object().is_some_and(|o| o.keys().any(|k| METHODS.contains(&k.as_str()))) {
            document["paths"][path] = item;
        }
    }
    for section in ["schemas", "securitySchemes"] {
        for (name, schema) in part["components"][section].as_object().into_iter().flatten() {
            if document["components"][section].get(name).is_none() {
                document["components"][section][name] = schema.clone();
            }
        }
    }
}

pub async fn merged(State(state): State<Arc<GatewayState>>) -> Json<Value> {
    Json(state.openapi.document(&state.upstreams, &state.http).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_routed_paths_and_methods_are_merged() {
        let registry = json!({
            "paths": {
                "/services": {"get": {"summary": "list"}},
                "/services/{service_id}": {"get": {"summary": "one"}, "post": {"summary": "register"}},
                "/services/{id}/{instance}": {"delete": {"summary": "deregister"}},
                "/slos": {"post": {"summary": "create"}},
                "/metrics": {"get": {}},
                "/quotes/{symbol}": {"get": {}}
            },
            "components": {"schemas": {"Slo": {"type": "object"}, "Problem": {"type": "string"}}}
        });
        let mut document = json!({"paths": {}, "components": {"schemas": {"Problem": {"type": "object"}}}});
        include(&mut document, &registry, "registry");
        let paths = document["paths"].as_object().unwrap();
        assert_eq!(paths.keys().collect::<Vec<_>>(), ["/services", "/services/{service_id}", "/slos"]);
        assert!(paths["/services/{service_id}"].get("post").is_none(), "writes go to the registry itself");
        assert_eq!(document["components"]["schemas"]["Slo"]["type"], "object");
        assert_eq!(document["components"]["schemas"]["Problem"]["type"], "object", "the first one is kept");
    }
}
