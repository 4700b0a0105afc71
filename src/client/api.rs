//! The gateway's public API as the terminal client calls it: JSON over
//! HTTP, the saved bearer token, and every failure turned into a sentence
//! that says what to do next.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::credentials::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach Lizards at {url} ({reason}); is it running? `cargo run --release` starts it")]
    Unreachable { url: String, reason: String },
    #[error("not signed in to {0}: run `lizards client login` (or `register`) first")]
    NotSignedIn(String),
    #[error("your sign-in has expired or was revoked: run `lizards client login` again")]
    Expired,
    #[error("too many requests: try again in {0} s")]
    RateLimited(String),
    /// The server's RFC 9457 problem: status, then title, detail and each
    /// named field.
    #[error("{status}: {message}")]
    Server { status: StatusCode, message: String },
    #[error("unexpected answer from {path}: {reason}")]
    Unexpected { path: String, reason: String },
    #[error("cannot keep the sign-in in {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("{0}")]
    Input(String),
}

/// A client of one Lizards gateway, signed in or not.
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    pub credentials: Option<Credentials>,
}

impl Api {
    pub fn new(base: &str, credentials: Option<Credentials>) -> Api {
        let base = base.trim_end_matches('/').to_string();
        // A token saved for another server is no good here.
        let credentials = credentials.filter(|c| c.url == base);
        Api { base, http: lizards_shared::http::client(), credentials }
    }

    pub fn token(&self) -> Result<&str, ClientError> {
        match &self.credentials {
            Some(credentials) => Ok(&credentials.access_token),
            None => Err(ClientError::NotSignedIn(self.base.clone())),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None, false).await
    }

    /// A GET that needs the user's token.
    pub async fn get_mine(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None, true).await
    }

    pub async fn post(&self, path: &str, body: Value, signed_in: bool) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body), signed_in).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::DELETE, path, None, true).await
    }

    /// `POST /session`, bound to the user when signed in: the WebSocket URL.
    pub async fn session(&self) -> Result<String, ClientError> {
        let session = self.call(Method::POST, "/session", None, self.credentials.is_some()).await?;
        match session["websocket_url"].as_str() {
            Some(url) => Ok(url.to_string()),
            None => Err(unexpected("/session", "no websocket_url")),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        signed_in: bool,
    ) -> Result<Value, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if signed_in {
            request = request.bearer_auth(self.token()?);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|error| ClientError::Unreachable { url: self.base.clone(), reason: root_cause(&error) })?;
        let status = response.status();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.text().await.map_err(|e| unexpected(path, &e.to_string()))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return Ok(json.unwrap_or(Value::Null));
        }
        Err(match status {
            StatusCode::UNAUTHORIZED if signed_in => ClientError::Expired,
            StatusCode::TOO_MANY_REQUESTS => ClientError::RateLimited(retry_after.unwrap_or_else(|| "a few".into())),
            _ => ClientError::Server { status, message: problem_message(json.as_ref(), &text) },
        })
    }
}

fn unexpected(path: &str, reason: &str) -> ClientError {
    ClientError::Unexpected { path: path.to_string(), reason: reason.to_string() }
}

/// "must be at least 8 characters" rather than "error sending request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A problem document in one line: its detail (or title), then each named
/// field's message not already in it.
fn problem_message(problem: Option<&Value>, text: &str) -> String {
    let Some(problem) = problem.filter(|p| p.is_object()) else {
        return if text.trim().is_empty() { "no details given".into() } else { text.trim().to_string() };
    };
    let mut parts: Vec<String> = Vec::new();
    if let Some(first) = problem["detail"].as_str().or(problem["title"].as_str()) {
        parts.push(first.to_string());
    }
    for error in problem["errors"].as_array().into_iter().flatten() {
        let message = error["message"].as_str().unwrap_or_default();
        let part = match error["field"].as_str() {
            Some(field) => format!("{field}: {message}"),
            None => message.to_string(),
        };
        // The detail often names the field already ("'quantity': must be ...").
        let said = |p: &String| p.contains(message) && error["field"].as_str().is_none_or(|f| p.contains(f));
        if !parts.iter().any(said) {
            parts.push(part);
        }
    }
    parts.join("; ")
}
