//! The plain reference of `bench ws --reference`: a minimal tokio-tungstenite
//! broadcast server of the same protocol, with nothing else. No broker,
//! ingestion, store, outbox or limits: every tick it serializes the tick's
//! quotes into one `price_update` (with the protocol's own serializer) and
//! hands the same bytes to every connection that watches all of them; a
//! connection watching some (`bench ws --universe`) builds its own frame
//! of the fragments it watches, from their pre-serialized JSON. What the
//! benchmark client gets from it is this machine's ceiling for that client,
//! and Lizards' figures are reported as a ratio of it.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use futures::{SinkExt, StreamExt};
use lizards_shared::{
    Quote, Symbol,
    protocol::{ClientRequest, PriceFragment, parse_client_frame, price_update},
    shutdown::Shutdown,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::broadcast,
};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes, protocol::WebSocketConfig};

/// The synthetic source's tick: quotes are emitted in groups of this length.
const TICK: Duration = Duration::from_millis(10);
/// One tick's quotes: the frame of all of them, and each alone.
struct Tick {
    frame: Utf8Bytes,
    fragments: Vec<PriceFragment>,
}

/// Ticks a connection may fall behind before it skips to the newest.
const BACKLOG: usize = 64;

/// A running reference server.
pub struct Reference {
    pub addr: SocketAddr,
    /// Frames skipped by connections that fell `BACKLOG` ticks behind.
    pub skipped: Arc<AtomicU64>,
}

/// Serves on a free loopback port until `stop`; publishes `rate` quotes/s
/// round-robin over `symbols`, as the synthetic source does.
pub async fn start(symbols: &[String], rate: f64, stop: Shutdown) -> anyhow::Result<Reference> {
    let symbols: Vec<Symbol> = symbols.iter().map(|s| Symbol::parse(s)).collect::<Result<_, _>>()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (frames, _) = broadcast::channel(BACKLOG);
    let skipped = Arc::new(AtomicU64::new(0));
    let universe = symbols.len();
    tokio::spawn(publish(symbols, rate, frames.clone(), stop.clone()));
    tokio::spawn(accept(listener, frames, universe, skipped.clone(), stop));
    Ok(Reference { addr, skipped })
}

async fn publish(symbols: Vec<Symbol>, rate: f64, frames: broadcast::Sender<Arc<Tick>>, stop: Shutdown) {
    let mut prices = vec![100.0; symbols.len()];
    let (mut owed, mut next, mut sequence) = (0.0, 0, 0u64);
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        owed += rate * TICK.as_secs_f64();
        let mut fragments: Vec<PriceFragment> = Vec::new();
        while owed >= 1.0 {
            owed -= 1.0;
            // Prices only need to change, not to look real.
            sequence += 1;
            prices[next] *= if sequence.is_multiple_of(2) { 1.0005 } else { 0.9996 };
            let now = Utc::now();
            let quote = Quote {
                symbol: symbols[next].clone(),
                price: prices[next],
                ts: now,
                volume: None,
                source: "reference".into(),
                ingest_id: String::new(),
                ingested_at: now,
            };
            // One entry per symbol in a frame: a newer quote replaces it.
            fragments.retain(|f| f.symbol != quote.symbol);
            fragments.push(PriceFragment::from_quote(&quote));
            next = (next + 1) % symbols.len();
        }
        if !fragments.is_empty() {
            let frame = Utf8Bytes::try_from(price_update(&fragments)).expect("frames are UTF-8 JSON");
            let _ = frames.send(Arc::new(Tick { frame, fragments }));
        }
    }
}

async fn accept(
    listener: TcpListener,
    frames: broadcast::Sender<Arc<Tick>>,
    universe: usize,
    skipped: Arc<AtomicU64>,
    stop: Shutdown,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        // As Lizards' listeners do (shared/src/http.rs).
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, frames.clone(), universe, skipped.clone(), stop.clone()));
    }
}

/// Waits for the client's subscribe frame, acknowledges it, then forwards
/// the updates of its symbols published after it.
async fn connection(
    stream: TcpStream,
    frames: broadcast::Sender<Arc<Tick>>,
    universe: usize,
    skipped: Arc<AtomicU64>,
    stop: Shutdown,
) {
    // The read buffer Lizards' provider uses: with tungstenite's default,
    // 128 KiB, the reference would cost ~130 KB per idle connection.
    let config = WebSocketConfig::default().read_buffer_size(lizards_provider::ws::READ_BUFFER);
    let Ok(socket) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
    let (mut tx, mut rx) = socket.split();
    let watched: HashSet<Symbol> = loop {
        match rx.next().await {
            Some(Ok(Message::Text(text))) => {
                if let Ok(ClientRequest::Subscribe { symbols, .. }) = parse_client_frame(text.as_str(), usize::MAX) {
                    break symbols.into_iter().flatten().collect();
                }
            }
            Some(Ok(_)) => {}
            _ => return,
        }
    };
    // Watching every symbol quoted, it forwards each tick's frame as it is,
    // with no check per update.
    let everything = watched.len() >= universe;
    let mut feed = frames.subscribe();
    if tx.send(Message::text(r#"{"type":"subscribed","symbols":[]}"#)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            frame = feed.recv() => match frame {
                Ok(tick) => {
                    let mine = tick.fragments.iter().filter(|f| watched.contains(&f.symbol));
                    let frame = if everything || mine.clone().count() == tick.fragments.len() {
                        tick.frame.clone()
                    } else if mine.clone().next().is_some() {
                        Utf8Bytes::try_from(price_update(mine)).expect("frames are UTF-8 JSON")
                    } else {
                        continue;
                    };
                    if tx.send(Message::Text(frame)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    skipped.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = rx.next() => if !matches!(message, Some(Ok(_))) {
                return;
            },
        }
    }
    let _ = tx.send(Message::Close(None)).await;
}
