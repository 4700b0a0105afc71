//! Webhooks: the alert as JSON POSTed to the user's URL, signed with
//! HMAC-SHA256 of the exact body when the user set a secret.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lizards_shared::accounts::Alert;
use reqwest::{StatusCode, header::CONTENT_TYPE};
use serde_json::{Value, json};
use sha2::Sha256;

use super::deliver::SendError;
use crate::alerts::alert_json;

pub const EVENT_HEADER: &str = "X-Lizards-Event";
pub const SIGNATURE_HEADER: &str = "X-Lizards-Signature";

pub struct Webhooks {
    http: reqwest::Client,
}

impl Webhooks {
    /// One POST, connection to answer, takes at most `timeout`.
    pub fn new(timeout: Duration) -> Webhooks {
        lizards_shared::http::install_crypto();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // A redirected POST would become a GET elsewhere: the URL is wrong.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Lizards-Notifier/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("webhook client builds");
        Webhooks { http }
    }

    pub async fn send(&self, url: &str, secret: Option<&str>, alert: &Alert) -> Result<(), SendError> {
        let body = serde_json::to_vec(&body(alert)).expect("alert serializes");
        let mut request = self.http.post(url).header(CONTENT_TYPE, "application/json").header(EVENT_HEADER, "alert");
        if let Some(secret) = secret {
            request = request.header(SIGNATURE_HEADER, signature(secret, &body));
        }
        // The URL is the user's and may carry a token: errors leave it out.
        let response = request.body(body).send().await.map_err(|error| {
            let permanent = error.is_builder() || error.is_redirect();
            let reason = format!("webhook: {}", describe(error));
            if permanent { SendError::permanent(reason) } else { SendError::transient(reason) }
        })?;
        classify(response.status())
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
    let error = format!("webhook answered {status}");
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
