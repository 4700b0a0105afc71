//! Generic HTML scraper: pages described in a TOML file
//! (`HTML_SOURCES_FILE`), each a URL template and CSS selectors for the
//! price and, optionally, its time and volume. Static HTML only.
//!
//! ```toml
//! [[page]]
//! id = "acme"                                    # source id
//! url = "https://quotes.example/q/{symbol}"      # {symbol} is percent-encoded
//! price = "span.price"                           # text such as "1,234.50" or "$228.50"
//! time = "time.updated"                          # optional: `datetime` attribute or text, RFC 3339
//! volume = "td.volume"                           # optional
//! symbols = ["ACME"]                             # optional: the only symbols this page has
//! interval = "60s"                               # optional poll interval
//! rate_limit = "30/1m"                           # optional outbound limit
//! ```
//!
//! The raw document kept for a page is what was read from it (URL and the
//! selected texts), not the whole page.

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use lizards_shared::{Symbol, cache::Quota};
use scraper::{Html, Selector};
use serde::Deserialize;
use serde_json::json;

use super::{
    Api, Item, RawRecord, Request, Response, SourceError, encode,
    parse::{self, item_error},
};

pub const KIND: &str = "html";

/// One `[[page]]` of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    pub id: String,
    pub url: String,
    pub price: String,
    pub time: Option<String>,
    pub volume: Option<String>,
    #[serde(default)]
    pub symbols: Vec<Symbol>,
    #[serde(default, with = "humantime_serde_opt")]
    pub interval: Option<Duration>,
    pub rate_limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    page: Vec<PageConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum HtmlConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path} is not a valid pages file: {error}")]
    Toml { path: String, error: String },
    #[error("page '{id}': {problem}")]
    Page { id: String, problem: String },
}

/// Durations written as `60s`, `5m` (humantime) in the file.
mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom)).transpose()
    }
}

/// Reads and checks every page of the file.
pub fn load(path: &Path) -> Result<Vec<HtmlPage>, HtmlConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| HtmlConfigError::Read { path: shown.clone(), error })?;
    let file: File = toml::from_str(&text).map_err(|e| HtmlConfigError::Toml { path: shown, error: e.to_string() })?;
    file.page.into_iter().map(HtmlPage::new).collect()
}

/// One configured page, selectors compiled.
pub struct HtmlPage {
    pub config: PageConfig,
    price: Selector,
    time: Option<Selector>,
    volume: Option<Selector>,
}

fn selector(id: &str, text: &str) -> Result<Selector, HtmlConfigError> {
    Selector::parse(text)
        .map_err(|e| HtmlConfigError::Page { id: id.to_string(), problem: format!("selector '{text}': {e}") })
}

impl HtmlPage {
    pub fn new(config: PageConfig) -> Result<HtmlPage, HtmlConfigError> {
        let id = config.id.clone();
        let problem = |problem: &str| HtmlConfigError::Page { id: id.clone(), problem: problem.to_string() };
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(problem("id must be letters, digits, '-' or '_'"));
        }
        if !config.url.contains("{symbol}") || !config.url.starts_with("http") {
            return Err(problem("url must be http(s) and contain {symbol}"));
        }
        if let Some(limit) = &config.rate_limit {
            limit.parse::<Quota>().map_err(|e| problem(&format!("rate_limit: {e}")))?;
        }
        Ok(HtmlPage {
            price: selector(&id, &config.price)?,
            time: config.time.as_deref().map(|t| selector(&id, t)).transpose()?,
            volume: config.volume.as_deref().map(|t| selector(&id, t)).transpose()?,
            config,
        })
    }

    /// The outbound limit the file sets, if any (checked in `new`).
    pub fn rate_limit(&self) -> Option<Quota> {
        self.config.rate_limit.as_deref().and_then(|limit| limit.parse().ok())
    }
}

/// The text of the first element `selector` matches.
fn select_text(page: &Html, selector: &Selector, name: &str) -> Result<String, SourceError> {
    let element = page.select(selector).next().ok_or_else(|| SourceError::MissingSelector(name.to_string()))?;
    Ok(element.text().collect::<String>().trim().to_string())
}

/// "$1,234.50" → 1234.5; anything that is not a number is a wrong type.
fn number_text(text: &str, name: &str) -> Result<f64, SourceError> {
    let cleaned: String = text.chars().filter(|c| !matches!(c, ',' | '$' | '€' | '£' | ' ' | '\u{a0}')).collect();
    parse::decimal(&cleaned, name)
}

impl Api for HtmlPage {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn kind(&self) -> &'static str {
        KIND
    }

    fn base_url(&self) -> &str {
        &self.config.url
    }

    fn covers(&self, symbol: &Symbol) -> bool {
        self.config.symbols.is_empty() || self.config.symbols.contains(symbol)
    }

    fn request(&self, symbols: &[Symbol]) -> Request {
        let symbol = encode(symbols[0].as_str());
        Request::get(self.config.url.replace("{symbol}", &symbol))
    }

    fn parse(&self, symbols: &[Symbol], response: &Response) -> Result<Vec<Item>, SourceError> {
        let symbol = &symbols[0];
        let url = self.request(symbols).url;
        if response.status == 404 {
            return Ok(vec![Err(item_error(symbol, SourceError::UnknownSymbol, &json!({ "url": url })))]);
        }
        if response.status != 200 {
            return Err(SourceError::Status(response.status));
        }
        let page = Html::parse_document(parse::text(response)?);
        let price_text = select_text(&page, &self.price, &self.config.price)?;
        let time_text = match (&self.time, &self.config.time) {
            (Some(selector), Some(name)) => {
                let element = page.select(selector).next().ok_or_else(|| SourceError::MissingSelector(name.clone()))?;
                let text = element.value().attr("datetime").map(str::to_string);
                Some(text.unwrap_or_else(|| element.text().collect::<String>().trim().to_string()))
            }
            _ => None,
        };
        let volume_text = match (&self.volume, &self.config.volume) {
            (Some(selector), Some(name)) => Some(select_text(&page, selector, name)?),
            _ => None,
        };
        let body = json!({"url": url, "price": price_text, "time": time_text, "volume": volume_text});
        let item = (|| {
            let price = parse::price(number_text(&price_text, "price")?)?;
            let ts = match &time_text {
                Some(text) => DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
                    SourceError::WrongType { field: "time".into(), expected: "an RFC 3339 time", found: text.clone() }
                })?,
                None => response.received_at,
            };
            let volume = parse::volume(volume_text.as_deref().and_then(|v| number_text(v, "volume").ok()));
            Ok(RawRecord::new(&self.config.id, symbol, price, ts, volume, body.clone()))
        })();
        Ok(vec![item.map_err(|error: SourceError| item_error(symbol, error, &body))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_bad_selectors_or_urls_is_refused_with_the_page_named() {
        let page = |url: &str, price: &str| PageConfig {
            id: "p".into(),
            url: url.into(),
            price: price.into(),
            time: None,
            volume: None,
            symbols: Vec::new(),
            interval: None,
            rate_limit: None,
        };
        assert!(HtmlPage::new(page("http://x/{symbol}", "span.price")).is_ok());
        let error = HtmlPage::new(page("http://x/{symbol}", "span[[")).err().unwrap().to_string();
        assert!(error.contains("page 'p'") && error.contains("span[["), "{error}");
        assert!(HtmlPage::new(page("http://x/", "span")).is_err());
        assert!(HtmlPage::new(page("ftp://x/{symbol}", "span")).is_err());
    }

    #[test]
    fn numbers_may_carry_currency_signs_and_thousands_separators() {
        assert_eq!(number_text("$1,234.50", "p"), Ok(1234.5));
        assert_eq!(number_text(" 228.5 ", "p"), Ok(228.5));
        assert!(number_text("n/a", "p").is_err());
    }
}
