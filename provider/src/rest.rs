//! REST API over quotes: JSON, errors as problem+json.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use chrono::{DateTime, Utc};
use lizards_shared::{
    Quote, Symbol,
    problem::Problem,
    store::{Candle, CandleInterval, QuoteStore},
    time,
};
use serde_json::{Value, json};

use crate::lookup::Snapshots;

pub const DEFAULT_HISTORY: u32 = 1000;
pub const MAX_HISTORY: u32 = 10_000;
pub const DEFAULT_MEAN: u32 = 10;
pub const MAX_MEAN: u32 = 10_000;
pub const DEFAULT_CANDLES: u32 = 500;
pub const MAX_CANDLES: u32 = 5000;
pub const DEFAULT_INTERVAL: CandleInterval = CandleInterval::OneMinute;

#[derive(Clone)]
pub struct RestState {
    pub snapshots: Arc<Snapshots>,
    pub store: Arc<dyn QuoteStore>,
}

pub fn routes(state: RestState) -> Router {
    Router::new()
        .route("/symbols", get(symbols))
        .route("/quotes/{symbol}", get(latest))
        .route("/quotes/{symbol}/history", get(history))
        .route("/quotes/{symbol}/mean", get(mean))
        .route("/quotes/{symbol}/candles", get(candles))
        .with_state(state)
}

type Params = Query<HashMap<String, String>>;

fn quote_json(quote: &Quote) -> Value {
    json!({
        "symbol": quote.symbol,
        "price": quote.price,
        "timestamp": time::rfc3339(&quote.ts),
        "volume": quote.volume,
        "source": quote.source,
    })
}

fn symbol(text: &str) -> Result<Symbol, Problem> {
    Symbol::parse(text).map_err(|e| Problem::bad_request(e.to_string()))
}

fn number(params: &HashMap<String, String>, name: &str, default: u32, max: u32) -> Result<u32, Problem> {
    let Some(text) = params.get(name) else { return Ok(default) };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Problem::bad_request(format!("'{name}' must be an integer from 1 to {max}"))),
    }
}

fn instant(params: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    let Some(text) = params.get(name) else { return Ok(None) };
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| Problem::bad_request(format!("'{name}' must be an RFC 3339 timestamp")))
}

fn candle_json(candle: &Candle) -> Value {
    json!({
        "start": time::rfc3339(&candle.start),
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "count": candle.count,
    })
}

/// A time range whose ends are each optional.
type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `from` and `to`, with `from` not after `to`.
fn range(params: &HashMap<String, String>) -> Result<Range, Problem> {
    let (from, to) = (instant(params, "from")?, instant(params, "to")?);
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        return Err(Problem::bad_request("'from' must not be after 'to'"));
    }
    Ok((from, to))
}

fn database(error: lizards_shared::store::StoreError) -> Problem {
    tracing::warn!(%error, "database query failed");
    Problem::unavailable("history is temporarily unavailable")
}

async fn symbols(State(state): State<RestState>) -> Json<Value> {
    let quotes: Vec<Value> = state.snapshots.all().await.iter().map(quote_json).collect();
    Json(json!({ "symbols": quotes }))
}

async fn latest(State(state): State<RestState>, Path(text): Path<String>) -> Result<Json<Value>, Problem> {
    let symbol = symbol(&text)?;
    match state.snapshots.get(&symbol).await {
        Some(quote) => Ok(Json(quote_json(&quote))),
        None => Err(Problem::not_found(format!("no quote for {symbol}"))),
    }
}

async fn history(
    State(state): State<RestState>,
    Path(text): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, Problem> {
    let symbol = symbol(&text)?;
    let limit = number(&params, "limit", DEFAULT_HISTORY, MAX_HISTORY)?;
    let (from, to) = range(&params)?;
    let quotes = state.store.history(&symbol, from, to, limit).await.map_err(database)?;
    let quotes: Vec<Value> = quotes.iter().map(quote_json).collect();
    Ok(Json(json!({ "symbol": symbol, "count": quotes.len(), "quotes": quotes })))
}

async fn mean(
    State(state): State<RestState>,
    Path(text): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, Problem> {
    let symbol = symbol(&text)?;
    let last = number(&params, "last", DEFAULT_MEAN, MAX_MEAN)?;
    match state.store.mean_of_last(&symbol, last).await.map_err(database)? {
        Some(mean) => Ok(Json(json!({ "symbol": symbol, "mean": mean.mean, "count": mean.count, "last": last }))),
        None => Err(Problem::not_found(format!("no quotes for {symbol}"))),
    }
}

async fn candles(
    State(state): State<RestState>,
    Path(text): Path<String>,
    Query(params): Params,
) -> Result<Json<Value>, Problem> {
    let symbol = symbol(&text)?;
    let interval = match params.get("interval") {
        Some(text) => text.parse().map_err(|e| Problem::bad_request(format!("'interval': {e}")))?,
        None => DEFAULT_INTERVAL,
    };
    let limit = number(&params, "limit", DEFAULT_CANDLES, MAX_CANDLES)?;
    let (from, to) = range(&params)?;
    let candles = state.store.candles(&symbol, interval, from, to, limit).await.map_err(database)?;
    let candles: Vec<Value> = candles.iter().map(candle_json).collect();
    Ok(Json(json!({ "symbol": symbol, "interval": interval.as_str(), "candles": candles })))
}
