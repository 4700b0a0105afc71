//! Finnhub `/api/v1/quote`: one symbol per request, `c` the current price
//! and `t` its Unix time. An unknown symbol comes back as all zeros.

use lizards_shared::Symbol;
use serde_json::Value;

use super::{
    Api, Item, RawRecord, Request, Response, SourceError, encode, is_stock,
    parse::{self, item_error},
    with_slash,
};

pub const ID: &str = "finnhub";
pub const DEFAULT_URL: &str = "https://finnhub.io/";

pub struct Finnhub {
    base: String,
    key: String,
}

impl Finnhub {
    pub fn new(base: &str, key: String) -> Finnhub {
        Finnhub { base: with_slash(base), key }
    }
}

impl Api for Finnhub {
    fn id(&self) -> &str {
        ID
    }

    fn kind(&self) -> &'static str {
        ID
    }

    fn base_url(&self) -> &str {
        &self.base
    }

    fn covers(&self, symbol: &Symbol) -> bool {
        is_stock(symbol)
    }

    fn request(&self, symbols: &[Symbol]) -> Request {
        let symbol = encode(symbols[0].as_str());
        let mut request = Request::get(format!("{}api/v1/quote?symbol={symbol}", self.base));
        request.headers.push(("X-Finnhub-Token", self.key.clone()));
        request
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        let doc = parse::json(response)?;
        if let Some(message) = doc.get("error").and_then(Value::as_str) {
            return Err(SourceError::Refused(message.to_string()));
        }
        if response.status != 200 {
            return Err(SourceError::Status(response.status));
        }
        let symbol = &symbols[0];
        let item = (|| {
            let price = parse::number(&doc, "c")?;
            let time = doc.get("t").and_then(Value::as_i64);
            if price == 0.0 && time == Some(0) {
                return Err(SourceError::UnknownSymbol);
            }
            let price = parse::price(price)?;
            let ts = parse::unix_time(&doc, "t", false)?;
            Ok(RawRecord::new(ID, symbol, price, ts, None, doc.clone()))
        })();
        Ok(vec![item.map_err(|error| item_error(symbol, error, &doc))])
    }
}
