//! A local HTTP server standing in for a quote website or API (there is no
//! internet in tests). It answers over real TCP with whatever a test sets
//! per path prefix, including what real servers do wrong: error statuses,
//! slow answers, bodies cut off mid-transfer and endless bodies. It can be
//! told to fail every request until told otherwise.
//!
//! Bodies are templates: `{{now}}` (Unix seconds), `{{now_ms}}`,
//! `{{now_rfc3339}}` and `{{price}}` (a price that moves a little on every
//! answer) are filled in per answer, so fixtures stay fresh enough for
//! validation and each poll brings a new observation.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with a body template.
    Ok { content_type: &'static str, body: String },
    /// Any status with a body template.
    Status { status: u16, content_type: &'static str, body: String },
    /// Waits this long before answering with the inner reply.
    Slow(Duration, Box<Reply>),
    /// 200 announcing `claimed` bytes but closing after `body`.
    CutOff { body: String, claimed: usize },
    /// 200 with `size` bytes of JSON-ish filler, with or without a
    /// `Content-Length`.
    Huge { size: usize, declared: bool },
}

impl Reply {
    pub fn json(body: impl Into<String>) -> Reply {
        Reply::Ok { content_type: "application/json", body: body.into() }
    }

    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply::Status { status, content_type: "application/json", body: body.into() }
    }
}

#[derive(Default)]
struct State {
    routes: Vec<(String, Reply)>,
    /// Answers every request while set.
    failure: Option<Reply>,
    /// Request targets (path and query), in arrival order.
    requests: Vec<String>,
    answers: u64,
}

#[derive(Clone)]
pub struct Fixture {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl Fixture {
    /// Starts a server on a free port of 127.0.0.1; it runs until the test's
    /// runtime ends.
    pub async fn start() -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fixture server binds");
        let port = listener.local_addr().expect("bound address").port();
        let fixture = Fixture { port, state: Arc::default() };
        let server = fixture.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.answer(stream).await });
            }
        });
        fixture
    }

    /// `http://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fixture lock")
    }

    /// Answers requests whose target starts with `prefix` (the longest
    /// matching prefix wins; unmatched requests get 404).
    pub fn route(&self, prefix: &str, reply: Reply) {
        let mut state = self.lock();
        state.routes.retain(|(p, _)| p != prefix);
        state.routes.push((prefix.to_string(), reply));
    }

    /// Every request gets `reply` until [`Fixture::recover`].
    pub fn fail_with(&self, reply: Reply) {
        self.lock().failure = Some(reply);
    }

    pub fn recover(&self) {
        self.lock().failure = None;
    }

    /// Request targets received so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Requests whose target starts with `prefix`.
    pub fn hits(&self, prefix: &str) -> usize {
        self.lock().requests.iter().filter(|r| r.starts_with(prefix)).count()
    }

    fn reply_for(&self, target: &str) -> (Reply, u64) {
        let mut state = self.lock();
        state.requests.push(target.to_string());
        state.answers += 1;
        let answers = state.answers;
        if let Some(failure) = &state.failure {
            return (failure.clone(), answers);
        }
        let route = state.routes.iter().filter(|(p, _)| target.starts_with(p.as_str())).max_by_key(|(p, _)| p.len());
        let reply = route.map(|(_, r)| r.clone()).unwrap_or_else(|| Reply::status(404, r#"{"error":"not found"}"#));
        (reply, answers)
    }

    async fn answer(&self, mut stream: TcpStream) {
        let Some(target) = read_target(&mut stream).await else { return };
        let (reply, answers) = self.reply_for(&target);
        let _ = write_reply(&mut stream, reply, answers).await;
        let _ = stream.shutdown().await;
    }
}

/// The request target of the request line, once the headers are in.
async fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    text.lines().next()?.split_whitespace().nth(1).map(str::to_string)
}

fn fill(template: &str, answers: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    let rfc3339 = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let price = 100.0 + (answers % 40) as f64 * 0.25;
    template
        .replace("{{now_ms}}", &now.as_millis().to_string())
        .replace("{{now_rfc3339}}", &rfc3339)
        .replace("{{now}}", &now.as_secs().to_string())
        .replace("{{price}}", &format!("{price:.2}"))
}

async fn head(stream: &mut TcpStream, status: u16, content_type: &str, length: Option<usize>) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} Fixture\r\nContent-Type: {content_type}\r\nConnection: close\r\n");
    if let Some(length) = length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    if status == 429 {
        head.push_str("Retry-After: 7\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await
}

async fn write_reply(stream: &mut TcpStream, reply: Reply, answers: u64) -> std::io::Result<()> {
    match reply {
        Reply::Ok { content_type, body } => {
            let body = fill(&body, answers);
            head(stream, 200, content_type, Some(body.len())).await?;
            stream.write_all(body.as_bytes()).await
        }
        Reply::Status { status, content_type, body } => {
            let body = fill(&body, answers);
            head(stream, status, content_type, Some(body.len())).await?;
            stream.write_all(body.as_bytes()).await
        }
        Reply::Slow(wait, reply) => {
            tokio::time::sleep(wait).await;
            Box::pin(write_reply(stream, *reply, answers)).await
        }
        Reply::CutOff { body, claimed } => {
            head(stream, 200, "application/json", Some(claimed)).await?;
            stream.write_all(fill(&body, answers).as_bytes()).await
        }
        Reply::Huge { size, declared } => {
            head(stream, 200, "application/json", declared.then_some(size)).await?;
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < size {
                let n = chunk.len().min(size - sent);
                stream.write_all(&chunk[..n]).await?;
                sent += n;
            }
            Ok(())
        }
    }
}
