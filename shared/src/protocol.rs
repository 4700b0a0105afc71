//! The WebSocket wire protocol (docs/protocol.md): client requests parsed with a
//! precise error for every malformed frame, and server frames.
//!
//! Price updates are assembled from per-symbol fragments that are serialized
//! once per quote and shared (`Bytes`) by every connection that sends them.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::{Number, Value};

use crate::{Quote, Symbol, SymbolError, time};

/// Largest client message a WebSocket endpoint reads; beyond it the
/// connection ends with [`CLOSE_TOO_BIG`].
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// Close code for a message over the limit (RFC 6455 §7.4.1, "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// The close frame's reason with that code.
pub const TOO_BIG_REASON: &str = "message too big: at most 1 MiB";

/// Whether a WebSocket read failed because the client's message was over
/// [`MAX_MESSAGE`] (the socket can still send the close frame).
pub fn is_message_too_big(error: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::{Error, error::CapacityError};
    let inner = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>());
    matches!(inner, Some(Error::Capacity(CapacityError::MessageTooLong { .. })))
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequest {
    Subscribe { symbols: Vec<Result<Symbol, SymbolError>>, id: Option<Number>, throttle_ms: Option<u64> },
    Unsubscribe { symbols: Vec<Result<Symbol, SymbolError>>, id: Option<Number> },
    List,
    Ping,
    Auth { token: String },
}

/// Why a client frame was refused; the message is what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Invalid JSON: {0}")]
    InvalidJson(String),
    #[error("Invalid message: expected a JSON object with a 'type' field")]
    NotAnObject,
    #[error("Unknown message type: {0}")]
    UnknownType(String),
    #[error("Missing 'symbols' field")]
    MissingSymbols,
    #[error("'symbols' must be an array of strings")]
    SymbolsNotStrings,
    #[error("Missing or invalid 'token' field")]
    MissingToken,
    #[error("'{0}' must be a non-negative number")]
    BadNumber(&'static str),
    #[error("Too many symbols: at most {limit} per connection")]
    TooManySymbols { limit: usize },
    #[error("Binary frames are not supported; send JSON text frames")]
    BinaryFrame,
    #[error("Frame too large: at most {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("Rate limit exceeded: at most {per_second} messages/s")]
    RateExceeded { per_second: u32 },
}

impl ProtocolError {
    /// Metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ProtocolError::InvalidJson(_) => "invalid_json",
            ProtocolError::NotAnObject => "not_an_object",
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::MissingSymbols => "missing_symbols",
            ProtocolError::SymbolsNotStrings => "ill_typed_symbols",
            ProtocolError::MissingToken => "missing_token",
            ProtocolError::BadNumber(_) => "ill_typed_field",
            ProtocolError::TooManySymbols { .. } => "too_many_symbols",
            ProtocolError::BinaryFrame => "binary_frame",
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::RateExceeded { .. } => "rate_exceeded",
        }
    }
}

/// Parses one text frame. `max_symbols` bounds the array before any symbol
/// is parsed, so a huge request costs little.
pub fn parse_client_frame(text: &str, max_symbols: usize) -> Result<ClientRequest, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return Err(ProtocolError::NotAnObject),
    };
    let id = || match map.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.clone())),
        Some(_) => Err(ProtocolError::BadNumber("id")),
    };
    let symbols = || -> Result<Vec<Result<Symbol, SymbolError>>, ProtocolError> {
        let list = match map.get("symbols") {
            None | Some(Value::Null) => return Err(ProtocolError::MissingSymbols),
            Some(Value::Array(list)) => list,
            Some(_) => return Err(ProtocolError::SymbolsNotStrings),
        };
        if list.len() > max_symbols {
            return Err(ProtocolError::TooManySymbols { limit: max_symbols });
        }
        list.iter().map(|v| v.as_str().map(Symbol::parse).ok_or(ProtocolError::SymbolsNotStrings)).collect()
    };
    match kind {
        "subscribe" => {
            let throttle_ms = match map.get("throttle_ms") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or(ProtocolError::BadNumber("throttle_ms"))?),
            };
            Ok(ClientRequest::Subscribe { symbols: symbols()?, id: id()?, throttle_ms })
        }
        "unsubscribe" => Ok(ClientRequest::Unsubscribe { symbols: symbols()?, id: id()? }),
        "list" => Ok(ClientRequest::List),
        "ping" => Ok(ClientRequest::Ping),
        "auth" => match map.get("token") {
            Some(Value::String(token)) if !token.is_empty() => Ok(ClientRequest::Auth { token: token.clone() }),
            _ => Err(ProtocolError::MissingToken),
        },
        other => Err(ProtocolError::UnknownType(other.chars().take(64).collect())),
    }
}

/// Server frames other than `price_update` (which is assembled from
/// fragments, see [`price_update`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Error {
        message: String,
    },
    Subscribed {
        symbols: Vec<Symbol>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Number>,
    },
    Unsubscribed {
        symbols: Vec<Symbol>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Number>,
    },
    Subscriptions {
        symbols: Vec<Symbol>,
    },
    Pong,
    /// The connection now belongs to this user (after `?token=` or an
    /// `auth` frame).
    Authenticated {
        user_id: i64,
    },
    Alert {
        alert: Value,
    },
}

impl ServerFrame {
    pub fn error(message: impl ToString) -> ServerFrame {
        ServerFrame::Error { message: message.to_string() }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("server frame serializes"))
    }
}

/// One symbol's entry of a `price_update` frame, serialized once per quote:
/// `"AAPL":{"price":150.23,"timestamp":"..."}`.
#[derive(Debug, Clone)]
pub struct PriceFragment {
    pub symbol: Symbol,
    /// Quote time in microseconds, to keep the newest when conflating.
    pub ts_micros: i64,
    /// When ingestion received the quote (for end-to-end latency).
    pub ingested_at_micros: i64,
    /// Fresh from the live feed (false for snapshots, which may be old and
    /// are left out of latency figures).
    pub live: bool,
    pub json: Bytes,
}

#[derive(Serialize)]
struct FragmentBody<'a> {
    price: f64,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<f64>,
}

impl PriceFragment {
    pub fn from_quote(quote: &Quote) -> PriceFragment {
        let timestamp = time::rfc3339(&quote.ts);
        let body = FragmentBody { price: quote.price, timestamp: &timestamp, volume: quote.volume };
        let mut json = serde_json::to_vec(quote.symbol.as_str()).expect("string serializes");
        json.push(b':');
        serde_json::to_writer(&mut json, &body).expect("fragment serializes");
        PriceFragment {
            symbol: quote.symbol.clone(),
            ts_micros: time::micros(&quote.ts),
            ingested_at_micros: time::micros(&quote.ingested_at),
            live: true,
            json: Bytes::from(json),
        }
    }

    /// The same price sent as a snapshot.
    pub fn as_snapshot(&self) -> PriceFragment {
        PriceFragment { live: false, ..self.clone() }
    }
}

const PRICE_UPDATE_HEAD: &[u8] = br#"{"type":"price_update","data":{"#;
const PRICE_UPDATE_TAIL: &[u8] = b"}}";

/// Assembles a `price_update` frame from fragments.
pub fn price_update<'a>(fragments: impl IntoIterator<Item = &'a PriceFragment>) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.put_slice(PRICE_UPDATE_HEAD);
    for (i, fragment) in fragments.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&fragment.json);
    }
    out.put_slice(PRICE_UPDATE_TAIL);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    const MAX: usize = 1024;

    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).unwrap()
    }

    #[test]
    fn subscribe_with_id_and_throttle() {
        let req = parse_client_frame(r#"{"type":"subscribe","symbols":["aapl","XYZ!"],"id":7,"throttle_ms":250}"#, MAX);
        assert_eq!(
            req,
            Ok(ClientRequest::Subscribe {
                symbols: vec![Ok(sym("AAPL")), Err(SymbolError("XYZ!".into()))],
                id: Some(7.into()),
                throttle_ms: Some(250),
            })
        );
    }

    #[test]
    fn malformed_frames_name_the_problem() {
        let cases = [
            ("{", "Invalid JSON"),
            ("[1]", "Invalid message"),
            (r#"{"symbols":[]}"#, "Invalid message"),
            (r#"{"type":"dance"}"#, "Unknown message type: dance"),
            (r#"{"type":"subscribe"}"#, "Missing 'symbols' field"),
            (r#"{"type":"subscribe","symbols":"AAPL"}"#, "'symbols' must be an array of strings"),
            (r#"{"type":"subscribe","symbols":[1]}"#, "'symbols' must be an array of strings"),
            (r#"{"type":"subscribe","symbols":[],"id":"x"}"#, "'id' must be"),
            (r#"{"type":"subscribe","symbols":[],"throttle_ms":-1}"#, "'throttle_ms' must be"),
            (r#"{"type":"auth"}"#, "Missing or invalid 'token'"),
        ];
        for (frame, expected) in cases {
            let err = parse_client_frame(frame, MAX).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{frame}: {err}");
        }
    }

    #[test]
    fn too_many_symbols_is_refused_before_parsing_them() {
        let symbols: Vec<String> = (0..5).map(|i| format!("S{i}")).collect();
        let frame = serde_json::json!({"type":"subscribe","symbols":symbols}).to_string();
        assert_eq!(parse_client_frame(&frame, 4), Err(ProtocolError::TooManySymbols { limit: 4 }));
    }

    #[test]
    fn server_frames_have_the_seed_shapes() {
        let f = ServerFrame::Subscribed { symbols: vec![sym("AAPL")], id: Some(1.into()) };
        assert_eq!(f.to_bytes(), r#"{"type":"subscribed","symbols":["AAPL"],"id":1}"#);
        let f = ServerFrame::Unsubscribed { symbols: vec![sym("AAPL")], id: None };
        assert_eq!(f.to_bytes(), r#"{"type":"unsubscribed","symbols":["AAPL"]}"#);
        assert_eq!(ServerFrame::Pong.to_bytes(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerFrame::error("Invalid stock symbol: XYZ").to_bytes(),
            r#"{"type":"error","message":"Invalid stock symbol: XYZ"}"#
        );
    }

    #[test]
    fn price_update_joins_fragments() {
        let quote = |s: &str, p: f64, ts: &str| Quote {
            symbol: sym(s),
            price: p,
            ts: DateTime::parse_from_rfc3339(ts).unwrap().to_utc(),
            volume: None,
            source: "t".into(),
            ingest_id: "i".into(),
            ingested_at: DateTime::UNIX_EPOCH,
        };
        let a = PriceFragment::from_quote(&quote("AAPL", 150.23, "2024-09-14T12:34:56.123456Z"));
        let b = PriceFragment::from_quote(&quote("TSLA", 742.56, "2024-09-14T12:34:56.120001Z"));
        let frame = price_update([&a, &b]);
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"price_update","data":{
                "AAPL":{"price":150.23,"timestamp":"2024-09-14T12:34:56.123456Z"},
                "TSLA":{"price":742.56,"timestamp":"2024-09-14T12:34:56.120001Z"}}})
        );
    }
}
