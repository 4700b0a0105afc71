//! A time-boxed fuzz pass over the parsers that read untrusted input: the
//! WebSocket client-frame parser, the ingest content parser and
//! `Symbol::parse`. Random and structured inputs (proptest strategies) run
//! until the time is up; each property must hold for every input. Not part
//! of CI (the tests are ignored): `scripts/fuzz.sh [seconds]` runs them,
//! `FUZZ_SECONDS` each (default 60). docs/security.md records what they found.

use std::time::{Duration, Instant};

use chrono::Utc;
use lizards_ingestion::ingest::{self, MAX_ITEMS};
use lizards_shared::{
    Symbol,
    protocol::{ClientRequest, parse_client_frame},
    symbol::MAX_LEN,
};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestRunner},
};
use serde_json::{Value, json};

/// Longest message a refusal may carry back to a client: an error must
/// not echo its input whole (a 64 KiB frame, reflected).
const MAX_MESSAGE: usize = 256;

fn budget() -> Duration {
    let seconds = std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(seconds)
}

/// Runs `check` on values of `strategy` until the budget is spent; the
/// first failure names its input.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(&S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config::default());
    let deadline = Instant::now() + budget();
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let value = strategy.new_tree(&mut runner).expect("a value").current();
        if let Err(problem) = check(&value) {
            panic!("{name}: {problem}\ninput: {value:?}");
        }
        cases += 1;
    }
    eprintln!("{name}: {cases} inputs, every property held");
}

/// Any JSON value, a few levels deep, with strings that look like what
/// the parsers expect as often as strings that do not.
fn json_value() -> impl Strategy<Value = Value> {
    let text = prop_oneof![any::<String>(), "[A-Za-z0-9.^=-]{0,24}", Just("AAPL".to_string())];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text.prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Client frames: well-formed ones with ill-typed or extreme fields, any
/// JSON, and any text.
fn client_frame() -> impl Strategy<Value = String> {
    let kind =
        prop_oneof![Just("subscribe"), Just("unsubscribe"), Just("list"), Just("ping"), Just("auth"), Just("nonsense")];
    let structured = (kind, json_value(), json_value(), json_value(), json_value()).prop_map(
        |(kind, symbols, id, throttle, token)| {
            json!({"type": kind, "symbols": symbols, "id": id, "throttle_ms": throttle, "token": token}).to_string()
        },
    );
    let symbols = prop::collection::vec(prop_oneof![any::<String>(), "[A-Za-z0-9.^=-]{0,2000}"], 0..40)
        .prop_map(|symbols| json!({"type": "subscribe", "symbols": symbols}).to_string());
    prop_oneof![structured, symbols, json_value().prop_map(|v| v.to_string()), any::<String>()]
}

#[test]
#[ignore = "a fuzz pass: scripts/fuzz.sh"]
fn client_frames_never_panic_and_refusals_stay_short() {
    fuzz("client frame", client_frame(), |text| match parse_client_frame(text, 1024) {
        Err(error) if error.to_string().len() > MAX_MESSAGE => {
            Err(format!("a {} byte refusal", error.to_string().len()))
        }
        Ok(ClientRequest::Subscribe { symbols, .. }) | Ok(ClientRequest::Unsubscribe { symbols, .. }) => {
            if symbols.len() > 1024 {
                return Err(format!("{} symbols past the limit", symbols.len()));
            }
            for symbol in symbols.iter().filter_map(|s| s.as_ref().err()) {
                if symbol.to_string().len() > MAX_MESSAGE {
                    return Err(format!("a {} byte symbol refusal", symbol.to_string().len()));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    });
}

#[test]
#[ignore = "a fuzz pass: scripts/fuzz.sh"]
fn ingest_content_never_panics_and_stays_within_its_limits() {
    let item = || {
        (json_value(), json_value(), json_value(), json_value(), json_value()).prop_map(
            |(symbol, price, timestamp, source, volume)| {
                json!({"symbol": symbol, "price": price, "timestamp": timestamp, "source": source, "volume": volume})
            },
        )
    };
    let content = prop_oneof![
        prop::collection::vec(item(), 0..50).prop_map(|items| Value::from(items).to_string().into_bytes()),
        item().prop_map(|item| item.to_string().into_bytes()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..512),
    ];
    fuzz("ingest content", content, |bytes| {
        let Ok(items) = ingest::parse(bytes, Utc::now()) else { return Ok(()) };
        if items.len() > MAX_ITEMS {
            return Err(format!("{} items past the limit", items.len()));
        }
        for record in items.iter().flatten() {
            let plain = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
            if record.source.is_empty() || record.source.len() > 32 || !record.source.chars().all(plain) {
                return Err(format!("source {:?} became a record", record.source));
            }
        }
        Ok(())
    });
}

#[test]
#[ignore = "a fuzz pass: scripts/fuzz.sh"]
fn symbols_parse_to_the_documented_form_or_a_short_refusal() {
    let text = prop_oneof![any::<String>(), "[A-Za-z0-9.^=-]{0,30}", "\\PC{0,3000}"];
    fuzz("symbol", text, |text| match Symbol::parse(text) {
        Ok(symbol) => {
            let form = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || ".-^=".contains(c);
            let s = symbol.as_str();
            if s.is_empty() || s.len() > MAX_LEN || !s.chars().all(form) {
                return Err(format!("parsed to {s:?}"));
            }
            if Symbol::parse(s).as_ref() != Ok(&symbol) {
                return Err(format!("{s:?} does not parse to itself"));
            }
            Ok(())
        }
        Err(error) if error.to_string().len() > MAX_MESSAGE => {
            Err(format!("a {} byte refusal", error.to_string().len()))
        }
        Err(_) => Ok(()),
    });
}
