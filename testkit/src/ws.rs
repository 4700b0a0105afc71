//! A WebSocket test client speaking Lizards' JSON frames.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::CloseFrame},
};

use crate::DEADLINE;

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// How long [`Client::recv`] waits for a frame.
    wait: Duration,
}

impl Client {
    /// Connects to `url`; frames are awaited for up to [`DEADLINE`].
    pub async fn connect(url: &str) -> Client {
        Client::connect_waiting(url, DEADLINE).await
    }

    /// Connects to `url`; frames are awaited for up to `wait`.
    pub async fn connect_waiting(url: &str, wait: Duration) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
        Client { ws, wait }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("sent");
    }

    /// The next JSON text frame.
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(self.wait, self.ws.next()).await.expect("a frame in time");
            match message.expect("connection open").expect("valid frame") {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON frame"),
                Message::Close(frame) => panic!("closed unexpectedly: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next JSON text frame if one arrives within `within` (quiet
    /// periods: "nothing else was sent").
    pub async fn recv_within(&mut self, within: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(within, self.ws.next()).await.ok()?;
            match message.expect("connection open").expect("valid frame") {
                Message::Text(text) => return Some(serde_json::from_str(text.as_str()).expect("JSON frame")),
                Message::Close(frame) => panic!("closed unexpectedly: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// Skips frames until one matches.
    pub async fn recv_until(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if matches(&frame) {
                return frame;
            }
        }
    }

    /// The error frame with this message prefix (other frames skipped).
    pub async fn expect_error(&mut self, prefix: &str) -> Value {
        self.recv_until(|f| f["type"] == "error" && f["message"].as_str().is_some_and(|m| m.starts_with(prefix))).await
    }

    /// Ping round trip: proves the connection is still usable.
    pub async fn assert_usable(&mut self) {
        self.send(serde_json::json!({"type":"ping"})).await;
        self.recv_until(|f| f["type"] == "pong").await;
    }

    /// Waits up to `within` for the server's close frame (other frames skipped).
    pub async fn expect_close(&mut self, within: Duration) -> CloseFrame {
        loop {
            match tokio::time::timeout(within, self.ws.next()).await.expect("closed in time") {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a close frame"),
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Whether `frame` is a `price_update` carrying `symbol`.
pub fn is_update_for(frame: &Value, symbol: &str) -> bool {
    frame["type"] == "price_update" && frame["data"].get(symbol).is_some()
}
