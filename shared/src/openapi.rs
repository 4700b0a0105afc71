//! OpenAPI 3.1 documents: each service's own (`openapi.json` in its crate,
//! embedded), completed with the operational endpoints every service has,
//! and served at `/openapi.json`. The gateway merges the ones it routes to.

use axum::{Router, body::Bytes, http::header, routing::get};
use serde_json::Value;

/// `/healthz`, `/readyz`, `/metrics` and `/openapi.json`.
const OPS: &str = include_str!("../openapi-ops.json");

/// A service's document (embedded JSON) with the operational paths added.
pub fn document(own: &str) -> Value {
    let mut document: Value = serde_json::from_str(own).expect("an embedded OpenAPI document is JSON");
    let ops: Value = serde_json::from_str(OPS).expect("the operational paths are JSON");
    for (path, item) in ops.as_object().expect("paths object") {
        document["paths"][path] = item.clone();
    }
    document
}

/// `GET /openapi.json`, serialized once.
pub fn routes(document: &Value) -> Router {
    let body = Bytes::from(serde_json::to_vec(document).expect("a document serializes"));
    Router::new().route(
        "/openapi.json",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_gains_the_operational_paths() {
        let document = document(r#"{"openapi":"3.1.0","info":{"title":"t","version":"1"},"paths":{"/x":{}}}"#);
        let paths = document["paths"].as_object().unwrap();
        for path in ["/x", "/healthz", "/readyz", "/metrics", "/openapi.json"] {
            assert!(paths.contains_key(path), "{path}");
        }
    }
}
