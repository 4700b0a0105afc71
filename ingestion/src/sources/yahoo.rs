//! Yahoo Finance chart API (`/v8/finance/chart/{symbol}`): one symbol per
//! request, price and time from `chart.result[0].meta`. Symbols use Yahoo's
//! own naming, which is Lizards' (`AAPL`, `BRK-B`, `BTC-USD`).

use lizards_shared::Symbol;
use serde_json::Value;

use super::{
    Api, Item, RawRecord, Request, Response, SourceError, encode,
    parse::{self, item_error},
    with_slash,
};

pub const ID: &str = "yahoo";
pub const DEFAULT_URL: &str = "https://query1.finance.yahoo.com/";

pub struct Yahoo {
    base: String,
}

impl Yahoo {
    pub fn new(base: &str) -> Yahoo {
        Yahoo { base: with_slash(base) }
    }
}

/// Yahoo writes share classes with a dash (`BRK-B`), Lizards with a dot.
fn yahoo_symbol(symbol: &Symbol) -> String {
    symbol.as_str().replace('.', "-")
}

impl Api for Yahoo {
    fn id(&self) -> &str {
        ID
    }

    fn kind(&self) -> &'static str {
        ID
    }

    fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, symbols: &[Symbol]) -> Request {
        let symbol = encode(&yahoo_symbol(&symbols[0]));
        Request::get(format!("{}v8/finance/chart/{symbol}?interval=1m&range=1d", self.base))
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        let symbol = &symbols[0];
        if response.status == 404 {
            // `{"chart":{"result":null,"error":{"code":"Not Found",...}}}`
            let body = parse::json(response).unwrap_or(Value::Null);
            return Ok(vec![Err(item_error(symbol, SourceError::UnknownSymbol, &body))]);
        }
        let doc = parse::json(response)?;
        let chart = parse::field(&doc, "chart")?;
        if chart.get("result").is_some_and(Value::is_null) {
            return Ok(vec![Err(item_error(symbol, SourceError::UnknownSymbol, chart))]);
        }
        if response.status != 200 {
            return Err(SourceError::Status(response.status));
        }
        let results = parse::field(chart, "result")?;
        let meta = results
            .as_array()
            .and_then(|results| results.first())
            .ok_or_else(|| SourceError::MissingField("chart.result[0]".into()))?;
        let meta = parse::field(meta, "meta")?;
        let item = (|| {
            let price = parse::price(parse::number(meta, "regularMarketPrice")?)?;
            let ts = parse::unix_time(meta, "regularMarketTime", false)?;
            let volume = parse::volume(meta.get("regularMarketVolume").and_then(Value::as_f64));
            Ok(RawRecord::new(ID, symbol, price, ts, volume, meta.clone()))
        })();
        Ok(vec![item.map_err(|error| item_error(symbol, error, meta))])
    }
}
