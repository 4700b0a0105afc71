//! Sessions (`POST /session`): a session keeps its subscriptions in the cache
//! port, so a reconnecting client (to any provider instance) resumes them.
//! It expires `SESSION_TTL` after its last connection closed.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use chrono::Utc;
use lizards_shared::{
    Symbol,
    accounts::UserId,
    cache::{Cache, CacheError},
    problem::Problem,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    accounts::{Accounts, rest::bearer},
    metrics::Metrics,
};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SessionState {
    pub symbols: Vec<Symbol>,
    /// The user a bearer token bound the session to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
}

pub struct Sessions {
    cache: Arc<dyn Cache>,
    ttl: Duration,
}

fn key(id: &str) -> String {
    format!("session:{id}")
}

impl Sessions {
    pub fn new(cache: Arc<dyn Cache>, ttl: Duration) -> Sessions {
        Sessions { cache, ttl }
    }

    pub async fn create(&self, user: Option<UserId>) -> Result<String, CacheError> {
        let id = uuid::Uuid::new_v4().to_string();
        self.save(&id, Vec::new(), user).await?;
        Ok(id)
    }

    pub async fn load(&self, id: &str) -> Result<Option<SessionState>, CacheError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let Some(bytes) = self.cache.get(&key(id)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Saves the subscriptions and restarts the expiry clock.
    pub async fn save(&self, id: &str, mut symbols: Vec<Symbol>, user: Option<UserId>) -> Result<(), CacheError> {
        symbols.sort();
        let state = SessionState { symbols, user };
        let bytes = Bytes::from(serde_json::to_vec(&state).expect("session serializes"));
        self.cache.set(&key(id), bytes, Some(self.ttl)).await
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[derive(Clone)]
pub struct SessionApi {
    pub sessions: Arc<Sessions>,
    pub accounts: Arc<Accounts>,
    pub metrics: Metrics,
}

/// `POST /session`: any body (e.g. the seed's `{"websocket_url": ...}`) is
/// ignored; a bearer token binds the session to its user (401 when the
/// token is invalid). The URL's host is the one the client used (through
/// the gateway, the gateway's).
pub async fn create(State(api): State<SessionApi>, headers: HeaderMap) -> Response {
    let Some((scheme, host)) = public_origin(&headers) else {
        return Problem::bad_request("missing or invalid Host header").into_response();
    };
    let user = match bearer(&headers) {
        Some(token) => match api.accounts.authenticate(token).await {
            Ok(user) => Some(user.id),
            Err(error) => return error.into_response(),
        },
        None => None,
    };
    let id = match api.sessions.create(user).await {
        Ok(id) => id,
        Err(error) => return Problem::unavailable(error.to_string()).into_response(),
    };
    api.metrics.sessions_created.inc();
    let expires_at = Utc::now() + api.sessions.ttl();
    Json(json!({
        "websocket_url": format!("{scheme}://{host}/ws?session={id}"),
        "session_id": id,
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

/// `(ws|wss, host)` from `X-Forwarded-*` or `Host`.
fn public_origin(headers: &HeaderMap) -> Option<(&'static str, String)> {
    let first = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.split(',').next()).map(|v| v.trim().to_string())
    };
    let host = first("x-forwarded-host").or_else(|| first("host"))?;
    let valid = !host.is_empty()
        && host.len() <= 255
        && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c));
    if !valid {
        return None;
    }
    let scheme = match first("x-forwarded-proto").as_deref() {
        Some("https") | Some("wss") => "wss",
        _ => "ws",
    };
    Some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_prefers_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("provider:7890"));
        assert_eq!(public_origin(&headers), Some(("ws", "provider:7890".to_string())));
        headers.insert("x-forwarded-host", HeaderValue::from_static("example.com, proxy"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(public_origin(&headers), Some(("wss", "example.com".to_string())));
        headers.insert("x-forwarded-host", HeaderValue::from_static("evil\"host"));
        assert_eq!(public_origin(&headers), None);
    }
}
