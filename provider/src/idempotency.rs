//! `Idempotency-Key` on every mutating endpoint (the seed systems' at-most-once requests).
//!
//! Scope: the user of a valid bearer token, else the client's address; plus
//! method, path and key. The first request takes a lease on the scope in the
//! cache port (Redis when set, so it holds across provider instances), runs,
//! and stores its status and body for IDEMPOTENCY_TTL (24 h). A retry with
//! the same body gets the stored answer (`Idempotent-Replayed: true`)
//! without running again; with a different body, 422. A duplicate arriving
//! while the first still runs waits up to 10 s for its answer, then gets
//! 409. Answers of 5xx are not stored: the operation may not have happened,
//! so a retry runs it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use lizards_shared::{cache::Cache, jwt::Jwt, problem::Problem};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{accounts::rest::bearer, body::MAX_BODY, metrics::Metrics};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";
/// How long a duplicate waits for the first request's answer.
pub const WAIT: Duration = Duration::from_secs(10);
/// A request holding its key longer than this (a crashed instance) frees it.
const LOCK_TTL: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
/// Longest key accepted.
const MAX_KEY: usize = 255;
/// Largest answer kept for replay.
const MAX_ANSWER: usize = 1024 * 1024;

pub struct Idempotency {
    pub cache: Arc<dyn Cache>,
    pub jwt: Jwt,
    pub ttl: Duration,
    pub metrics: Metrics,
}

/// A stored answer.
#[derive(Serialize, Deserialize)]
struct Answer {
    /// SHA-256 of the request body, hex.
    body_hash: String,
    status: u16,
    content_type: Option<String>,
    body: String,
}

pub async fn guard(State(idempotency): State<Arc<Idempotency>>, request: Request, next: Next) -> Response {
    let mutating = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let Some(key) = request.headers().get(HEADER).filter(|_| mutating).cloned() else {
        return next.run(request).await;
    };
    let Some(key) = key.to_str().ok().filter(|k| valid_key(k)).map(str::to_string) else {
        return problem(StatusCode::BAD_REQUEST, "Idempotency-Key must be 1 to 255 visible ASCII characters");
    };
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return problem(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is larger than {} KiB", MAX_BODY / 1024));
    };
    let scope = format!("idempotency:{}:{}:{}:{key}", idempotency.scope(&parts), parts.method, parts.uri.path());
    let body_hash = hex(&Sha256::digest(&bytes));
    idempotency.run(scope, body_hash, Request::from_parts(parts, Body::from(bytes)), next).await
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn problem(status: StatusCode, detail: &str) -> Response {
    Problem::new(status, status.canonical_reason().unwrap_or("Error")).detail(detail).into_response()
}

impl Idempotency {
    /// The user of a valid token, else the client address (the first
    /// `X-Forwarded-For` hop behind the gateway).
    fn scope(&self, parts: &Parts) -> String {
        if let Some(claims) = bearer(&parts.headers).and_then(|t| self.jwt.verify(t).ok()) {
            return format!("user:{}", claims.sub);
        }
        format!("ip:{}", client_address(&parts.headers, parts.extensions.get::<ConnectInfo<SocketAddr>>()))
    }

    async fn run(&self, scope: String, body_hash: String, request: Request, next: Next) -> Response {
        let lock = format!("{scope}:lock");
        let owner = uuid::Uuid::new_v4().to_string();
        let started = tokio::time::Instant::now();
        loop {
            match self.stored(&scope, &body_hash).await {
                Ok(Some(response)) => return response,
                Ok(None) => {}
                Err(response) => return response,
            }
            match self.cache.lease(&lock, &owner, LOCK_TTL).await {
                Ok(true) => break,
                Ok(false) if started.elapsed() < WAIT => tokio::time::sleep(POLL).await,
                Ok(false) => {
                    self.metrics.idempotency.with_label_values(&["in_progress"]).inc();
                    return problem(StatusCode::CONFLICT, "a request with this Idempotency-Key is still in progress");
                }
                Err(error) => {
                    // Without the store, at-most-once cannot be promised: refuse.
                    tracing::warn!(%error, "idempotency store unavailable");
                    return problem(StatusCode::SERVICE_UNAVAILABLE, "idempotency keys are temporarily unavailable");
                }
            }
        }
        // The answer may have been stored between the look and the lease.
        if let Ok(Some(response)) = self.stored(&scope, &body_hash).await {
            let _ = self.cache.release(&lock, &owner).await;
            return response;
        }
        let response = next.run(request).await;
        self.metrics.idempotency.with_label_values(&["executed"]).inc();
        let response = self.keep(&scope, body_hash, response).await;
        if let Err(error) = self.cache.release(&lock, &owner).await {
            tracing::warn!(%error, "idempotency lock not released; it expires by itself");
        }
        response
    }

    /// The stored answer for this scope, or a 422 for another body.
    async fn stored(&self, scope: &str, body_hash: &str) -> Result<Option<Response>, Response> {
        let bytes = match self.cache.get(scope).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(%error, "idempotency store unavailable");
                return Err(problem(StatusCode::SERVICE_UNAVAILABLE, "idempotency keys are temporarily unavailable"));
            }
        };
        let Ok(answer) = serde_json::from_slice::<Answer>(&bytes) else { return Ok(None) };
        if answer.body_hash != body_hash {
            self.metrics.idempotency.with_label_values(&["mismatch"]).inc();
            return Err(problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used with a different body; use a new key",
            ));
        }
        self.metrics.idempotency.with_label_values(&["replayed"]).inc();
        let mut response = Response::new(Body::from(answer.body));
        *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        if let Some(content_type) = answer.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::CONTENT_TYPE, content_type);
        }
        response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
        Ok(Some(response))
    }

    /// Stores a final answer (not 5xx) and passes it on.
    async fn keep(&self, scope: &str, body_hash: String, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_ANSWER).await else {
            tracing::warn!("answer too large to keep for idempotent replay");
            return Response::from_parts(parts, Body::empty());
        };
        if !parts.status.is_server_error()
            && let Ok(text) = std::str::from_utf8(&bytes)
        {
            let answer = Answer {
                body_hash,
                status: parts.status.as_u16(),
                content_type: parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string),
                body: text.to_string(),
            };
            let stored = serde_json::to_vec(&answer).expect("answer serializes");
            if let Err(error) = self.cache.set(scope, Bytes::from(stored), Some(self.ttl)).await {
                tracing::warn!(%error, "answer not kept for idempotent replay");
            }
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// The client's address: the first `X-Forwarded-For` hop when a proxy set
/// one, else the peer.
pub fn client_address(headers: &HeaderMap, peer: Option<&ConnectInfo<SocketAddr>>) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64);
    match (forwarded, peer) {
        (Some(hop), _) => hop.to_string(),
        (None, Some(ConnectInfo(addr))) => addr.ip().to_string(),
        (None, None) => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("order-2024-09-14-001"));
        assert!(valid_key(&"k".repeat(255)));
        for bad in ["", "tab\there", "ключ", &"k".repeat(256)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_client_is_the_first_forwarded_hop_else_the_peer() {
        let peer = ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 5000)));
        let mut headers = HeaderMap::new();
        assert_eq!(client_address(&headers, Some(&peer)), "10.0.0.9");
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 10.0.0.1"));
        assert_eq!(client_address(&headers, Some(&peer)), "203.0.113.7");
    }
}
