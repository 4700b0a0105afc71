//! Binance `/api/v3/ticker/price`: every pair's last price in one request
//! (weight 4), so a batch never fails on one pair Binance does not list.
//! `X-USD` is read from the `XUSDT` pair (USDT standing in for USD); the
//! answer has no time, so the observation time is when it arrived.

use lizards_shared::Symbol;
use serde_json::Value;

use super::{
    Api, Item, RawRecord, Request, Response, SourceError,
    parse::{self, item_error},
    with_slash,
};

pub const ID: &str = "binance";
pub const DEFAULT_URL: &str = "https://api.binance.com/";

pub struct Binance {
    base: String,
}

impl Binance {
    pub fn new(base: &str) -> Binance {
        Binance { base: with_slash(base) }
    }
}

/// `BTC-USD` → `BTCUSDT`; USDT itself has no USD pair.
fn pair(symbol: &Symbol) -> Option<String> {
    let coin = symbol.as_str().strip_suffix("-USD")?;
    (coin != "USDT" && !coin.contains(['-', '.'])).then(|| format!("{coin}USDT"))
}

impl Api for Binance {
    fn id(&self) -> &str {
        ID
    }

    fn kind(&self) -> &'static str {
        ID
    }

    fn base_url(&self) -> &str {
        &self.base
    }

    fn max_batch(&self) -> usize {
        usize::MAX
    }

    fn covers(&self, symbol: &Symbol) -> bool {
        pair(symbol).is_some()
    }

    fn request(&self, _symbols: &[Symbol]) -> Request {
        Request::get(format!("{}api/v3/ticker/price", self.base))
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        let doc = parse::json(response)?;
        if response.status != 200 {
            // `{"code":-1003,"msg":"Too much request weight used..."}`
            let message = doc.get("msg").and_then(Value::as_str).unwrap_or_default();
            return Err(SourceError::Refused(format!("HTTP {}: {message}", response.status)));
        }
        let tickers = doc.as_array().ok_or_else(|| SourceError::WrongType {
            field: "(document)".into(),
            expected: "an array of tickers",
            found: parse::describe(&doc),
        })?;
        let items = symbols
            .iter()
            .map(|symbol| {
                let wanted = pair(symbol);
                let ticker = tickers.iter().find(|t| t.get("symbol").and_then(Value::as_str) == wanted.as_deref());
                let Some(ticker) = ticker else {
                    return Err(item_error(symbol, SourceError::UnknownSymbol, &Value::Null));
                };
                let price = parse::numeric_string(ticker, "price").and_then(parse::price);
                price
                    .map(|price| RawRecord::new(ID, symbol, price, response.received_at, None, ticker.clone()))
                    .map_err(|error| item_error(symbol, error, ticker))
            })
            .collect();
        Ok(items)
    }
}
