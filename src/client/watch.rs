//! `watch`: a live table of prices over the WebSocket. On a terminal it is
//! redrawn in place (at most five times a second); otherwise each update is
//! a line of its own. A lost connection is retried with backoff, resuming
//! the same session.

use std::{collections::VecDeque, io::Write, time::Duration};

use chrono::{DateTime, Local};
use futures::{SinkExt, StreamExt};
use lizards_shared::Symbol;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{
    Client,
    api::{Api, ClientError},
    table::{Style, Table, Tone, percent, price},
};

const REDRAW: Duration = Duration::from_millis(200);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(10);
/// Errors and alerts kept under the live table.
const NOTES: usize = 5;

struct Row {
    symbol: String,
    first: Option<f64>,
    price: Option<f64>,
    tone: Tone,
    at: Option<DateTime<Local>>,
}

/// The watched symbols and what is known of them, and how to show it.
struct Board {
    rows: Vec<Row>,
    status: String,
    notes: VecDeque<String>,
    /// Redraw in place (a terminal) or print one line per update.
    live: bool,
    style: Style,
    drawn: usize,
    dirty: bool,
    /// Whoever read the output went away (`watch … | head`).
    closed: bool,
}

impl Board {
    fn new(symbols: &[Symbol], live: bool, style: Style) -> Board {
        let rows = symbols
            .iter()
            .map(|s| Row { symbol: s.to_string(), first: None, price: None, tone: Tone::Plain, at: None })
            .collect();
        Board {
            rows,
            status: "connecting…".into(),
            notes: VecDeque::new(),
            live,
            style,
            drawn: 0,
            dirty: true,
            closed: false,
        }
    }

    fn symbols(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.symbol.as_str()).collect()
    }

    fn update(&mut self, symbol: &str, quote: &Value) {
        let (Some(row), Some(price)) = (self.rows.iter_mut().find(|r| r.symbol == symbol), quote["price"].as_f64())
        else {
            return;
        };
        row.tone = match row.price {
            Some(last) if price != last => Tone::of(price - last),
            _ => row.tone,
        };
        row.first.get_or_insert(price);
        row.price = Some(price);
        row.at = quote["timestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Local));
        if self.live {
            self.dirty = true;
        } else {
            let line = format!(
                "{} {:<10} {:>12} {} {}",
                row.at.map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_default(),
                row.symbol,
                super::table::price(price),
                arrow(row.tone),
                percent(change(row)),
            );
            let line = self.style.paint(&line, row.tone);
            self.line(&line);
        }
    }

    /// Prints a line of the non-terminal output; a closed pipe ends the watch.
    fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.closed = true;
        }
    }

    fn remove(&mut self, symbol: &str) {
        self.rows.retain(|r| r.symbol != symbol);
        self.dirty = true;
    }

    fn note(&mut self, text: String) {
        if self.live {
            self.notes.push_back(text);
            if self.notes.len() > NOTES {
                self.notes.pop_front();
            }
            self.dirty = true;
        } else {
            self.line(&text);
        }
    }

    fn status(&mut self, text: String) {
        if self.live {
            self.status = text;
            self.dirty = true;
        } else {
            eprintln!("{text}");
        }
    }

    /// Redraws the table over the previous one (terminal only).
    fn draw(&mut self) {
        if !self.live || !self.dirty {
            return;
        }
        let mut table = Table::new(&["SYMBOL", "PRICE", "", "CHANGE", "UPDATED"]);
        for row in &self.rows {
            table.row(vec![
                (row.symbol.clone(), Tone::Bold),
                (row.price.map(price).unwrap_or_else(|| "—".into()), row.tone),
                (arrow(row.tone).into(), row.tone),
                (row.price.map(|_| percent(change(row))).unwrap_or_default(), Tone::of(change(row))),
                (row.at.map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_default(), Tone::Dim),
            ]);
        }
        let mut screen = format!("Lizards · {} · Ctrl-C to stop\n\n{}", self.status, table.render(self.style));
        for note in &self.notes {
            screen.push_str(note);
            screen.push('\n');
        }
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            // Back to the first line drawn last time, and clear below it.
            let _ = write!(out, "\x1b[{}F\x1b[J", self.drawn);
        }
        if out.write_all(screen.as_bytes()).and_then(|()| out.flush()).is_err() {
            self.closed = true;
        }
        self.drawn = screen.lines().count();
        self.dirty = false;
    }
}

fn change(row: &Row) -> f64 {
    match (row.first, row.price) {
        (Some(first), Some(price)) => (price - first) / first * 100.0,
        _ => 0.0,
    }
}

fn arrow(tone: Tone) -> &'static str {
    match tone {
        Tone::Up => "▲",
        Tone::Down => "▼",
        _ => " ",
    }
}

/// Why a connection ended.
enum Ended {
    /// Lost or refused: try again after a pause.
    Lost { reason: String, was_live: bool },
    /// Every symbol was refused: nothing left to watch.
    Empty,
    /// Nobody reads the output any more.
    Closed,
}

impl Client {
    pub(super) async fn watch(&self, symbols: Vec<Symbol>, duration: Option<Duration>) -> Result<(), ClientError> {
        use std::io::IsTerminal;
        let mut board = Board::new(&symbols, std::io::stdout().is_terminal(), self.style);
        let stop = async {
            match duration {
                Some(duration) => tokio::time::sleep(duration).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::pin!(stop);
        let mut session = None;
        let mut retry = FIRST_RETRY;
        let result = loop {
            let ended = tokio::select! {
                () = &mut stop => break Ok(()),
                ended = stream(&self.api, &mut session, &mut board) => ended?,
            };
            let (reason, was_live) = match ended {
                Ended::Lost { reason, was_live } => (reason, was_live),
                Ended::Empty => break Err(ClientError::Input("none of the symbols can be watched".into())),
                Ended::Closed => break Ok(()),
            };
            if was_live {
                retry = FIRST_RETRY;
            }
            board.status(format!("reconnecting in {} ({reason})", humantime::format_duration(retry)));
            board.draw();
            tokio::select! {
                () = &mut stop => break Ok(()),
                () = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(LAST_RETRY);
        };
        board.draw();
        result
    }
}

/// One connection: from the session to its end. Only errors no retry can
/// mend (an expired sign-in) are returned as `Err`.
async fn stream(api: &Api, session: &mut Option<String>, board: &mut Board) -> Result<Ended, ClientError> {
    let lost = |reason: String, was_live| Ok(Ended::Lost { reason, was_live });
    let url = match session {
        Some(url) => url.clone(),
        None => match api.session().await {
            Ok(url) => session.insert(url).clone(),
            Err(error @ ClientError::Unreachable { .. }) => return lost(error.to_string(), false),
            Err(error) => return Err(error),
        },
    };
    let mut socket = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((socket, _)) => socket,
        Err(error) => return lost(format!("cannot connect: {error}"), false),
    };
    let subscribe = json!({ "type": "subscribe", "symbols": board.symbols() });
    if let Err(error) = socket.send(Message::text(subscribe.to_string())).await {
        return lost(format!("connection lost: {error}"), false);
    }
    board.status(format!("live · {url}"));
    let mut redraw = tokio::time::interval_at(Instant::now(), REDRAW);
    loop {
        let message = tokio::select! {
            _ = redraw.tick() => { board.draw(); continue; }
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map_or("closed".into(), |f| format!("closed: {} {}", f.code, f.reason));
                return lost(format!("server {reason}"), true);
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return lost(format!("connection lost: {error}"), true),
            None => return lost("connection closed".into(), true),
        };
        if board.closed {
            return Ok(Ended::Closed);
        }
        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
        match frame["type"].as_str() {
            Some("price_update") => {
                for (symbol, quote) in frame["data"].as_object().into_iter().flatten() {
                    board.update(symbol, quote);
                }
            }
            Some("alert") => {
                let message = frame["alert"]["message"].as_str().unwrap_or_default();
                let line = board.style.paint(&format!("alert: {message}"), Tone::Bold);
                board.note(line);
            }
            Some("error") => {
                let message = frame["message"].as_str().unwrap_or_default();
                if message.starts_with("Unknown or expired session") {
                    *session = None;
                    return lost(message.into(), true);
                }
                if let Some(symbol) = message.strip_prefix("Invalid stock symbol: ") {
                    board.remove(symbol);
                }
                let line = board.style.paint(&format!("error: {message}"), Tone::Down);
                board.note(line);
                if board.rows.is_empty() {
                    return Ok(Ended::Empty);
                }
            }
            _ => {}
        }
    }
}
