//! One WebSocket connection: a reader that applies the protocol and limits,
//! and a writer that drains the connection's outbox as fast as the socket
//! takes it. Either side ending ends the other.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use lizards_shared::{
    Symbol,
    accounts::UserId,
    protocol::{self, ClientRequest, ProtocolError, ServerFrame, parse_client_frame},
    shutdown::Shutdown,
};
use serde_json::Number;
use tokio::task::JoinSet;

use super::{
    ConnectParams,
    limits::{ErrorBudget, TokenBucket},
    outbox::{Next, Outbox},
};
use crate::{
    accounts::Accounts,
    hub::{ConnId, Hub},
    lookup::{Resolver, Snapshots},
    metrics::Metrics,
    session::Sessions,
};

/// Close codes (RFC 6455).
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;

/// Longest a throttle a client may ask for.
const MAX_THROTTLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct WsSettings {
    pub batch_window: Duration,
    pub slow_close: Duration,
    pub max_symbols: usize,
    pub rate: u32,
    pub burst: u32,
    pub max_frame: usize,
    pub error_limit: usize,
    pub error_window: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

/// What every connection shares.
pub struct ConnContext {
    pub hub: Arc<Hub>,
    /// Verifies tokens (`?token=`, `auth` frames).
    pub accounts: Arc<Accounts>,
    pub resolver: Arc<Resolver>,
    pub snapshots: Arc<Snapshots>,
    pub sessions: Arc<Sessions>,
    pub settings: WsSettings,
    pub metrics: Metrics,
    pub shutdown: Shutdown,
    /// Every open connection, so shutdown can wait for their close frames.
    pub connections: tokio_util::task::TaskTracker,
}

/// On-demand lookups one connection may have in flight.
const MAX_LOOKUPS: usize = 32;

struct Lookup {
    symbol: Symbol,
    known: bool,
    id: Option<Number>,
}

pub async fn serve(socket: WebSocket, ctx: Arc<ConnContext>, params: ConnectParams) {
    let conn_id = ctx.hub.next_conn_id();
    let outbox = Arc::new(Outbox::new(ctx.settings.batch_window));
    ctx.metrics.ws_connections.inc();
    ctx.metrics.ws_connections_opened.inc();
    let (sink, stream) = socket.split();
    let mut reader = Reader {
        id: conn_id,
        ctx: ctx.clone(),
        outbox: outbox.clone(),
        looking_up: HashSet::new(),
        limiter: TokenBucket::new(ctx.settings.rate, ctx.settings.burst, Instant::now()),
        errors: ErrorBudget::new(ctx.settings.error_limit, ctx.settings.error_window),
        session: None,
        user: None,
        token: None,
        to_look_up: Vec::new(),
    };
    reader.start(params).await;
    let write = write_loop(sink, outbox.clone(), ctx.clone());
    tokio::pin!(write);
    tokio::select! {
        // The socket is gone or closed: the reader has nothing left to do.
        () = &mut write => {}
        // The reader stopped and asked for a close: the writer sends what is
        // queued, then the close frame.
        () = reader.run(stream) => write.await,
    }
    reader.finish().await;
    ctx.metrics.ws_connections.dec();
    tracing::debug!(conn = conn_id, "connection closed");
}

struct Reader {
    id: ConnId,
    ctx: Arc<ConnContext>,
    /// Also the connection's subscriptions (the symbols it watches).
    outbox: Arc<Outbox>,
    looking_up: HashSet<Symbol>,
    limiter: TokenBucket,
    errors: ErrorBudget,
    session: Option<String>,
    /// The authenticated user: alerts reach this connection.
    user: Option<UserId>,
    /// The token that authenticated it, checked again every ping interval:
    /// a token revoked (password, e-mail or role changed, account deleted)
    /// or expired since closes the connection, on whichever instance.
    token: Option<String>,
    /// Lookups asked for by the last message, started by `run`.
    to_look_up: Vec<(Symbol, Option<Number>)>,
}

enum Flow {
    Continue,
    Stop,
}

impl Reader {
    /// Applies connection parameters: authenticates a token, resumes a
    /// session's subscriptions (and its user, unless a token named one).
    async fn start(&mut self, params: ConnectParams) {
        if let Some(token) = &params.token {
            let _ = self.authenticate(token).await;
        }
        let Some(id) = params.session else { return };
        match self.ctx.sessions.load(&id).await {
            Ok(Some(state)) => {
                self.session = Some(id);
                if let (None, Some(user)) = (self.user, state.user) {
                    self.attach(user);
                }
                if !state.symbols.is_empty() {
                    self.subscribe_known(state.symbols, None);
                }
            }
            Ok(None) => self.send(ServerFrame::error(format!("Unknown or expired session: {id}"))),
            Err(error) => {
                tracing::warn!(%error, "session store unavailable");
                self.ctx.metrics.errors.with_label_values(&["session_store"]).inc();
                self.send(ServerFrame::error("Session store unavailable; starting a fresh session"));
            }
        }
    }

    async fn run(&mut self, mut stream: SplitStream<WebSocket>) {
        // Made at the first lookup: most connections never need one. They
        // end (aborted) with the connection.
        let mut lookups: Option<JoinSet<Lookup>> = None;
        let idle = self.ctx.settings.idle_timeout;
        // While connected, the session is saved every ping interval, so it
        // expires SESSION_TTL after its last connection closed, not after
        // its last subscription change.
        let every = self.ctx.settings.ping_interval;
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = refresh.tick(), if self.session.is_some() || self.token.is_some() => {
                    if self.session.is_some() {
                        self.save_session().await;
                    }
                    if let Flow::Stop = self.recheck().await {
                        return;
                    }
                }
                message = tokio::time::timeout(idle, stream.next()) => {
                    let flow = match message {
                        Err(_) => {
                            self.ctx.metrics.ws_closes.with_label_values(&["idle"]).inc();
                            self.outbox.close(NORMAL, "idle timeout");
                            Flow::Stop
                        }
                        Ok(Some(Err(error))) if protocol::is_message_too_big(&error) => {
                            self.ctx.metrics.ws_closes.with_label_values(&["too_big"]).inc();
                            self.outbox.close(protocol::CLOSE_TOO_BIG, protocol::TOO_BIG_REASON);
                            Flow::Stop
                        }
                        Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                            self.ctx.metrics.ws_closes.with_label_values(&["client"]).inc();
                            self.outbox.close(NORMAL, "");
                            Flow::Stop
                        }
                        // Boxed: a client message is rare next to the
                        // connection's life, and handling one inline would
                        // size every idle connection's task for it.
                        Ok(Some(Ok(message))) => Box::pin(self.on_message(message)).await,
                    };
                    if let Flow::Stop = flow {
                        return;
                    }
                }
                Some(lookup) = next_lookup(&mut lookups) => self.on_lookup(lookup).await,
            }
            for (symbol, id) in std::mem::take(&mut self.to_look_up) {
                let resolver = self.ctx.resolver.clone();
                lookups.get_or_insert_with(JoinSet::new).spawn(async move {
                    let known = resolver.lookup(&symbol).await;
                    Lookup { symbol, known, id }
                });
            }
        }
    }

    /// Verifies a token: the connection then belongs to its user (an
    /// `authenticated` frame says so); a bad token is an error frame and the
    /// connection keeps its previous identity.
    async fn authenticate(&mut self, token: &str) -> Flow {
        match self.ctx.accounts.authenticate(token).await {
            Ok(user) => {
                self.token = Some(token.to_string());
                self.attach(user.id);
                self.send(ServerFrame::Authenticated { user_id: user.id.0 });
                Flow::Continue
            }
            Err(error) => {
                self.ctx.metrics.ws_error_frames.with_label_values(&["auth"]).inc();
                self.send(ServerFrame::error(format!("Authentication failed: {error}")));
                self.charge()
            }
        }
    }

    /// Checks the connection's token again; one no longer valid ends the
    /// connection (1008) after an error frame saying why. A store that
    /// cannot answer keeps the connection as it is.
    async fn recheck(&mut self) -> Flow {
        let Some(token) = self.token.clone() else { return Flow::Continue };
        match self.ctx.accounts.authenticate(&token).await {
            Ok(_) => Flow::Continue,
            Err(crate::error::ApiError::Unauthenticated(reason)) => {
                self.token = None;
                self.send(ServerFrame::error(format!("Authentication ended: {reason}")));
                self.ctx.metrics.ws_closes.with_label_values(&["revoked"]).inc();
                self.outbox.close(POLICY, "authentication revoked or expired");
                Flow::Stop
            }
            Err(_) => Flow::Continue,
        }
    }

    fn attach(&mut self, user: UserId) {
        if let Some(previous) = self.user.replace(user) {
            self.ctx.hub.detach_user(previous, self.id);
        }
        self.ctx.hub.attach_user(user, self.id, &self.outbox);
    }

    async fn finish(&mut self) {
        if let Some(user) = self.user.take() {
            self.ctx.hub.detach_user(user, self.id);
        }
        // The session outlives the connection by SESSION_TTL.
        self.save_session().await;
        self.ctx.hub.unsubscribe(self.id, &self.outbox.watched());
    }

    fn send(&self, frame: ServerFrame) {
        if !self.outbox.push_control(frame.to_bytes()) {
            self.outbox.close(POLICY, "client is not reading");
        }
    }

    /// Sends an error frame and charges the error budget.
    fn fail(&mut self, error: ProtocolError) -> Flow {
        self.ctx.metrics.ws_error_frames.with_label_values(&[error.kind()]).inc();
        self.send(ServerFrame::error(error));
        self.charge()
    }

    fn charge(&mut self) -> Flow {
        if self.errors.record(Instant::now()) {
            self.ctx.metrics.ws_closes.with_label_values(&["errors"]).inc();
            self.outbox.close(POLICY, "too many invalid messages");
            return Flow::Stop;
        }
        Flow::Continue
    }

    async fn on_message(&mut self, message: Message) -> Flow {
        let text = match message {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
            Message::Ping(_) | Message::Pong(_) => return Flow::Continue,
            Message::Close(_) => return Flow::Stop,
        };
        if !self.limiter.try_take(Instant::now()) {
            return self.fail(ProtocolError::RateExceeded { per_second: self.ctx.settings.rate });
        }
        let Some(text) = text else {
            return self.fail(ProtocolError::BinaryFrame);
        };
        if text.len() > self.ctx.settings.max_frame {
            return self.fail(ProtocolError::FrameTooLarge { limit: self.ctx.settings.max_frame });
        }
        match parse_client_frame(text.as_str(), self.ctx.settings.max_symbols) {
            Ok(request) => self.on_request(request).await,
            Err(error) => self.fail(error),
        }
    }

    async fn on_request(&mut self, request: ClientRequest) -> Flow {
        match request {
            ClientRequest::Subscribe { symbols, id, throttle_ms } => {
                if let Some(ms) = throttle_ms {
                    self.outbox.set_throttle(Duration::from_millis(ms).min(MAX_THROTTLE));
                }
                let (valid, flow) = self.valid_symbols(symbols);
                match self.subscribe(valid, id).await {
                    Flow::Stop => Flow::Stop,
                    Flow::Continue => flow,
                }
            }
            ClientRequest::Unsubscribe { symbols, id } => {
                let (valid, flow) = self.valid_symbols(symbols);
                self.unsubscribe(valid, id).await;
                flow
            }
            ClientRequest::List => {
                let mut symbols = self.outbox.watched();
                symbols.sort();
                self.send(ServerFrame::Subscriptions { symbols });
                Flow::Continue
            }
            ClientRequest::Ping => {
                self.send(ServerFrame::Pong);
                Flow::Continue
            }
            ClientRequest::Auth { token } => {
                let flow = self.authenticate(&token).await;
                self.save_session().await;
                flow
            }
        }
    }

    /// One error frame per invalid symbol; the frame charges the budget once.
    fn valid_symbols(&mut self, symbols: Vec<Result<Symbol, lizards_shared::SymbolError>>) -> (Vec<Symbol>, Flow) {
        let mut valid = Vec::with_capacity(symbols.len());
        let mut seen = HashSet::with_capacity(symbols.len());
        let mut invalid = false;
        for symbol in symbols {
            match symbol {
                Ok(symbol) => {
                    if seen.insert(symbol.clone()) {
                        valid.push(symbol);
                    }
                }
                Err(error) => {
                    invalid = true;
                    self.ctx.metrics.ws_error_frames.with_label_values(&["invalid_symbol"]).inc();
                    self.send(ServerFrame::error(error));
                }
            }
        }
        let flow = if invalid { self.charge() } else { Flow::Continue };
        (valid, flow)
    }

    async fn subscribe(&mut self, symbols: Vec<Symbol>, id: Option<Number>) -> Flow {
        let new: Vec<Symbol> =
            symbols.iter().filter(|s| !self.outbox.watches(s) && !self.looking_up.contains(*s)).cloned().collect();
        let watched = self.outbox.watched_len() + self.looking_up.len();
        if watched + new.len() > self.ctx.settings.max_symbols {
            return self.fail(ProtocolError::TooManySymbols { limit: self.ctx.settings.max_symbols });
        }
        let (known, unknown): (Vec<Symbol>, Vec<Symbol>) =
            new.into_iter().partition(|s| self.ctx.resolver.known_now(s));
        // Already-subscribed symbols are acknowledged again (idempotent).
        let mut ack: Vec<Symbol> = symbols.iter().filter(|s| self.outbox.watches(s)).cloned().collect();
        ack.extend(known.iter().cloned());
        if !ack.is_empty() {
            self.subscribe_known(ack, id.clone());
        }
        for symbol in unknown {
            if self.looking_up.len() >= MAX_LOOKUPS {
                self.ctx.metrics.ws_error_frames.with_label_values(&["lookups_busy"]).inc();
                self.send(ServerFrame::error(format!(
                    "Too many symbol lookups in progress (at most {MAX_LOOKUPS}); subscribe to {symbol} again shortly"
                )));
                continue;
            }
            self.looking_up.insert(symbol.clone());
            self.to_look_up.push((symbol, id.clone()));
        }
        self.save_session().await;
        Flow::Continue
    }

    /// Acknowledges, registers with the hub, and sends snapshots.
    fn subscribe_known(&mut self, symbols: Vec<Symbol>, id: Option<Number>) {
        self.send(ServerFrame::Subscribed { symbols: symbols.clone(), id });
        let fresh: Vec<Symbol> = symbols.into_iter().filter(|s| !self.outbox.watches(s)).collect();
        let missing = self.ctx.hub.subscribe(self.id, &self.outbox, &fresh);
        for symbol in missing {
            let (snapshots, hub) = (self.ctx.snapshots.clone(), self.ctx.hub.clone());
            tokio::spawn(async move {
                if let Some(quote) = snapshots.get(&symbol).await {
                    hub.offer_snapshot(&quote);
                }
            });
        }
    }

    async fn on_lookup(&mut self, lookup: Lookup) {
        if !self.looking_up.remove(&lookup.symbol) {
            return; // unsubscribed while looking up
        }
        if lookup.known {
            self.subscribe_known(vec![lookup.symbol], lookup.id);
            self.save_session().await;
        } else {
            self.ctx.metrics.ws_error_frames.with_label_values(&["unknown_symbol"]).inc();
            self.send(ServerFrame::error(lizards_shared::SymbolError(lookup.symbol.to_string())));
        }
    }

    async fn unsubscribe(&mut self, symbols: Vec<Symbol>, id: Option<Number>) {
        let removed: Vec<Symbol> = symbols
            .iter()
            .filter(|s| {
                let looked_up = self.looking_up.remove(*s);
                self.outbox.watches(s) || looked_up
            })
            .cloned()
            .collect();
        self.ctx.hub.unsubscribe(self.id, &removed);
        self.ctx.metrics.ws_updates_conflated.inc_by(self.outbox.forget(&removed));
        self.send(ServerFrame::Unsubscribed { symbols, id });
        self.save_session().await;
    }

    async fn save_session(&self) {
        let Some(id) = &self.session else { return };
        let mut symbols = self.outbox.watched();
        symbols.extend(self.looking_up.iter().cloned());
        if let Err(error) = self.ctx.sessions.save(id, symbols, self.user).await {
            tracing::warn!(%error, "session not saved");
            self.ctx.metrics.errors.with_label_values(&["session_store"]).inc();
        }
    }
}

/// The next finished lookup; never, while none was started.
async fn next_lookup(lookups: &mut Option<JoinSet<Lookup>>) -> Option<Lookup> {
    match lookups {
        Some(set) => set.join_next().await?.ok(),
        None => std::future::pending().await,
    }
}

fn text(bytes: Bytes) -> Message {
    Message::Text(Utf8Bytes::try_from(bytes).expect("server frames are UTF-8 JSON"))
}

/// Most messages put into one write: what is ready goes out together (one
/// syscall), up to this many.
const MAX_MESSAGES_PER_WRITE: usize = 32;

/// Writes the outbox to the socket; ends after a close frame, a failed
/// write, or a socket that stayed unwritable for `WS_SLOW_CLOSE`.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, outbox: Arc<Outbox>, ctx: Arc<ConnContext>) {
    let settings = &ctx.settings;
    let metrics = &ctx.metrics;
    // Pings and shutdown are checked on every turn, not only when idle: a
    // client that only listens to a busy stream must still be pinged (its
    // pongs keep it from the idle timeout) and must still get its 1001.
    let mut next_ping = Instant::now() + settings.ping_interval;
    let mut not_before = Instant::now();
    // Looked up once, not per frame.
    let sent_control = metrics.ws_frames_sent.with_label_values(&["control"]);
    let sent_updates = metrics.ws_frames_sent.with_label_values(&["price_update"]);
    'writing: loop {
        if ctx.shutdown.is_cancelled() {
            metrics.ws_closes.with_label_values(&["shutdown"]).inc();
            close(&mut sink, GOING_AWAY, "server shutting down").await;
            break;
        }
        let now = Instant::now();
        let mut fed = 0;
        if now >= next_ping {
            next_ping = now + settings.ping_interval;
            if !write(&mut sink, Write::Feed(Message::Ping(Bytes::new())), settings.slow_close, metrics).await {
                break;
            }
            fed += 1;
        }
        // Everything ready now is fed, then written at once.
        let last = loop {
            if fed == MAX_MESSAGES_PER_WRITE {
                break None;
            }
            let message = match outbox.next(now, not_before) {
                Next::Control(frame) => {
                    sent_control.inc();
                    text(frame)
                }
                Next::Updates { frame, symbols, oldest_live_micros } => {
                    sent_updates.inc();
                    metrics.ws_symbol_updates_sent.inc_by(symbols as u64);
                    if let Some(oldest) = oldest_live_micros {
                        let now_us = chrono::Utc::now().timestamp_micros();
                        metrics.e2e_latency.observe((now_us - oldest).max(0) as f64 / 1e6);
                    }
                    not_before = now + outbox.throttle();
                    Message::Text(frame)
                }
                other => break Some(other),
            };
            if !write(&mut sink, Write::Feed(message), settings.slow_close, metrics).await {
                break 'writing;
            }
            fed += 1;
        };
        if fed > 0 && !write(&mut sink, Write::Flush, settings.slow_close, metrics).await {
            break;
        }
        match last {
            Some(Next::Close(code, reason)) => {
                close(&mut sink, code, &reason).await;
                break;
            }
            Some(Next::Wait(due)) if fed == 0 => {
                let wake = tokio::time::Instant::from_std(due.map_or(next_ping, |due| due.min(next_ping)));
                tokio::select! {
                    _ = outbox.changed() => {}
                    _ = ctx.shutdown.cancelled() => {}
                    _ = tokio::time::sleep_until(wake) => {}
                }
            }
            _ => {}
        }
    }
}

enum Write {
    /// Queue a message in the socket's write buffer.
    Feed(Message),
    /// Write the buffer out.
    Flush,
}

/// One step of writing; `false` when the connection is finished.
async fn write(sink: &mut SplitSink<WebSocket, Message>, step: Write, slow_close: Duration, metrics: &Metrics) -> bool {
    let result = match step {
        Write::Feed(message) => tokio::time::timeout(slow_close, sink.feed(message)).await,
        Write::Flush => tokio::time::timeout(slow_close, sink.flush()).await,
    };
    match result {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            metrics.ws_slow_closes.inc();
            metrics.ws_closes.with_label_values(&["slow"]).inc();
            tracing::info!("closing a client that stayed unwritable");
            close(sink, POLICY, "client too slow").await;
            false
        }
    }
}

/// Boxed, as the reader's message handling is: it runs once per connection.
async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
    // A client that is not reading may never take the close frame either.
    let send = Box::pin(sink.send(Message::Close(Some(frame))));
    let _ = tokio::time::timeout(Duration::from_secs(1), send).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output_size<F, R>(_: F) -> usize
    where
        F: FnOnce(WebSocket, Arc<ConnContext>, ConnectParams) -> R,
    {
        std::mem::size_of::<R>()
    }

    /// Every connection's task holds this future for its whole life, so its
    /// size is part of each idle connection's memory (docs/benchmarks.md,
    /// `bench conns`). It was 2,472 bytes before message handling was boxed
    /// and the reader and writer stopped sharing a cancellation token.
    #[test]
    fn the_connection_state_stays_small() {
        let size = output_size(serve);
        assert!(size <= 2048, "the connection's future is {size} bytes");
    }
}
