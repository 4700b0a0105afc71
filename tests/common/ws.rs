//! A WebSocket test client speaking Lizards' JSON frames, shared by the
//! root crate's test binaries (each uses a part of it).
#![allow(dead_code)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, protocol::CloseFrame},
};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("WebSocket connects");
        Client { ws }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws.send(Message::Text(frame.to_string().into())).await.expect("sent");
    }

    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame in time");
            match message.expect("open").expect("valid frame") {
                Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    pub async fn recv_until(&mut self, matches: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.recv().await;
            if matches(&frame) {
                return frame;
            }
        }
    }

    pub async fn expect_close(&mut self) -> CloseFrame {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("closed in time") {
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a close frame"),
                Some(Ok(_)) => continue,
            }
        }
    }
}
