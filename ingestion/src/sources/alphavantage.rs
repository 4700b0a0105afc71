//! Alpha Vantage `GLOBAL_QUOTE`: one symbol per request, numbers as
//! strings under numbered keys. The free tier answers over-quota calls with
//! HTTP 200 and a `Note`/`Information` text, read here as a 429.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use lizards_shared::Symbol;
use serde_json::Value;

use super::{
    Api, Item, RawRecord, Request, Response, SourceError, encode, is_stock,
    parse::{self, item_error},
    with_slash,
};

pub const ID: &str = "alphavantage";
pub const DEFAULT_URL: &str = "https://www.alphavantage.co/";

/// The quote only carries its trading day: US markets close at 21:00 UTC
/// at the latest (16:00 New York in winter), so that is when the day's
/// last price is known; before then the observation is "now".
const CLOSE_UTC: NaiveTime = NaiveTime::from_hms_opt(21, 0, 0).expect("a valid time");

pub struct AlphaVantage {
    base: String,
    key: String,
}

impl AlphaVantage {
    pub fn new(base: &str, key: String) -> AlphaVantage {
        AlphaVantage { base: with_slash(base), key }
    }
}

impl Api for AlphaVantage {
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
        let key = encode(&self.key);
        Request::get(format!("{}query?function=GLOBAL_QUOTE&symbol={symbol}&apikey={key}", self.base))
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        if response.status != 200 {
            return Err(SourceError::Status(response.status));
        }
        let symbol = &symbols[0];
        let doc = parse::json(response)?;
        for notice in ["Note", "Information"] {
            if doc.get(notice).is_some() {
                return Err(SourceError::RateLimited { retry_after: None });
            }
        }
        if let Some(message) = doc.get("Error Message") {
            return Err(SourceError::Refused(message.as_str().unwrap_or_default().to_string()));
        }
        let quote = parse::field(&doc, "Global Quote")?;
        if quote.as_object().is_some_and(|fields| fields.is_empty()) {
            return Ok(vec![Err(item_error(symbol, SourceError::UnknownSymbol, quote))]);
        }
        let item = (|| {
            let price = parse::price(parse::numeric_string(quote, "05. price")?)?;
            let day = parse::field(quote, "07. latest trading day")?;
            let day =
                day.as_str().and_then(|text| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()).ok_or_else(|| {
                    SourceError::WrongType {
                        field: "07. latest trading day".into(),
                        expected: "a date YYYY-MM-DD",
                        found: parse::describe(day),
                    }
                })?;
            let close = DateTime::<Utc>::from_naive_utc_and_offset(day.and_time(CLOSE_UTC), Utc);
            let volume = parse::volume(quote.get("06. volume").and_then(Value::as_str).and_then(|v| v.parse().ok()));
            Ok(RawRecord::new(ID, symbol, price, close.min(response.received_at), volume, quote.clone()))
        })();
        Ok(vec![item.map_err(|error| item_error(symbol, error, quote))])
    }
}
