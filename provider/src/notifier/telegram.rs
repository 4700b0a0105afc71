//! The Telegram Bot API: `sendMessage` for alerts and replies, and
//! `getUpdates` long polling for the bot's commands ([`super::bot`]).
//! The token is part of every method URL, so no URL ever reaches a log
//! or an error text.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{deliver::SendError, webhook::describe};

pub struct Telegram {
    http: reqwest::Client,
    /// `{TELEGRAM_API_URL}/bot{token}`: secret.
    base: String,
    timeout: Duration,
}

/// One update from `getUpdates` (only what the bot reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Update {
    pub update_id: i64,
    pub message: Option<ChatMessage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub chat: Chat,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Chat {
    pub id: i64,
}

/// The Bot API's envelope: `{"ok": true, "result": ...}` or
/// `{"ok": false, "error_code": 400, "description": "..."}`.
#[derive(Debug, Deserialize)]
struct Answer<T> {
    ok: bool,
    result: Option<T>,
    description: Option<String>,
}

impl Telegram {
    /// Calls other than long polls take at most `timeout`.
    pub fn new(api_url: &str, token: &str, timeout: Duration) -> Telegram {
        let base = format!("{}/bot{token}", api_url.trim_end_matches('/'));
        Telegram { http: lizards_shared::http::client(), base, timeout }
    }

    fn url(&self, method: &str) -> String {
        format!("{}/{method}", self.base)
    }

    pub async fn send_message(&self, chat_id: i64, text: &str) -> Result<(), SendError> {
        let response = self
            .http
            .post(self.url("sendMessage"))
            .timeout(self.timeout)
            .json(&json!({ "chat_id": chat_id, "text": text }))
            .send()
            .await
            .map_err(|error| SendError::transient(format!("Telegram: {}", describe(error))))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let detail = response
            .json::<Answer<serde_json::Value>>()
            .await
            .ok()
            .and_then(|answer| answer.description)
            .unwrap_or_default();
        let error = format!("Telegram answered {status} {detail}").trim_end().to_string();
        // 429 (flood control) and server errors pass; 400 (no such chat),
        // 403 (the user blocked the bot) or 401 (bad token) will not.
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::transient(error))
        } else {
            Err(SendError::permanent(error))
        }
    }

    /// Updates after `offset`, waiting up to `wait` for one to arrive.
    pub async fn get_updates(&self, offset: Option<i64>, wait: Duration) -> Result<Vec<Update>, String> {
        // Whole seconds, at least one: `timeout=0` would make this a busy loop.
        let wait = Duration::from_secs(wait.as_secs().max(1));
        // `allowed_updates=["message"]`, URL-encoded.
        let mut url =
            format!("{}?timeout={}&allowed_updates=%5B%22message%22%5D", self.url("getUpdates"), wait.as_secs());
        if let Some(offset) = offset {
            url.push_str(&format!("&offset={offset}"));
        }
        let response = self.http.get(url).timeout(wait + self.timeout).send().await.map_err(describe)?;
        let status = response.status();
        let answer: Answer<Vec<Update>> =
            response.json().await.map_err(|error| format!("{status}: {}", describe(error)))?;
        match answer {
            Answer { ok: true, result: Some(updates), .. } => Ok(updates),
            Answer { description, .. } => Err(format!("{status} {}", description.unwrap_or_default())),
        }
    }
}
