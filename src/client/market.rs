//! `quote`, `mean`, `history`: prices anyone may read.

use chrono::{DateTime, Local};
use lizards_shared::{Symbol, store::CandleInterval};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::{
    Client,
    api::ClientError,
    table::{Table, Tone, price},
};

/// `/quotes/<symbol>`, the symbol percent-encoded (`^GSPC`).
pub fn quotes_path(symbol: &Symbol) -> String {
    format!("/quotes/{}", utf8_percent_encode(symbol.as_str(), NON_ALPHANUMERIC))
}

/// An RFC 3339 time from the API in the local zone, or the text as given.
pub fn local_time(text: &str, format: &str) -> String {
    match DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.with_timezone(&Local).format(format).to_string(),
        Err(_) => text.to_string(),
    }
}

fn number(value: &Value) -> String {
    value.as_f64().map(price).unwrap_or_else(|| "—".into())
}

impl Client {
    /// Every symbol's latest quote; the symbols without one are reported
    /// after the table, and the first of those errors is the result.
    pub(super) async fn quote(&self, symbols: &[Symbol]) -> Result<(), ClientError> {
        let mut table = Table::new(&["SYMBOL", "PRICE", "TIME", "SOURCE"]);
        let mut failures = Vec::new();
        for symbol in symbols {
            match self.api.get(&quotes_path(symbol)).await {
                Ok(quote) => table.plain(vec![
                    symbol.to_string(),
                    number(&quote["price"]),
                    local_time(quote["timestamp"].as_str().unwrap_or_default(), "%Y-%m-%d %H:%M:%S%.3f"),
                    quote["source"].as_str().unwrap_or_default().to_string(),
                ]),
                Err(error) => failures.push(error),
            }
        }
        if failures.len() < symbols.len() {
            print!("{}", table.render(self.style));
        }
        let mut failures = failures.into_iter();
        let first = failures.next();
        for error in failures {
            eprintln!("error: {error}");
        }
        first.map_or(Ok(()), Err)
    }

    pub(super) async fn mean(&self, symbol: &Symbol, last: u32) -> Result<(), ClientError> {
        let mean = self.api.get(&format!("{}/mean?last={last}", quotes_path(symbol))).await?;
        let count = mean["count"].as_u64().unwrap_or_default();
        let note = if count < u64::from(last) { format!(" (only {count} stored)") } else { String::new() };
        println!("{symbol}: mean of the last {count} prices is {}{note}", number(&mean["mean"]));
        Ok(())
    }

    pub(super) async fn history(
        &self,
        symbol: &Symbol,
        limit: u32,
        interval: Option<CandleInterval>,
    ) -> Result<(), ClientError> {
        let path = quotes_path(symbol);
        let (rows, table) = match interval {
            None => {
                let history = self.api.get(&format!("{path}/history?limit={limit}")).await?;
                let mut table = Table::new(&["TIME", "PRICE", "VOLUME", "SOURCE"]);
                let quotes = history["quotes"].as_array().cloned().unwrap_or_default();
                for quote in &quotes {
                    table.plain(vec![
                        local_time(quote["timestamp"].as_str().unwrap_or_default(), "%Y-%m-%d %H:%M:%S%.3f"),
                        number(&quote["price"]),
                        quote["volume"].as_f64().map(|v| format!("{v}")).unwrap_or_default(),
                        quote["source"].as_str().unwrap_or_default().to_string(),
                    ]);
                }
                (quotes.len(), table)
            }
            Some(interval) => {
                let query = format!("{path}/candles?interval={}&limit={limit}", interval.as_str());
                let body = self.api.get(&query).await?;
                let mut table = Table::new(&["START", "OPEN", "HIGH", "LOW", "CLOSE", "QUOTES"]);
                let candles = body["candles"].as_array().cloned().unwrap_or_default();
                for candle in &candles {
                    let (open, close) = (candle["open"].as_f64(), candle["close"].as_f64());
                    let tone = Tone::of(close.unwrap_or_default() - open.unwrap_or_default());
                    table.row(vec![
                        (local_time(candle["start"].as_str().unwrap_or_default(), "%Y-%m-%d %H:%M"), Tone::Plain),
                        (number(&candle["open"]), Tone::Plain),
                        (number(&candle["high"]), Tone::Plain),
                        (number(&candle["low"]), Tone::Plain),
                        (number(&candle["close"]), tone),
                        (candle["count"].to_string(), Tone::Plain),
                    ]);
                }
                (candles.len(), table)
            }
        };
        if rows == 0 {
            println!("No prices stored for {symbol} yet.");
        } else {
            print!("{}", table.render(self.style));
        }
        Ok(())
    }
}
