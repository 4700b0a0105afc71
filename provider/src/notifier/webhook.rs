//! Webhooks: the alert as JSON POSTed to the user's URL, signed with
//! HMAC-SHA256 of the exact body when the user set a secret. Only public
//! internet addresses are called (`public_url`), checked again at every
//! send. What the user sees of a failure is its kind (refused, timeout,
//! status 500), never network detail; the log keeps the whole error.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lizards_shared::accounts::Alert;
use reqwest::{StatusCode, Url, header::CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::Sha256;

use super::deliver::SendError;
use crate::{
    alerts::alert_json,
    public_url::{self, PublicResolver, UrlError},
};

pub const EVENT_HEADER: &str = "X-Lizards-Event";
pub const SIGNATURE_HEADER: &str = "X-Lizards-Signature";

/// A webhook to an address that is not on the public internet (or not a
/// usable http(s) URL).
const REFUSED: &str = "webhook: refused (the host is not a public internet address)";

pub struct Webhooks {
    http: reqwest::Client,
    allow_private: bool,
}

impl Webhooks {
    /// One POST, connection to answer, takes at most `timeout`.
    pub fn new(timeout: Duration, allow_private: bool) -> Webhooks {
        lizards_shared::http::install_crypto();
        let mut builder = reqwest::Client::builder();
        if !allow_private {
            // Names resolve to public addresses only, and the connection
            // goes to exactly those (no DNS rebinding after a check).
            builder = builder.dns_resolver(PublicResolver::default());
        }
        let http = builder
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // A redirected POST would become a GET elsewhere: the URL is wrong.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Lizards-Notifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("webhook client builds");
        Webhooks { http, allow_private }
    }

    pub async fn send(&self, url: &str, secret: Option<&str>, alert: &Alert) -> Result<(), SendError> {
        let parsed = Url::parse(url).map_err(|_| SendError::permanent("webhook: not a URL"))?;
        // The URL was checked when saved; the rules or the address may
        // have changed since. Names are checked by the resolver.
        if public_url::check_literal(&parsed, self.allow_private).is_err() {
            return Err(SendError::permanent(REFUSED));
        }
        let body = serde_json::to_vec(&body(alert)).expect("alert serializes");
        let mut request = self.http.post(url).header(CONTENT_TYPE, "application/json").header(EVENT_HEADER, "alert");
        if let Some(secret) = secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        let response = request.body(body).send().await.map_err(|error| {
            let user_facing = failure(&error);
            // The URL is the user's and may carry a token: the log leaves it out.
            tracing::warn!(alert = %alert.id, error = %describe(error), "webhook not delivered");
            user_facing
        })?;
        classify(response.status())
    }
}

/// What the user is told of a failed request: its kind only, since the
/// error text would map the network around the notifier (addresses,
/// resolver and TLS messages).
fn failure(error: &reqwest::Error) -> SendError {
    let refused = std::iter::successors(std::error::Error::source(error), |cause| cause.source())
        .any(|cause| cause.downcast_ref::<UrlError>().is_some());
    if refused {
        SendError::permanent(REFUSED)
    } else if error.is_timeout() {
        SendError::transient("webhook: timeout")
    } else if error.is_connect() {
        SendError::transient("webhook: connection failed")
    } else if error.is_builder() || error.is_redirect() {
        SendError::permanent("webhook: invalid request")
    } else {
        SendError::transient("webhook: request failed")
    }
}

/// A request error with its causes ("error sending request: ... connection
/// refused"), without the URL, which may carry a token.
pub(super) fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The JSON a webhook receives.
pub fn body(alert: &Alert) -> Value {
    let mut alert_value = alert_json(alert);
    // Delivery states are ours and change while we send.
    if let Some(fields) = alert_value.as_object_mut() {
        fields.remove("deliveries");
    }
    json!({ "type": "alert", "user_id": alert.user_id, "alert": alert_value })
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// 2xx is sent; 408, 429 and 5xx may pass later; other answers will not.
fn classify(status: StatusCode) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let error = format!("webhook: status {}", status.as_u16());
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
        Err(SendError::transient(error))
    } else {
        Err(SendError::permanent(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let signed = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(signed, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn only_timeouts_throttling_and_server_errors_are_retried() {
        for (status, permanent) in
            [(500, false), (503, false), (408, false), (429, false), (400, true), (404, true), (301, true)]
        {
            let error = classify(StatusCode::from_u16(status).unwrap()).unwrap_err();
            assert_eq!(error.permanent, permanent, "{status}");
        }
        assert!(classify(StatusCode::NO_CONTENT).is_ok());
    }
}
