//! Every web source against a local fixture server serving realistic
//! payloads: the fixture parses into the right quotes, and everything a
//! real site does wrong comes back as a typed error, never a panic.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use lizards_ingestion::sources::{
    Api, Item, SourceError, alphavantage::AlphaVantage, binance::Binance, coingecko::CoinGecko, fetch,
    finnhub::Finnhub, html, http::HttpGet, stooq::Stooq, yahoo::Yahoo,
};
use lizards_shared::Symbol;
use lizards_testkit::fixture::{Fixture, Reply};

const YAHOO: &str = include_str!("../fixtures/yahoo_chart.json");
const YAHOO_NOT_FOUND: &str = include_str!("../fixtures/yahoo_not_found.json");
const COINGECKO: &str = include_str!("../fixtures/coingecko_simple_price.json");
const ALPHAVANTAGE: &str = include_str!("../fixtures/alphavantage_global_quote.json");
const ALPHAVANTAGE_LIMIT: &str = include_str!("../fixtures/alphavantage_rate_limited.json");
const FINNHUB: &str = include_str!("../fixtures/finnhub_quote.json");
const FINNHUB_UNKNOWN: &str = include_str!("../fixtures/finnhub_unknown.json");
const BINANCE: &str = include_str!("../fixtures/binance_ticker_price.json");
const STOOQ: &str = include_str!("../fixtures/stooq_quote.csv");
const STOOQ_UNKNOWN: &str = include_str!("../fixtures/stooq_unknown.csv");
const HTML: &str = include_str!("../fixtures/html_quote.html");

/// Short, so the slow-server case is quick.
const TIMEOUT: Duration = Duration::from_millis(500);

fn sym(text: &str) -> Symbol {
    Symbol::parse(text).expect("valid symbol")
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("valid time")
}

/// One source with its fixture and the ways to spoil it.
struct Case {
    name: &'static str,
    api: Arc<dyn Api>,
    symbols: Vec<Symbol>,
    good: Reply,
    /// `(symbol, price, time, volume)` the good fixture holds.
    expected: Vec<(&'static str, f64, DateTime<Utc>, Option<f64>)>,
    /// The good body with the first symbol's price written as given.
    with_price: fn(&str) -> String,
    missing_field: String,
    wrong_type: String,
    unknown: Option<Reply>,
    content_type: &'static str,
    good_body: &'static str,
}

fn json_case(name: &'static str, api: Arc<dyn Api>, symbols: &[&str], body: &'static str) -> Case {
    Case {
        name,
        api,
        symbols: symbols.iter().map(|s| sym(s)).collect(),
        good: Reply::json(body),
        expected: Vec::new(),
        with_price: |_| String::new(),
        missing_field: String::new(),
        wrong_type: String::new(),
        unknown: None,
        content_type: "application/json",
        good_body: body,
    }
}

fn cases(base: &str) -> Vec<Case> {
    let mut yahoo = json_case("yahoo", Arc::new(Yahoo::new(base)), &["AAPL"], YAHOO);
    yahoo.expected = vec![("AAPL", 222.5, at("2024-09-13T20:00:01Z"), Some(36_766_619.0))];
    yahoo.with_price = |p| YAHOO.replace(r#""regularMarketPrice":222.5"#, &format!(r#""regularMarketPrice":{p}"#));
    yahoo.missing_field = YAHOO.replace(r#""regularMarketPrice":222.5,"#, "");
    yahoo.wrong_type = YAHOO.replace(r#""regularMarketPrice":222.5"#, r#""regularMarketPrice":"222.5""#);
    yahoo.unknown = Some(Reply::status(404, YAHOO_NOT_FOUND));

    let mut coingecko =
        json_case("coingecko", Arc::new(CoinGecko::new(base, None)), &["BTC-USD", "ETH-USD", "DOGE-USD"], COINGECKO);
    coingecko.expected = vec![
        ("BTC-USD", 60123.45, at("2024-09-13T19:59:50Z"), Some(31_456_789_012.5)),
        ("ETH-USD", 2412.07, at("2024-09-13T19:59:55Z"), Some(14_321_098_765.1)),
        ("DOGE-USD", 0.1023, at("2024-09-13T19:59:48Z"), Some(512_345_678.9)),
    ];
    coingecko.with_price = |p| COINGECKO.replace(r#""usd":60123.45"#, &format!(r#""usd":{p}"#));
    coingecko.missing_field = COINGECKO.replace(r#""usd":60123.45,"#, "");
    coingecko.wrong_type = COINGECKO.replace(r#""usd":60123.45"#, r#""usd":[60123.45]"#);
    coingecko.unknown = Some(Reply::json("{}"));

    let mut alpha = json_case("alphavantage", Arc::new(AlphaVantage::new(base, "demo".into())), &["IBM"], ALPHAVANTAGE);
    alpha.expected = vec![("IBM", 216.32, at("2024-09-13T21:00:00Z"), Some(3_286_612.0))];
    alpha.with_price = |p| ALPHAVANTAGE.replace(r#""05. price": "216.3200""#, &format!(r#""05. price": "{p}""#));
    alpha.missing_field = ALPHAVANTAGE.replace(r#""05. price": "216.3200","#, "");
    alpha.wrong_type = ALPHAVANTAGE.replace(r#""05. price": "216.3200""#, r#""05. price": 216.32"#);
    alpha.unknown = Some(Reply::json(r#"{"Global Quote": {}}"#));

    let mut finnhub = json_case("finnhub", Arc::new(Finnhub::new(base, "key".into())), &["AAPL"], FINNHUB);
    finnhub.expected = vec![("AAPL", 222.5, at("2024-09-13T20:00:01Z"), None)];
    finnhub.with_price = |p| FINNHUB.replace(r#""c":222.5"#, &format!(r#""c":{p}"#));
    finnhub.missing_field = FINNHUB.replace(r#""c":222.5,"#, "");
    finnhub.wrong_type = FINNHUB.replace(r#""c":222.5"#, r#""c":"222.5""#);
    finnhub.unknown = Some(Reply::json(FINNHUB_UNKNOWN));

    let mut binance = json_case("binance", Arc::new(Binance::new(base)), &["BTC-USD", "DOGE-USD"], BINANCE);
    binance.with_price = |p| BINANCE.replace(r#""price":"60118.01000000""#, &format!(r#""price":"{p}""#));
    binance.missing_field = BINANCE.replace(r#","price":"60118.01000000""#, "");
    binance.wrong_type = BINANCE.replace(r#""price":"60118.01000000""#, r#""price":60118.01"#);
    binance.unknown = Some(Reply::json(r#"[{"symbol":"ETHBTC","price":"0.04"}]"#));

    let mut stooq = json_case("stooq", Arc::new(Stooq::new(base)), &["AAPL"], STOOQ);
    stooq.good = Reply::Ok { content_type: "text/csv", body: STOOQ.into() };
    stooq.content_type = "text/csv";
    stooq.expected = vec![("AAPL", 222.5, at("2024-09-13T20:00:09Z"), Some(36_766_619.0))];
    stooq.with_price = |p| STOOQ.replace(",222.5,", &format!(",{p},"));
    stooq.missing_field = STOOQ.replace("Close,", "").replace(",222.5,", ",");
    stooq.wrong_type = STOOQ.replace(",222.5,", ",twenty,");
    stooq.unknown = Some(Reply::Ok { content_type: "text/csv", body: STOOQ_UNKNOWN.into() });

    let page = html::PageConfig {
        id: "acme".into(),
        url: format!("{base}quote/{{symbol}}"),
        price: "span.price".into(),
        time: Some("time.updated".into()),
        volume: Some("td.volume".into()),
        symbols: Vec::new(),
        interval: None,
        rate_limit: None,
    };
    let mut page = json_case("html", Arc::new(html::HtmlPage::new(page).expect("valid page")), &["ACME"], HTML);
    page.good = Reply::Ok { content_type: "text/html", body: HTML.into() };
    page.content_type = "text/html";
    page.expected = vec![("ACME", 1234.5, at("2024-09-13T20:00:01Z"), Some(1_204_311.0))];
    page.with_price = |p| HTML.replace("$1,234.50", p);
    page.missing_field = HTML.replace(r#"<span class="price" data-field="price">$1,234.50</span>"#, "");
    page.wrong_type = HTML.replace("$1,234.50", "n/a");
    page.unknown =
        Some(Reply::Status { status: 404, content_type: "text/html", body: "<h1>No such quote</h1>".into() });

    // The binance fixture has no times: they are the arrival times.
    vec![yahoo, coingecko, alpha, finnhub, binance, stooq, page]
}

async fn fetch_with(case: &Case, fixture: &Fixture, reply: Reply) -> Result<Vec<Item>, SourceError> {
    fixture.fail_with(reply);
    fetch(case.api.as_ref(), &HttpGet::new(TIMEOUT), &case.symbols[..1]).await
}

/// The one error a fetch for one symbol came back with: the document's, or
/// its only item's.
fn error_of(case: &Case, result: Result<Vec<Item>, SourceError>) -> SourceError {
    match result {
        Err(error) => error,
        Ok(items) => match items.as_slice() {
            [Err(item)] => item.error.clone(),
            other => panic!("{}: expected one error, got {other:?}", case.name),
        },
    }
}

async fn each_case(check: impl AsyncFn(&Case, &Fixture)) {
    let fixture = Fixture::start().await;
    for case in cases(&fixture.url()) {
        check(&case, &fixture).await;
    }
}

fn body(case: &Case, text: String) -> Reply {
    Reply::Ok { content_type: case.content_type, body: text }
}

#[tokio::test]
async fn each_source_parses_its_fixture_into_the_right_quotes() {
    each_case(async |case, fixture| {
        let before = Utc::now();
        fixture.fail_with(case.good.clone());
        let items = fetch(case.api.as_ref(), &HttpGet::new(TIMEOUT), &case.symbols).await;
        let items = items.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(items.len(), case.symbols.len(), "{}: one item per symbol", case.name);
        for (item, symbol) in items.iter().zip(&case.symbols) {
            let record = item.as_ref().unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(record.source, case.api.id(), "{}", case.name);
            assert_eq!(record.symbol, symbol.as_str(), "{}", case.name);
            assert!(record.body.is_object(), "{}: the raw part is kept", case.name);
            match case.expected.iter().find(|(s, ..)| *s == symbol.as_str()) {
                Some((_, price, ts, volume)) => {
                    assert_eq!((record.price, record.ts, record.volume), (*price, *ts, *volume), "{}", case.name);
                }
                // Binance: no times in the document.
                None => assert!(record.ts >= before && record.price > 0.0, "{}: {record:?}", case.name),
            }
        }
    })
    .await;
    let fixture = Fixture::start().await;
    fixture.fail_with(Reply::json(BINANCE));
    let items = fetch(&Binance::new(&fixture.url()), &HttpGet::new(TIMEOUT), &[sym("BTC-USD"), sym("DOGE-USD")]).await;
    let prices: Vec<f64> = items.unwrap().into_iter().map(|i| i.unwrap().price).collect();
    assert_eq!(prices, vec![60118.01, 0.10231]);
}

#[tokio::test]
async fn http_429_is_rate_limited_with_the_retry_after() {
    each_case(async |case, fixture| {
        let error = error_of(case, fetch_with(case, fixture, Reply::status(429, r#"{"error":"slow down"}"#)).await);
        assert_eq!(error, SourceError::RateLimited { retry_after: Some(Duration::from_secs(7)) }, "{}", case.name);
    })
    .await;
    // Alpha Vantage says it with a 200 and a notice.
    let fixture = Fixture::start().await;
    fixture.fail_with(Reply::json(ALPHAVANTAGE_LIMIT));
    let error = fetch(&AlphaVantage::new(&fixture.url(), "demo".into()), &HttpGet::new(TIMEOUT), &[sym("IBM")]).await;
    assert_eq!(error, Err(SourceError::RateLimited { retry_after: None }));
}

#[tokio::test]
async fn http_500_is_a_status_error() {
    each_case(async |case, fixture| {
        let reply = Reply::Status { status: 500, content_type: "text/html", body: "<h1>Internal error</h1>".into() };
        let error = error_of(case, fetch_with(case, fixture, reply).await);
        assert_eq!(error, SourceError::Status(500), "{}", case.name);
    })
    .await;
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_a_timeout() {
    each_case(async |case, fixture| {
        let reply = Reply::Slow(Duration::from_secs(3), Box::new(case.good.clone()));
        let error = error_of(case, fetch_with(case, fixture, reply).await);
        assert_eq!(error, SourceError::Timeout(TIMEOUT), "{}", case.name);
    })
    .await;
}

#[tokio::test]
async fn a_body_cut_off_mid_transfer_is_truncated() {
    each_case(async |case, fixture| {
        let reply = Reply::CutOff { body: case.good_body[..case.good_body.len() / 2].to_string(), claimed: 100_000 };
        let error = error_of(case, fetch_with(case, fixture, reply).await);
        assert!(matches!(error, SourceError::Truncated(_)), "{}: {error:?}", case.name);
    })
    .await;
}

#[tokio::test]
async fn a_document_that_ends_early_is_truncated_or_lacks_its_price() {
    each_case(async |case, fixture| {
        let half = case.good_body[..case.good_body.len() / 2].to_string();
        let error = error_of(case, fetch_with(case, fixture, body(case, half)).await);
        let expected = match case.name {
            // HTML parsers accept any prefix; the price is simply not there.
            "html" => matches!(error, SourceError::MissingSelector(_)),
            _ => matches!(error, SourceError::Truncated(_)),
        };
        assert!(expected, "{}: {error:?}", case.name);
    })
    .await;
}

#[tokio::test]
async fn a_10_mb_body_is_refused_with_or_without_its_length() {
    each_case(async |case, fixture| {
        for declared in [true, false] {
            let reply = Reply::Huge { size: 10 * 1024 * 1024, declared };
            let error = error_of(case, fetch_with(case, fixture, reply).await);
            assert!(matches!(error, SourceError::TooLarge(_)), "{} (declared {declared}): {error:?}", case.name);
        }
    })
    .await;
}

#[tokio::test]
async fn a_missing_price_field_is_named() {
    each_case(async |case, fixture| {
        let error = error_of(case, fetch_with(case, fixture, body(case, case.missing_field.clone())).await);
        let named = match &error {
            SourceError::MissingField(_) | SourceError::MissingSelector(_) => true,
            // Binance: a ticker without a price.
            _ => false,
        };
        assert!(named, "{}: {error:?}", case.name);
    })
    .await;
}

#[tokio::test]
async fn a_price_of_the_wrong_type_is_named() {
    each_case(async |case, fixture| {
        let error = error_of(case, fetch_with(case, fixture, body(case, case.wrong_type.clone())).await);
        assert!(matches!(error, SourceError::WrongType { .. }), "{}: {error:?}", case.name);
    })
    .await;
}

#[tokio::test]
async fn zero_negative_and_nan_prices_are_invalid() {
    each_case(async |case, fixture| {
        for price in ["0", "-12.5", "NaN"] {
            let error = error_of(case, fetch_with(case, fixture, body(case, (case.with_price)(price))).await);
            let ok = match error {
                SourceError::InvalidPrice(_) => true,
                // JSON has no NaN: a number field holding one is not JSON.
                SourceError::Malformed(_) => price == "NaN",
                _ => false,
            };
            assert!(ok, "{} with price {price}: {error:?}", case.name);
        }
    })
    .await;
}

#[tokio::test]
async fn a_symbol_the_source_does_not_know_is_an_unknown_symbol_item() {
    each_case(async |case, fixture| {
        let reply = case.unknown.clone().expect("every case has an unknown-symbol answer");
        let error = error_of(case, fetch_with(case, fixture, reply).await);
        assert_eq!(error, SourceError::UnknownSymbol, "{}", case.name);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_source_is_a_network_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let yahoo = Yahoo::new(&format!("http://{closed}/"));
    let error = fetch(&yahoo, &HttpGet::new(TIMEOUT), &[sym("AAPL")]).await;
    assert!(matches!(error, Err(SourceError::Network(_))), "{error:?}");
}

#[tokio::test]
async fn requests_carry_the_symbols_and_keys_each_api_expects() {
    let fixture = Fixture::start().await;
    let base = fixture.url();
    fixture.fail_with(Reply::json("{}"));
    let http = HttpGet::new(TIMEOUT);
    let _ = fetch(&Yahoo::new(&base), &http, &[sym("BRK.B")]).await;
    let _ = fetch(&CoinGecko::new(&base, None), &http, &[sym("BTC-USD"), sym("STETH-USD")]).await;
    let _ = fetch(&AlphaVantage::new(&base, "k1".into()), &http, &[sym("IBM")]).await;
    let _ = fetch(&Stooq::new(&base), &http, &[sym("BRK.B")]).await;
    let requests = fixture.requests();
    assert_eq!(requests[0], "/v8/finance/chart/BRK-B?interval=1m&range=1d");
    assert!(requests[1].starts_with("/api/v3/simple/price?ids=bitcoin,staked-ether&vs_currencies=usd"), "{requests:?}");
    assert_eq!(requests[2], "/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=k1");
    assert_eq!(requests[3], "/q/l/?s=brk-b.us&f=sd2t2ohlcv&h&e=csv");
}

#[test]
fn each_source_covers_only_what_it_can_quote() {
    let base = "http://127.0.0.1:1/";
    let coingecko = CoinGecko::new(base, None);
    assert!(coingecko.covers(&sym("BTC-USD")) && !coingecko.covers(&sym("AAPL")));
    let binance = Binance::new(base);
    assert!(binance.covers(&sym("ETH-USD")) && !binance.covers(&sym("USDT-USD")) && !binance.covers(&sym("AAPL")));
    let stooq = Stooq::new(base);
    assert!(stooq.covers(&sym("AAPL")) && !stooq.covers(&sym("BTC-USD")));
}
