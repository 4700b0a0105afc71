//! Servers the notifier talks to, in-process over real TCP: an SMTP sink,
//! a webhook receiver and a fake Telegram Bot API.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("fake server") });
    addr
}

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The DATA, dot-unstuffed, lines joined with `\r\n`.
    pub data: String,
}

/// Speaks just enough SMTP to take messages: greeting, EHLO/HELO, MAIL,
/// RCPT, DATA, RSET, NOOP, QUIT.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        SmtpSink::start_on(0).await
    }

    /// Starts on `port` (0 picks one): "the SMTP server comes back".
    pub async fn start_on(port: u16) -> SmtpSink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("SMTP sink binds");
        let sink = SmtpSink { port: listener.local_addr().expect("addr").port(), mails: Arc::default() };
        let server = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = server.session(stream).await;
                });
            }
        });
        sink
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    async fn session(&self, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
        let (mut from, mut to) = (String::new(), Vec::new());
        loop {
            let Some(line) = read_line(&mut lines).await? else { return Ok(()) };
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-sink.test greets you\r\n250-SIZE 10485760\r\n250 HELP\r\n"
            } else if upper.starts_with("HELO") {
                b"250 sink.test\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                from = line[10..].trim().to_string();
                b"250 OK\r\n"
            } else if upper.starts_with("RCPT TO:") {
                to.push(line[8..].trim().trim_start_matches('<').trim_end_matches('>').to_string());
                b"250 OK\r\n"
            } else if upper == "DATA" {
                write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = Vec::new();
                loop {
                    let Some(line) = read_line(&mut lines).await? else { return Ok(()) };
                    if line == "." {
                        break;
                    }
                    data.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
                }
                let mail =
                    Mail { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data: data.join("\r\n") };
                self.mails.lock().unwrap().push(mail);
                b"250 OK queued\r\n"
            } else if upper == "RSET" || upper == "NOOP" {
                b"250 OK\r\n"
            } else if upper == "QUIT" {
                write.write_all(b"221 Bye\r\n").await?;
                return Ok(());
            } else {
                b"502 Command not implemented\r\n"
            };
            write.write_all(reply).await?;
        }
    }
}

async fn read_line(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let mut line = String::new();
    if lines.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hook {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

/// Records every POST to `/hook` and answers with a settable status.
#[derive(Clone)]
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    hooks: Arc<Mutex<Vec<Hook>>>,
    status: Arc<AtomicU16>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let hooks: Arc<Mutex<Vec<Hook>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let state = HookState { hooks: hooks.clone(), status: status.clone() };
        let router = Router::new().route("/hook", post(receive)).with_state(state);
        WebhookReceiver { addr: serve(router).await, hooks, status }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }
}

#[derive(Clone)]
struct HookState {
    hooks: Arc<Mutex<Vec<Hook>>>,
    status: Arc<AtomicU16>,
}

async fn receive(State(state): State<HookState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    state.hooks.lock().unwrap().push(Hook { headers, body });
    StatusCode::from_u16(state.status.load(Ordering::SeqCst)).expect("valid status")
}

/// A fake Telegram Bot API for one token: `getUpdates` serves queued
/// updates once (long-polling up to its `timeout`), `sendMessage` records.
#[derive(Clone)]
pub struct FakeTelegram {
    pub addr: SocketAddr,
    state: Arc<BotState>,
}

pub const BOT_TOKEN: &str = "123456:TEST-token";

#[derive(Default)]
struct BotState {
    updates: Mutex<VecDeque<Value>>,
    arrived: Notify,
    next_id: AtomicI64,
    sent: Mutex<Vec<Value>>,
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let state = Arc::new(BotState { next_id: AtomicI64::new(1000), ..BotState::default() });
        let router = Router::new()
            .route("/{bot}/getUpdates", get(get_updates))
            .route("/{bot}/sendMessage", post(send_message))
            .with_state(state.clone());
        FakeTelegram { addr: serve(router).await, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A user writes `text` in chat `chat_id`.
    pub fn say(&self, chat_id: i64, text: &str) {
        let id = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        let update = json!({
            "update_id": id,
            "message": {"message_id": id, "date": 0, "chat": {"id": chat_id, "type": "private"}, "text": text},
        });
        self.state.updates.lock().unwrap().push_back(update);
        self.state.arrived.notify_waiters();
    }

    /// `sendMessage` bodies received.
    pub fn sent(&self) -> Vec<Value> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Texts sent to `chat_id`.
    pub fn sent_to(&self, chat_id: i64) -> Vec<String> {
        self.sent()
            .iter()
            .filter(|m| m["chat_id"] == chat_id)
            .filter_map(|m| m["text"].as_str().map(str::to_string))
            .collect()
    }
}

fn authorized(bot: &str) -> bool {
    bot == format!("bot{BOT_TOKEN}")
}

fn not_found() -> (StatusCode, Json<Value>) {
    (StatusCode::NOT_FOUND, Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})))
}

async fn get_updates(
    State(state): State<Arc<BotState>>,
    Path(bot): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&bot) {
        return not_found();
    }
    let wait = Duration::from_secs(query.get("timeout").and_then(|t| t.parse().ok()).unwrap_or(0));
    let offset: i64 = query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let arrived = state.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let ready: Vec<Value> = {
            let mut updates = state.updates.lock().unwrap();
            updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            updates.drain(..).collect()
        };
        if !ready.is_empty() || tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return (StatusCode::OK, Json(json!({"ok": true, "result": ready})));
        }
    }
}

async fn send_message(
    State(state): State<Arc<BotState>>,
    Path(bot): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorized(&bot) {
        return not_found();
    }
    state.sent.lock().unwrap().push(body.clone());
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::OK,
        Json(json!({"ok": true, "result": {"message_id": id, "chat": {"id": body["chat_id"]}, "text": body["text"]}})),
    )
}
