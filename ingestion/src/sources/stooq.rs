//! Stooq quote CSV (`/q/l/?s=aapl.us&f=sd2t2ohlcv&h&e=csv`): one US stock
//! per request; `N/D` fields mean Stooq does not know the symbol. Dates and
//! times are Warsaw local time.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Warsaw;
use lizards_shared::Symbol;
use serde_json::{Map, Value};

use super::{
    Api, Item, RawRecord, Request, Response, SourceError, encode, is_stock,
    parse::{self, item_error},
    with_slash,
};

pub const ID: &str = "stooq";
pub const DEFAULT_URL: &str = "https://stooq.com/";

/// The columns asked for with `f=sd2t2ohlcv`.
const COLUMNS: [&str; 8] = ["Symbol", "Date", "Time", "Open", "High", "Low", "Close", "Volume"];

pub struct Stooq {
    base: String,
}

impl Stooq {
    pub fn new(base: &str) -> Stooq {
        Stooq { base: with_slash(base) }
    }
}

/// `AAPL` → `aapl.us`, `BRK.B` → `brk-b.us`.
fn stooq_symbol(symbol: &Symbol) -> String {
    format!("{}.us", symbol.as_str().to_ascii_lowercase().replace('.', "-"))
}

/// The one data row as column → text, checking the header.
fn row(text: &str) -> Result<Map<String, Value>, SourceError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| SourceError::Malformed(e.to_string()))?.clone();
    if let Some(missing) = COLUMNS.iter().find(|c| !headers.iter().any(|h| h.trim() == **c)) {
        return Err(SourceError::MissingField((*missing).to_string()));
    }
    let record = match reader.records().next() {
        Some(record) => record.map_err(|e| SourceError::Truncated(e.to_string()))?,
        None => return Err(SourceError::Truncated("no data row after the header".into())),
    };
    if record.len() != headers.len() {
        return Err(SourceError::Truncated(format!("{} of {} columns", record.len(), headers.len())));
    }
    Ok(headers.iter().zip(record.iter()).map(|(h, v)| (h.trim().to_string(), Value::from(v.trim()))).collect())
}

fn column<'a>(row: &'a Value, name: &str) -> &'a str {
    row.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn warsaw_time(row: &Value) -> Result<DateTime<Utc>, SourceError> {
    let text = format!("{} {}", column(row, "Date"), column(row, "Time"));
    let local = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").map_err(|_| SourceError::WrongType {
        field: "Date/Time".into(),
        expected: "YYYY-MM-DD HH:MM:SS",
        found: text.clone(),
    })?;
    // An hour that a DST change skips or repeats: the earlier reading.
    Warsaw.from_local_datetime(&local).earliest().map(|t| t.with_timezone(&Utc)).ok_or(SourceError::WrongType {
        field: "Date/Time".into(),
        expected: "a Warsaw local time",
        found: text,
    })
}

impl Api for Stooq {
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
        let symbol = encode(&stooq_symbol(&symbols[0]));
        Request::get(format!("{}q/l/?s={symbol}&f=sd2t2ohlcv&h&e=csv", self.base))
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        if response.status != 200 {
            return Err(SourceError::Status(response.status));
        }
        let symbol = &symbols[0];
        let row = Value::Object(row(parse::text(response)?)?);
        if column(&row, "Close") == "N/D" {
            return Ok(vec![Err(item_error(symbol, SourceError::UnknownSymbol, &row))]);
        }
        let item = (|| {
            let price = parse::price(parse::decimal(column(&row, "Close"), "Close")?)?;
            let ts = warsaw_time(&row)?;
            let volume = parse::volume(column(&row, "Volume").parse().ok());
            Ok(RawRecord::new(ID, symbol, price, ts, volume, row.clone()))
        })();
        Ok(vec![item.map_err(|error| item_error(symbol, error, &row))])
    }
}
