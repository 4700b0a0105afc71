//! WebSocket endpoint (`/ws` and `/`): upgrade, then one connection task.

pub mod connection;
pub mod limits;
pub mod outbox;

use std::sync::Arc;

use axum::{
    Json,
    extract::{
        Query, State,
        ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use lizards_shared::protocol::MAX_MESSAGE;
use serde::Deserialize;
use serde_json::json;

pub use connection::ConnContext;

/// Per-connection read buffer: small, so idle connections stay cheap
/// (tungstenite's default is 128 KiB, and it zero-fills what it reads
/// into). Client frames are small (a subscription to 10 symbols is ~150
/// bytes); a larger one grows the buffer as it arrives. The plain reference
/// server of `bench ws` and `bench conns` uses the same size.
pub const READ_BUFFER: usize = 512;
/// `MAX_MESSAGE` is the largest message the socket accepts at all (beyond
/// it: close 1009); frames above `WS_MAX_FRAME` but below it get a "frame
/// too large" error and the connection lives on.

#[derive(Debug, Default, Deserialize)]
pub struct ConnectParams {
    pub session: Option<String>,
    pub token: Option<String>,
}

pub async fn upgrade(
    State(ctx): State<Arc<ConnContext>>,
    Query(params): Query<ConnectParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(_) => {
            return Json(json!({
                "service": "lizards-provider",
                "websocket": "/ws",
                "protocol": "JSON text frames, see docs/protocol.md"
            }))
            .into_response();
        }
    };
    ws.read_buffer_size(READ_BUFFER).max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE).on_upgrade(
        move |socket| {
            let tracked = ctx.connections.token();
            async move {
                connection::serve(socket, ctx, params).await;
                drop(tracked);
            }
        },
    )
}
