//! One ingest call, shared by the gRPC `DataProcessor/ProcessData`
//! and its REST twin `POST /ingest`: parse the content into raw quotes, push
//! each through the pipeline in order, and report per item. Both APIs answer
//! from the same [`Report`], so they always agree.
//!
//! `content` is one quote object or an array of them:
//! `{"symbol":"AAPL","price":150.23,"timestamp":"2024-09-14T12:34:56.123Z","source":"manual","volume":1200}`.
//! `timestamp` (RFC 3339), `source` and `volume` are optional; a quote without
//! a timestamp gets the time the call was received (the same for every item of
//! the call, so two such quotes of one symbol and source are duplicates).

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
    ser::SerializeStruct,
};
use serde_json::{Map, Value, error::Category};

use crate::{
    metrics::Metrics,
    pipeline::{Outcome, PUBLISH_FAILED, Pipeline},
    sources::RawRecord,
};

/// Most content read in one call: 4 MiB, about 40,000 quotes' worth, so the
/// item limit is what a well-formed call meets first.
pub const MAX_CONTENT_BYTES: usize = 4 * 1024 * 1024;

/// Most quotes in one call.
pub const MAX_ITEMS: usize = 10_000;

/// Source id of quotes that do not name one.
pub const DEFAULT_SOURCE: &str = "manual";

/// Reason of an item that is not a well-formed quote.
pub const INVALID_ITEM: &str = "invalid_item";

/// Items of one call in the pipeline at once. Enough to overlap the raw
/// store's and the broker's round trips; results keep the items' order.
const IN_FLIGHT: usize = 64;

/// Longest `source` id. It becomes a metric label and part of the raw
/// store's key, so it is kept short and plain.
const MAX_SOURCE_LEN: usize = 32;

/// Why a whole call was refused; nothing of it reached the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("content: {0} bytes, at most {MAX_CONTENT_BYTES} (4 MiB) are accepted")]
    TooLarge(usize),
    #[error("content: {0} items, at most {MAX_ITEMS} are accepted per call")]
    TooManyItems(usize),
    #[error("content: not JSON ({0})")]
    Malformed(String),
    #[error("content: expected a quote object or an array of quote objects")]
    NotQuotes,
    #[error("content: empty array, send at least one quote")]
    Empty,
}

/// Why one item is not a well-formed quote: `price: expected a number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ItemError {
    pub field: &'static str,
    pub problem: &'static str,
}

impl ItemError {
    fn new(field: &'static str, problem: &'static str) -> ItemError {
        ItemError { field, problem }
    }
}

/// The content's items in order, each a raw record or why it is not one.
pub type Items = Vec<Result<RawRecord, ItemError>>;

/// Parses a call's content, with `now` as the time of quotes without one.
pub fn parse(content: &[u8], now: DateTime<Utc>) -> Result<Items, ContentError> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ContentError::TooLarge(content.len()));
    }
    let items = match serde_json::from_slice::<Content>(content) {
        Ok(Content::One(item)) => vec![item],
        Ok(Content::Many(items)) if items.is_empty() => return Err(ContentError::Empty),
        Ok(Content::Many(items)) => items,
        Ok(Content::TooMany(count)) => return Err(ContentError::TooManyItems(count)),
        // Data errors come from `Content`'s visitor: valid JSON of another shape.
        Err(error) if error.classify() == Category::Data => return Err(ContentError::NotQuotes),
        Err(error) => return Err(ContentError::Malformed(error.to_string())),
    };
    Ok(items.into_iter().map(|item| record(item, now)).collect())
}

/// The top level of `content`, read without building more than
/// [`MAX_ITEMS`] values: the items past the limit are only counted.
enum Content {
    One(Value),
    Many(Vec<Value>),
    TooMany(usize),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Content, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a quote object or an array of quote objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Content::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            if items.len() == MAX_ITEMS {
                let mut count = MAX_ITEMS + 1;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    count += 1;
                }
                return Ok(Content::TooMany(count));
            }
            items.push(item);
        }
        Ok(Content::Many(items))
    }
}

/// One item as a raw record; the item itself is kept as the record's body.
fn record(item: Value, now: DateTime<Utc>) -> Result<RawRecord, ItemError> {
    let Value::Object(fields) = &item else {
        return Err(ItemError::new("item", "expected an object"));
    };
    let symbol = match field(fields, "symbol") {
        None => return Err(ItemError::new("symbol", "missing")),
        Some(Value::String(symbol)) => symbol.clone(),
        Some(_) => return Err(ItemError::new("symbol", "expected a string")),
    };
    let price = match field(fields, "price") {
        None => return Err(ItemError::new("price", "missing")),
        Some(price) => price.as_f64().ok_or(ItemError::new("price", "expected a number"))?,
    };
    let ts = match field(fields, "timestamp") {
        None => now,
        Some(Value::String(text)) => DateTime::parse_from_rfc3339(text)
            .map_err(|_| ItemError::new("timestamp", "not RFC 3339"))?
            .with_timezone(&Utc),
        Some(_) => return Err(ItemError::new("timestamp", "expected an RFC 3339 string")),
    };
    let source = match field(fields, "source") {
        None => DEFAULT_SOURCE.to_string(),
        Some(Value::String(source)) if is_source_id(source) => source.clone(),
        Some(Value::String(_)) => return Err(ItemError::new("source", "expected 1-32 of A-Z a-z 0-9 . _ -")),
        Some(_) => return Err(ItemError::new("source", "expected a string")),
    };
    let volume = match field(fields, "volume") {
        None => None,
        Some(volume) => Some(volume.as_f64().ok_or(ItemError::new("volume", "expected a number"))?),
    };
    Ok(RawRecord { source, symbol, price, ts, volume, body: item })
}

/// A field's value; `null` counts as absent.
fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|value| !value.is_null())
}

fn is_source_id(source: &str) -> bool {
    (1..=MAX_SOURCE_LEN).contains(&source.len())
        && source.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What happened to one item of a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemReport {
    pub index: usize,
    #[serde(flatten)]
    pub outcome: ItemOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ItemOutcome {
    Accepted {
        ingest_id: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
    },
    /// `reason` is a label (`invalid_item`, a validation label such as
    /// `invalid_price` or `duplicate`, or `publish_failed`); `detail` says
    /// what exactly was wrong.
    Rejected { reason: &'static str, detail: String },
}

/// The answer to one call, item by item in the content's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub items: Vec<ItemReport>,
}

/// The call's `status` when every item was accepted.
pub const OK: &str = "ok";
/// The call's `status` otherwise.
pub const REJECTED: &str = "rejected";
/// The `status` label of a call refused for its credentials.
pub const UNAUTHORIZED: &str = "unauthorized";

impl Report {
    pub fn accepted(&self) -> usize {
        self.items.iter().filter(|item| matches!(item.outcome, ItemOutcome::Accepted { .. })).count()
    }

    pub fn rejected(&self) -> usize {
        self.items.len() - self.accepted()
    }

    /// `ok` when every item was accepted, else `rejected`.
    pub fn status(&self) -> &'static str {
        if self.rejected() == 0 { OK } else { REJECTED }
    }

    /// Whether the broker failed to confirm an item: a fault of ours, not the caller's.
    pub fn publish_failed(&self) -> bool {
        self.items.iter().any(|item| matches!(item.outcome, ItemOutcome::Rejected { reason: PUBLISH_FAILED, .. }))
    }

    /// Counts and each rejected item:
    /// `accepted 2, rejected 1; item 1: invalid_price (price must be finite and greater than zero)`.
    pub fn message(&self) -> String {
        let mut message = format!("accepted {}, rejected {}", self.accepted(), self.rejected());
        for item in &self.items {
            if let ItemOutcome::Rejected { reason, detail } = &item.outcome {
                message.push_str(&format!("; item {}: {reason} ({detail})", item.index));
            }
        }
        message
    }
}

/// `{"status","message","accepted","rejected","items"}`, the REST answer.
impl Serialize for Report {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut body = serializer.serialize_struct("Report", 5)?;
        body.serialize_field("status", self.status())?;
        body.serialize_field("message", &self.message())?;
        body.serialize_field("accepted", &self.accepted())?;
        body.serialize_field("rejected", &self.rejected())?;
        body.serialize_field("items", &self.items)?;
        body.end()
    }
}

/// Which API a call came through (the `api` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Grpc,
    Rest,
}

impl Api {
    pub fn label(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Rest => "rest",
        }
    }
}

/// Runs ingest calls through the pipeline and counts them.
#[derive(Clone)]
pub struct Ingest {
    pipeline: Arc<Pipeline>,
    metrics: Metrics,
}

impl Ingest {
    pub fn new(pipeline: Arc<Pipeline>, metrics: Metrics) -> Ingest {
        Ingest { pipeline, metrics }
    }

    /// Parses `content` and pushes its quotes through the pipeline.
    pub async fn ingest(&self, api: Api, content: &[u8]) -> Result<Report, ContentError> {
        let result = match parse(content, Utc::now()) {
            Ok(items) => Ok(self.process(items).await),
            Err(error) => Err(error),
        };
        match &result {
            Ok(report) => {
                let status = if report.publish_failed() { "error" } else { report.status() };
                self.count_request(api, status);
                self.count_items(api, "accepted", report.accepted());
                self.count_items(api, "rejected", report.rejected());
            }
            Err(_) => self.count_request(api, REJECTED),
        }
        result
    }

    /// Counts a call refused before its content was read (REST: a wrong
    /// content type or an unreadable body).
    pub fn count_refused(&self, api: Api) {
        self.count_request(api, REJECTED);
    }

    /// Counts a call refused for its credentials (none, wrong, or not an
    /// admin's).
    pub fn count_unauthorized(&self, api: Api) {
        self.count_request(api, UNAUTHORIZED);
    }

    fn count_request(&self, api: Api, status: &str) {
        self.metrics.ingest_requests.with_label_values(&[api.label(), status]).inc();
    }

    fn count_items(&self, api: Api, outcome: &str, count: usize) {
        self.metrics.ingest_items.with_label_values(&[api.label(), outcome]).inc_by(count as u64);
    }

    /// Processes the items in a task of their own: a caller that hangs up
    /// must not leave records stored raw but never published nor marked.
    async fn process(&self, items: Items) -> Report {
        let task = tokio::spawn(process_all(self.pipeline.clone(), items));
        task.await.unwrap_or_else(|error| panic!("ingest task failed: {error}"))
    }
}

async fn process_all(pipeline: Arc<Pipeline>, items: Items) -> Report {
    let items = stream::iter(items.into_iter().enumerate())
        .map(|(index, item)| {
            let pipeline = pipeline.clone();
            async move { ItemReport { index, outcome: process_one(&pipeline, item).await } }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    Report { items }
}

async fn process_one(pipeline: &Pipeline, item: Result<RawRecord, ItemError>) -> ItemOutcome {
    let record = match item {
        Ok(record) => record,
        Err(error) => return ItemOutcome::Rejected { reason: INVALID_ITEM, detail: error.to_string() },
    };
    match pipeline.process(record).await {
        Ok(Outcome::Published { ingest_id, flags }) => ItemOutcome::Accepted { ingest_id, flags },
        Ok(Outcome::Rejected(reason)) => ItemOutcome::Rejected { reason: reason.label(), detail: reason.to_string() },
        Err(error) => ItemOutcome::Rejected { reason: PUBLISH_FAILED, detail: error.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2031-10-10T12:11:42.5Z".parse().expect("a valid time")
    }

    fn parse_one(content: &str) -> Result<RawRecord, ItemError> {
        let mut items = parse(content.as_bytes(), now()).expect("the content is accepted");
        assert_eq!(items.len(), 1, "{content}");
        items.remove(0)
    }

    fn item_error(content: &str) -> String {
        parse_one(content).expect_err("the item is rejected").to_string()
    }

    #[test]
    fn a_full_quote_becomes_a_raw_record_keeping_the_item_as_its_body() {
        let content = concat!(
            r#"{"symbol":"aapl","price":150.23,"timestamp":"2024-09-14T12:34:56.123+02:00","#,
            r#""source":"seed","volume":1200}"#
        );
        let record = parse_one(content).expect("a valid quote");
        let ts: DateTime<Utc> = "2024-09-14T10:34:56.123Z".parse().expect("a valid time");
        assert_eq!(
            record,
            RawRecord {
                source: "seed".to_string(),
                symbol: "aapl".to_string(),
                price: 150.23,
                ts,
                volume: Some(1200.0),
                body: serde_json::from_str(content).expect("JSON"),
            }
        );
    }

    #[test]
    fn optional_fields_default_to_manual_now_and_no_volume() {
        for content in [
            r#"{"symbol":"AAPL","price":1}"#,
            r#"{"symbol":"AAPL","price":1,"timestamp":null,"source":null,"volume":null}"#,
        ] {
            let record = parse_one(content).expect("a valid quote");
            assert_eq!((record.source.as_str(), record.ts, record.volume), (DEFAULT_SOURCE, now(), None), "{content}");
        }
    }

    #[test]
    fn each_malformed_field_is_named_with_its_problem() {
        let cases = [
            (r#"{}"#, "symbol: missing"),
            (r#"{"price":1}"#, "symbol: missing"),
            (r#"{"symbol":1,"price":1}"#, "symbol: expected a string"),
            (r#"{"symbol":"AAPL"}"#, "price: missing"),
            (r#"{"symbol":"AAPL","price":"abc"}"#, "price: expected a number"),
            (r#"{"symbol":"AAPL","price":"NaN"}"#, "price: expected a number"),
            (r#"{"symbol":"AAPL","price":"150.23"}"#, "price: expected a number"),
            (r#"{"symbol":"AAPL","price":1,"timestamp":"yesterday"}"#, "timestamp: not RFC 3339"),
            (r#"{"symbol":"AAPL","price":1,"timestamp":"2024-09-14 12:34"}"#, "timestamp: not RFC 3339"),
            (r#"{"symbol":"AAPL","price":1,"timestamp":1726317296}"#, "timestamp: expected an RFC 3339 string"),
            (r#"{"symbol":"AAPL","price":1,"source":7}"#, "source: expected a string"),
            (r#"{"symbol":"AAPL","price":1,"source":""}"#, "source: expected 1-32 of A-Z a-z 0-9 . _ -"),
            (r#"{"symbol":"AAPL","price":1,"source":"a b"}"#, "source: expected 1-32 of A-Z a-z 0-9 . _ -"),
            (r#"{"symbol":"AAPL","price":1,"volume":"many"}"#, "volume: expected a number"),
        ];
        for (content, expected) in cases {
            assert_eq!(item_error(content), expected, "{content}");
        }
        let long_source = json!({"symbol": "AAPL", "price": 1, "source": "s".repeat(33)}).to_string();
        assert!(item_error(&long_source).starts_with("source:"));
    }

    #[test]
    fn values_the_pipeline_judges_pass_the_parser() {
        // Validation is the pipeline's: these reach it and get its reasons.
        for content in [
            r#"{"symbol":"AA PL","price":1}"#,
            r#"{"symbol":"AAPL","price":-1}"#,
            r#"{"symbol":"AAPL","price":0}"#,
            r#"{"symbol":"AAPL","price":1,"volume":-5}"#,
            r#"{"symbol":"AAPL","price":1,"timestamp":"1999-01-01T00:00:00Z"}"#,
        ] {
            assert!(parse_one(content).is_ok(), "{content}");
        }
    }

    #[test]
    fn an_array_gives_one_result_per_item_in_order() {
        let content = r#"[{"symbol":"A","price":1},{"symbol":"B"},3,{"symbol":"C","price":3}]"#;
        let items = parse(content.as_bytes(), now()).expect("the content is accepted");
        let summary: Vec<Result<String, String>> =
            items.into_iter().map(|item| item.map(|r| r.symbol).map_err(|e| e.to_string())).collect();
        assert_eq!(
            summary,
            vec![
                Ok("A".to_string()),
                Err("price: missing".to_string()),
                Err("item: expected an object".to_string()),
                Ok("C".to_string()),
            ]
        );
    }

    #[test]
    fn content_that_is_no_quote_list_is_refused_whole() {
        let cases = [
            ("not json", "content: not JSON (expected ident at line 1 column 2)"),
            ("", "content: not JSON (EOF while parsing a value at line 1 column 0)"),
            (r#"[{"symbol":"A","price":1}"#, "content: not JSON (EOF while parsing a list at line 1 column 25)"),
            ("[]", "content: empty array, send at least one quote"),
            ("42", "content: expected a quote object or an array of quote objects"),
            (r#""AAPL""#, "content: expected a quote object or an array of quote objects"),
            ("null", "content: expected a quote object or an array of quote objects"),
        ];
        for (content, expected) in cases {
            let error = parse(content.as_bytes(), now()).expect_err("the content is refused");
            assert_eq!(error.to_string(), expected, "{content}");
        }
    }

    fn array_of(count: usize) -> String {
        let item = r#"{"symbol":"A","price":1}"#;
        format!("[{}]", vec![item; count].join(","))
    }

    #[test]
    fn at_most_ten_thousand_items_are_taken_and_the_excess_is_counted() {
        assert_eq!(parse(array_of(MAX_ITEMS).as_bytes(), now()).expect("the limit is accepted").len(), MAX_ITEMS);
        let error = parse(array_of(MAX_ITEMS + 1).as_bytes(), now()).expect_err("one more is refused");
        assert_eq!(error, ContentError::TooManyItems(MAX_ITEMS + 1));
        assert_eq!(error.to_string(), "content: 10001 items, at most 10000 are accepted per call");
        let error = parse(array_of(MAX_ITEMS + 250).as_bytes(), now()).expect_err("more is refused");
        assert_eq!(error, ContentError::TooManyItems(MAX_ITEMS + 250));
    }

    #[test]
    fn content_over_four_mebibytes_is_refused_before_parsing() {
        let mut content = array_of(1).into_bytes();
        content.resize(MAX_CONTENT_BYTES + 1, b' ');
        let error = parse(&content, now()).expect_err("too large");
        assert_eq!(error.to_string(), "content: 4194305 bytes, at most 4194304 (4 MiB) are accepted");
        content.truncate(MAX_CONTENT_BYTES);
        assert_eq!(parse(&content, now()).expect("the limit itself is accepted").len(), 1);
    }

    fn accepted(index: usize, id: &str) -> ItemReport {
        ItemReport { index, outcome: ItemOutcome::Accepted { ingest_id: id.to_string(), flags: Vec::new() } }
    }

    fn rejected(index: usize, reason: &'static str, detail: &str) -> ItemReport {
        ItemReport { index, outcome: ItemOutcome::Rejected { reason, detail: detail.to_string() } }
    }

    #[test]
    fn a_report_with_every_item_accepted_is_ok_with_its_counts() {
        let report = Report { items: vec![accepted(0, "a"), accepted(1, "b")] };
        assert_eq!((report.status(), report.message()), ("ok", "accepted 2, rejected 0".to_string()));
        assert!(!report.publish_failed());
    }

    #[test]
    fn a_report_with_a_rejected_item_names_its_index_and_reason() {
        let report = Report {
            items: vec![
                accepted(0, "a"),
                rejected(1, "invalid_price", "price must be finite and greater than zero"),
                rejected(2, INVALID_ITEM, "symbol: missing"),
            ],
        };
        assert_eq!(report.status(), "rejected");
        assert_eq!(
            report.message(),
            "accepted 1, rejected 2; item 1: invalid_price (price must be finite and greater than zero); \
             item 2: invalid_item (symbol: missing)"
        );
        assert!(!report.publish_failed());
        let failed = Report { items: vec![rejected(0, PUBLISH_FAILED, "broker down")] };
        assert!(failed.publish_failed());
    }

    #[test]
    fn the_rest_body_lists_each_item() {
        let mut flagged = accepted(0, "id-0");
        flagged.outcome = ItemOutcome::Accepted { ingest_id: "id-0".to_string(), flags: vec!["jump".to_string()] };
        const DUPLICATE: &str = "duplicate (same symbol, source and timestamp)";
        let report = Report { items: vec![flagged, rejected(1, "duplicate", DUPLICATE)] };
        assert_eq!(
            serde_json::to_value(&report).expect("serializes"),
            json!({
                "status": "rejected",
                "message": "accepted 1, rejected 1; item 1: duplicate (duplicate (same symbol, source and timestamp))",
                "accepted": 1,
                "rejected": 1,
                "items": [
                    {"index": 0, "status": "accepted", "ingest_id": "id-0", "flags": ["jump"]},
                    {"index": 1, "status": "rejected", "reason": "duplicate", "detail": DUPLICATE},
                ],
            })
        );
        let plain = Report { items: vec![accepted(0, "id-0")] };
        assert_eq!(
            serde_json::to_value(&plain).expect("serializes")["items"][0],
            json!({"index": 0, "status": "accepted", "ingest_id": "id-0"})
        );
    }

    #[test]
    fn quotes_without_a_timestamp_share_the_call_time() {
        let items = parse(br#"[{"symbol":"A","price":1},{"symbol":"B","price":2}]"#, now()).expect("accepted");
        let times: Vec<DateTime<Utc>> = items.into_iter().map(|item| item.expect("valid").ts).collect();
        assert_eq!(times, vec![now(), now()]);
    }
}
