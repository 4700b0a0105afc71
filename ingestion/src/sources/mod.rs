//! Quote sources. Each source is a module: `synthetic` produces prices
//! itself; every other one is an [`Api`] on the web (request building and
//! parsing), run by a [`crate::poller::Poller`] that adds the circuit
//! breaker, the outbound rate limit, timeouts, backoff and the lease. The
//! pipeline does not know which kind of source a record came from.

pub mod alphavantage;
pub mod binance;
pub mod coingecko;
pub mod enabled;
pub mod finnhub;
pub mod html;
pub mod http;
pub mod parse;
pub mod stooq;
pub mod synthetic;
pub mod yahoo;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lizards_shared::{Symbol, shutdown::Shutdown};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// A record as a source produced it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub source: String,
    /// Symbol text as the source gave it (mapped to Lizards' naming).
    pub symbol: String,
    pub price: f64,
    /// The source's time of the observation.
    pub ts: DateTime<Utc>,
    pub volume: Option<f64>,
    /// The document as received, kept in the raw store.
    pub body: Value,
}

impl RawRecord {
    pub fn new(source: &str, symbol: &Symbol, price: f64, ts: DateTime<Utc>, volume: Option<f64>, body: Value) -> Self {
        RawRecord { source: source.to_string(), symbol: symbol.to_string(), price, ts, volume, body }
    }
}

/// Why a source produced nothing, or nothing usable for one symbol. Every
/// failure of the network or of a document is one of these, never a panic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    #[error("the source refused: too many requests (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the source answered HTTP {0}")]
    Status(u16),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the source: {0}")]
    Network(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("truncated body: {0}")]
    Truncated(String),
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("missing field '{0}'")]
    MissingField(String),
    #[error("field '{field}': expected {expected}, found {found}")]
    WrongType { field: String, expected: &'static str, found: String },
    #[error("selector '{0}' matched nothing")]
    MissingSelector(String),
    #[error("invalid price {0}: must be a finite number greater than zero")]
    InvalidPrice(String),
    #[error("the source does not know this symbol")]
    UnknownSymbol,
    #[error("the source answered with an error: {0}")]
    Refused(String),
    #[error("circuit breaker open")]
    CircuitOpen,
    #[error("outbound rate limit: next call allowed in {0:?}")]
    Throttled(Duration),
}

impl SourceError {
    /// Metric label and stored reject reason.
    pub fn label(&self) -> &'static str {
        match self {
            SourceError::RateLimited { .. } => "rate_limited",
            SourceError::Status(_) => "http_status",
            SourceError::Timeout(_) => "timeout",
            SourceError::Network(_) => "network",
            SourceError::TooLarge(_) => "too_large",
            SourceError::Truncated(_) => "truncated",
            SourceError::Malformed(_) => "malformed",
            SourceError::MissingField(_) => "missing_field",
            SourceError::WrongType { .. } => "wrong_type",
            SourceError::MissingSelector(_) => "missing_selector",
            SourceError::InvalidPrice(_) => "invalid_price",
            SourceError::UnknownSymbol => "unknown_symbol",
            SourceError::Refused(_) => "refused",
            SourceError::CircuitOpen => "circuit_open",
            SourceError::Throttled(_) => "throttled",
        }
    }
}

/// One symbol's data that a source answered but that cannot become a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{symbol}: {error}")]
pub struct ItemError {
    pub symbol: Symbol,
    pub error: SourceError,
    /// The part of the document about this symbol, kept with the reject.
    pub body: Value,
}

/// One symbol's outcome within a fetched document.
pub type Item = Result<RawRecord, Box<ItemError>>;

/// An HTTP request a source wants sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Request {
    pub fn get(url: String) -> Request {
        Request { url, headers: Vec::new() }
    }
}

/// A response the HTTP layer read completely: a 2xx, or a 4xx other than
/// 429 (some APIs answer "unknown symbol" that way).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    pub received_at: DateTime<Utc>,
}

/// A quote API on the web: what to ask for which symbols, and how to read
/// the answer. Errors about the whole document are `Err`; errors about one
/// symbol are `Err` items, so one bad symbol does not hide the others.
pub trait Api: Send + Sync + 'static {
    /// Source id in quotes, metrics and settings (`yahoo`, `coingecko`, ...).
    fn id(&self) -> &str;
    /// Kind of source (`html` for every scraper, else the id).
    fn kind(&self) -> &'static str;
    fn base_url(&self) -> &str;
    /// Most symbols one request can carry.
    fn max_batch(&self) -> usize {
        1
    }
    /// Whether the source can quote `symbol` at all (no network involved),
    /// e.g. CoinGecko only its coins.
    fn covers(&self, _symbol: &Symbol) -> bool {
        true
    }
    fn request(&self, symbols: &[Symbol]) -> Request;
    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError>;
}

/// Characters escaped in a URL path segment or query value: everything
/// but RFC 3986's unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `text` escaped for a URL path segment or query value.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A stock symbol, as the stock-only APIs (Alpha Vantage, Finnhub, Stooq)
/// can quote: Lizards writes crypto pairs `BTC-USD`, stocks without `-`.
pub fn is_stock(symbol: &Symbol) -> bool {
    !symbol.as_str().contains('-')
}

/// A base URL ending in `/`, so paths can be appended.
pub fn with_slash(base: &str) -> String {
    if base.ends_with('/') { base.to_string() } else { format!("{base}/") }
}

/// One request to `api` for `symbols` and its parsed answer: no breaker,
/// no rate limit (the poller adds those).
pub async fn fetch(api: &dyn Api, http: &http::HttpGet, symbols: &[Symbol]) -> Result<Vec<Item>, SourceError> {
    let response = http.send(&api.request(symbols)).await?;
    api.parse(symbols, &response)
}

/// What a source said about a symbol.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Unknown,
    /// Known; with the records fetched while finding out (published at once).
    Known(Vec<RawRecord>),
}

/// `GET /sources/status` entry.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub id: String,
    pub kind: &'static str,
    pub base_url: String,
    pub enabled: bool,
    /// How a polled source is doing (absent for `synthetic`).
    #[serde(flatten)]
    pub polling: Option<crate::poller::PollStatus>,
}

/// A running source, as the service sees it.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Base URL of the source (`GET /sources`).
    fn base_url(&self) -> &str;
    /// Whether this source can quote `symbol`.
    async fn lookup(&self, symbol: &Symbol) -> Result<Lookup, SourceError>;
    /// Produces records into `out` until `shutdown`.
    async fn run(&self, out: mpsc::Sender<RawRecord>, shutdown: Shutdown);
    fn status(&self) -> SourceStatus;
}
