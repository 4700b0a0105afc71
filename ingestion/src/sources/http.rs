//! The one HTTP path every web source shares: a deadline on the whole
//! exchange, a cap on the body, and the statuses that mean the same thing
//! for every API (429, 5xx) turned into [`SourceError`]s.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use reqwest::{StatusCode, header::RETRY_AFTER};

use super::{Request, Response, SourceError};

/// Largest body read from a source; real answers are a few KiB.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// Identifies Lizards to the sites it polls.
const USER_AGENT: &str = concat!("lizards/", env!("CARGO_PKG_VERSION"), " (+https://github.com/lizards)");

#[derive(Clone)]
pub struct HttpGet {
    client: reqwest::Client,
    timeout: Duration,
    max_body: usize,
}

impl HttpGet {
    pub fn new(timeout: Duration) -> HttpGet {
        lizards_shared::http::install_crypto();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("http client builds");
        HttpGet { client, timeout, max_body: MAX_BODY }
    }

    /// Sends `request` and reads the whole answer within the timeout.
    pub async fn send(&self, request: &Request) -> Result<Response, SourceError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(SourceError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, request: &Request) -> Result<Response, SourceError> {
        let mut builder = self.client.get(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let mut response = builder.send().await.map_err(network)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(SourceError::RateLimited { retry_after: retry_after(&response) });
        }
        if status.is_server_error() || status.is_redirection() || status.is_informational() {
            return Err(SourceError::Status(status.as_u16()));
        }
        if response.content_length().is_some_and(|length| length > self.max_body as u64) {
            return Err(SourceError::TooLarge(self.max_body));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(truncated)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(SourceError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status: status.as_u16(), body: Bytes::from(body), received_at: Utc::now() })
    }
}

/// The error without its URL: a source's query may carry an API key, and
/// error texts reach `/sources/status` and the logs.
fn network(error: reqwest::Error) -> SourceError {
    SourceError::Network(error.without_url().to_string())
}

/// The connection ended before the body did.
fn truncated(error: reqwest::Error) -> SourceError {
    SourceError::Truncated(error.without_url().to_string())
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let text = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}
